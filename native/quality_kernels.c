/* The per-sample loops of the quality measures (pipeline/quality/measures.py and
 * true_peak.py): a recursive filter, which numpy cannot run, and screens that numpy runs as
 * six passes over the audio. Every prepared segment goes through them, so they are in C,
 * in a package of their own (native/pyproject.toml) that is installed like a dependency:
 * a cluster's nodes have it, and `ray job submit --working-dir` ships only Python.
 *
 * Audio is interleaved stereo float32 ([frames, 2], C order); sums are kept in double.
 * The hot loops are built twice, for AVX2 and for the x86-64 baseline, and the loader picks
 * the one the CPU runs (GCC's target_clones).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define HOT __attribute__((target_clones("avx2", "default")))
#else
#define HOT
#endif

/* ---- K-weighted frame energies and the channel sums --------------------------------- */

/* Frames are filtered LANES at a time: lane l runs through its own quarter of the stretch,
 * so the recursions of different lanes are independent and fill one vector register. */
#define LANES 4
typedef double lanes_t __attribute__((vector_size(LANES * sizeof(double))));

/* A biquad's taps, a0 = 1: y = b0 x + b1 x' + b2 x'' - a1 y' - a2 y''. */
typedef struct {
    double b0, b1, b2, a1, a2;
} Biquad;

/* The state of one biquad in transposed direct form II, per lane. */
typedef struct {
    lanes_t s1, s2;
} State;

/* Filters `x` in place (vectors pass by pointer: by value they would change the ABI
 * between the two builds). */
static inline void biquad(const Biquad *f, State *s, lanes_t *x) {
    lanes_t y = f->b0 * *x + s->s1;
    s->s1 = f->b1 * *x - f->a1 * y + s->s2;
    s->s2 = f->b2 * *x - f->a2 * y;
    *x = y;
}

typedef struct {
    Biquad shelf, high_pass;
    State left[2], right[2]; /* [shelf, high-pass] */
} KWeighting;

/* K-weights a step of both channels in place. */
static inline void k_weight(KWeighting *k, lanes_t *left, lanes_t *right) {
    biquad(&k->shelf, &k->left[0], left);
    biquad(&k->high_pass, &k->left[1], left);
    biquad(&k->shelf, &k->right[0], right);
    biquad(&k->high_pass, &k->right[1], right);
}

/* Running totals of a stretch, per lane. */
typedef struct {
    lanes_t sum_left, sum_right, energy_left, energy_right, cross;
} Totals;

/* Each lane starts its quarter from rest `warmup` samples early (lane 0, at the stretch's
 * start, from rest as the standard's filter does), so its state has forgotten the start by
 * the time its first frame is summed: the high-pass's slowest pole (radius 0.995) leaves
 * e^-24 of it after 4800 samples. A lane with no frame left reads `silence`. */
HOT static void frame_loop(const float *audio, Py_ssize_t whole, Py_ssize_t frame,
                           Py_ssize_t warmup, const Biquad *filters, const float *silence,
                           double *k_energy, double *energy, Totals *totals) {
    const Py_ssize_t quarter = (whole + LANES - 1) / LANES;
    KWeighting k = {.shelf = filters[0], .high_pass = filters[1]};
    Totals t = {0};
    for (Py_ssize_t at = -warmup; at < 0; at++) {
        lanes_t left = {0}, right = {0};
        for (int l = 1; l < LANES && l * quarter < whole; l++) {
            Py_ssize_t sample = l * quarter * frame + at;
            left[l] = audio[2 * sample];
            right[l] = audio[2 * sample + 1];
        }
        k_weight(&k, &left, &right);
    }
    for (Py_ssize_t step = 0; step < quarter; step++) {
        const float *base[LANES];
        for (int l = 0; l < LANES; l++) {
            Py_ssize_t index = l * quarter + step;
            base[l] = index < whole ? audio + 2 * index * frame : silence;
        }
        /* This frame's sums; the stretch's totals take them at its end. */
        lanes_t k_sum = {0}, left_sum = {0}, right_sum = {0}, left_energy = {0},
                right_energy = {0}, cross = {0};
        for (Py_ssize_t i = 0; i < frame; i++) {
            lanes_t left, right;
            for (int l = 0; l < LANES; l++) {
                left[l] = base[l][2 * i];
                right[l] = base[l][2 * i + 1];
            }
            left_sum += left;
            right_sum += right;
            left_energy += left * left;
            right_energy += right * right;
            cross += left * right;
            k_weight(&k, &left, &right);
            k_sum += left * left + right * right;
        }
        t.sum_left += left_sum;
        t.sum_right += right_sum;
        t.energy_left += left_energy;
        t.energy_right += right_energy;
        t.cross += cross;
        for (int l = 0; l < LANES; l++) {
            Py_ssize_t index = l * quarter + step;
            if (index < whole) {
                k_energy[index] = k_sum[l];
                energy[index] = left_energy[l] + right_energy[l];
            }
        }
    }
    *totals = t;
}

/* ---- True peak ---------------------------------------------------------------------- */

/* The 4x interpolator's three between-sample branches: 12 taps each over x_{n-5}..x_{n+6}
 * give the points 1/4, 2/4 and 3/4 of the way from x_n to x_{n+1}. */
static inline uint32_t magnitude_bits(float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    return bits & 0x7fffffffu;
}

static inline float from_bits(uint32_t bits) {
    float x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

#define TAPS 12
#define BEFORE 5
#define BLOCK 64

/* The largest |value| of the three branches over every point whose window lies inside the
 * stretch, or `at_least` if none is larger. A block of BLOCK points is interpolated only if
 * its bound reaches the running maximum: `linear_gain` times its largest |x_n| (with the
 * x_{n+1} of its last point) plus `curvature_gain` times the largest |second difference|
 * its points' windows read (centred on n-4 .. n+5); see true_peak.py. */
HOT static double true_peak_loop(const float *audio, Py_ssize_t frames, const float *branches,
                                 double linear_gain, double curvature_gain, double at_least) {
    double best = at_least;
    const Py_ssize_t last = frames - TAPS + BEFORE; /* The last point's n. */
    for (Py_ssize_t first = BEFORE; first <= last; first += BLOCK) {
        Py_ssize_t end = first + BLOCK <= last + 1 ? first + BLOCK : last + 1;
        /* The maxima of magnitudes as the bits of non-negative floats, which order as
         * unsigned integers do: a reduction the compiler vectorizes (a float one it will not,
         * for NaN's sake). Interleaved values: one channel's neighbours are 2 apart. */
        uint32_t high_bits = 0, bend_bits = 0;
        for (Py_ssize_t i = 2 * first; i < 2 * (end + 1); i++) {
            uint32_t bits = magnitude_bits(audio[i]);
            high_bits = bits > high_bits ? bits : high_bits;
        }
        for (Py_ssize_t i = 2 * (first - 4); i < 2 * (end + 5); i++) {
            uint32_t bits = magnitude_bits(audio[i + 2] - 2.0f * audio[i] + audio[i - 2]);
            bend_bits = bits > bend_bits ? bits : bend_bits;
        }
        float high = from_bits(high_bits), bend = from_bits(bend_bits);
        if (linear_gain * high + curvature_gain * bend < best) {
            continue;
        }
        /* One channel at a time, copied out contiguous, so that the points vectorize. */
        const Py_ssize_t points = end - first;
        for (int channel = 0; channel < 2; channel++) {
            float samples[BLOCK + TAPS - 1];
            for (Py_ssize_t i = 0; i < points + TAPS - 1; i++) {
                samples[i] = audio[2 * (first - BEFORE + i) + channel];
            }
            uint32_t top_bits = 0;
            for (int p = 0; p < 3; p++) {
                for (Py_ssize_t n = 0; n < points; n++) {
                    float point = 0.0f;
                    for (int j = 0; j < TAPS; j++) {
                        point += branches[3 * j + p] * samples[n + j];
                    }
                    uint32_t bits = magnitude_bits(point);
                    top_bits = bits > top_bits ? bits : top_bits;
                }
            }
            double top = from_bits(top_bits);
            best = top > best ? top : best;
        }
    }
    return best;
}

/* ---- Python bindings ---------------------------------------------------------------- */

static int check_size(Py_buffer *buffer, Py_ssize_t items, Py_ssize_t item_size,
                      const char *name) {
    if (buffer->len != items * item_size) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd bytes, got %zd", name,
                     items * item_size, buffer->len);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(frame_energies_doc,
"frame_energies(audio, frames, frame, warmup, filters, k_energy, energy)\n"
"\n"
"Of `frames` frames of interleaved stereo float32 `audio`: the K-weighted energy (L + R)\n"
"and the energy of each of its whole frames of `frame` samples into the float64 buffers\n"
"`k_energy` and `energy`, through the biquads `filters` (float64, [2, 5]: b0 b1 b2 a1 a2 of\n"
"the shelf, then of the high-pass). Returns the channel sums of all `frames`, the partial\n"
"last frame's too: (sum L, sum R, sum L^2, sum R^2, sum L*R).");

static PyObject *frame_energies(PyObject *Py_UNUSED(module), PyObject *args) {
    Py_buffer audio, filters, k_energy, energy;
    Py_ssize_t frames, frame, warmup;
    if (!PyArg_ParseTuple(args, "y*nnny*w*w*", &audio, &frames, &frame, &warmup, &filters,
                          &k_energy, &energy)) {
        return NULL;
    }
    PyObject *result = NULL;
    float *silence = NULL;
    Py_ssize_t whole = frame > 0 ? frames / frame : 0;
    if (frame <= 0 || warmup < 0 || warmup > frame) {
        PyErr_SetString(PyExc_ValueError, "frame must be positive and warmup within it");
        goto done;
    }
    if (check_size(&audio, 2 * frames, sizeof(float), "audio") ||
        check_size(&filters, 10, sizeof(double), "filters") ||
        check_size(&k_energy, whole, sizeof(double), "k_energy") ||
        check_size(&energy, whole, sizeof(double), "energy")) {
        goto done;
    }
    silence = PyMem_Calloc(2 * frame, sizeof(float));
    if (silence == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Totals t = {0};
    Py_BEGIN_ALLOW_THREADS
    frame_loop(audio.buf, whole, frame, warmup, filters.buf, silence, k_energy.buf,
               energy.buf, &t);
    Py_END_ALLOW_THREADS
    double sums[5] = {0};
    for (int l = 0; l < LANES; l++) {
        sums[0] += t.sum_left[l];
        sums[1] += t.sum_right[l];
        sums[2] += t.energy_left[l];
        sums[3] += t.energy_right[l];
        sums[4] += t.cross[l];
    }
    /* The partial last frame, which no lane filters, still counts in the sums. */
    const float *x = (const float *)audio.buf;
    for (Py_ssize_t i = 2 * whole * frame; i < 2 * frames; i += 2) {
        sums[0] += x[i];
        sums[1] += x[i + 1];
        sums[2] += (double)x[i] * x[i];
        sums[3] += (double)x[i + 1] * x[i + 1];
        sums[4] += (double)x[i] * x[i + 1];
    }
    result = Py_BuildValue("(ddddd)", sums[0], sums[1], sums[2], sums[3], sums[4]);
done:
    PyMem_Free(silence);
    PyBuffer_Release(&audio);
    PyBuffer_Release(&filters);
    PyBuffer_Release(&k_energy);
    PyBuffer_Release(&energy);
    return result;
}

PyDoc_STRVAR(true_peak_doc,
"true_peak(audio, frames, branches, linear_gain, curvature_gain, at_least)\n"
"\n"
"The largest |value| of the 4x interpolator's between-sample points of `frames` frames of\n"
"interleaved stereo float32 `audio` (`branches`: float32 [12, 3]), or `at_least` if none is\n"
"larger; points whose window would leave the stretch are skipped.");

static PyObject *true_peak(PyObject *Py_UNUSED(module), PyObject *args) {
    Py_buffer audio, branches;
    Py_ssize_t frames;
    double linear_gain, curvature_gain, at_least, peak = 0.0;
    if (!PyArg_ParseTuple(args, "y*ny*ddd", &audio, &frames, &branches, &linear_gain,
                          &curvature_gain, &at_least)) {
        return NULL;
    }
    PyObject *result = NULL;
    if (check_size(&audio, 2 * frames, sizeof(float), "audio") ||
        check_size(&branches, 3 * TAPS, sizeof(float), "branches")) {
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    peak = true_peak_loop(audio.buf, frames, branches.buf, linear_gain, curvature_gain, at_least);
    Py_END_ALLOW_THREADS
    result = PyFloat_FromDouble(peak);
done:
    PyBuffer_Release(&audio);
    PyBuffer_Release(&branches);
    return result;
}

static PyMethodDef methods[] = {
    {"frame_energies", frame_energies, METH_VARARGS, frame_energies_doc},
    {"true_peak", true_peak, METH_VARARGS, true_peak_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "quality_kernels",
    .m_doc = "The per-sample loops of the quality measures.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit_quality_kernels(void) { return PyModule_Create(&module); }

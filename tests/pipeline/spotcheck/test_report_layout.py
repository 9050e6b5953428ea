"""The spot-check report's layout in Chromium: four codecs' spectrograms fit a narrow window.

A segment's row holds the original and one picture per codec (340 px each); with four
codecs that is wider than a laptop's window, so the row must wrap onto more lines rather
than overflow (or scroll inside itself, which hides the codecs on the right).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.spotcheck.report import render_report
from tests.pipeline.helpers import launch_chromium, png_pixels

CODECS = {"mucodec": 1.5, "encodec": 3.0, "dac": 6.0, "snac": 0.98}
KEYS = ("a_00000", "b_00001")
WIDTHS = (1300, 800)
# One worker runs all of this module's tests: the browser starts once, not once per worker.
pytestmark = pytest.mark.xdist_group("spotcheck_report_layout")

# Per width: the document's and the window's width, each row's scroll and client width,
# the right edge of every cell, and [src, complete, naturalWidth] of every image.
_MEASURE = """() => ({
  page: [document.documentElement.scrollWidth, window.innerWidth],
  rows: [...document.querySelectorAll('.row')].map(r => [r.scrollWidth, r.clientWidth]),
  cells: [...document.querySelectorAll('.cell')].map(c => c.getBoundingClientRect().right),
  images: [...document.images].map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]),
})"""


def _spectrogram(path: Path, seed: int) -> None:
    """A 340x120 stand-in picture: a smooth random gradient, so the page is not blank."""
    import matplotlib.image

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, 340)[None, :, None] * rng.uniform(0.2, 1, (120, 1, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    matplotlib.image.imsave(path, ramp)


def _report(root: Path) -> Path:
    """A report of two segments decoded by four codecs, with its sample pictures."""
    records = []
    for index, key in enumerate(KEYS):
        _spectrogram(root / "samples" / key / "original.png", index)
        for codec, rate in CODECS.items():
            _spectrogram(root / "samples" / key / codec / "spectrogram.png", index)
            records.append({"key": key, "codec": codec, "bitrate_kbps": rate,
                            "song_id": key[0], "segment_index": index, "start_s": 0.0,
                            "duration_s": 1.0, "n_frames": 25, "mel_distance": rate / 10,
                            "stft_distance": 1.0, "si_sdr_db": -rate, "loudness_diff_lu": 0.1,
                            "decoder_steps": 0, "guidance_scale": 0.0})  # fmt: skip
    page = root / "report.html"
    page.write_text(render_report(records, {"run": "layout test"}, {}))
    return page


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> dict[int, dict[str, Any]]:
    """The report measured at each of `WIDTHS`, in one browser."""
    from playwright.sync_api import sync_playwright

    page_path = _report(tmp_path_factory.mktemp("report"))
    measured = {}
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        for width in WIDTHS:
            errors: list[str] = []
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.on("console", lambda m, e=errors: e.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda x, e=errors: e.append(str(x)))
            page.on("requestfailed", lambda r, e=errors: e.append(f"failed: {r.url}"))
            page.goto(page_path.as_uri())
            page.wait_for_load_state("load")
            measured[width] = {**page.evaluate(_MEASURE), "errors": errors,
                               "shot": page.screenshot(full_page=True)}  # fmt: skip
            page.close()
        browser.close()
    return measured


@pytest.mark.parametrize("width", WIDTHS)
def test_segment_rows_wrap_inside_the_window(layouts, width):
    layout = layouts[width]
    assert layout["errors"] == []
    scroll_width, window_width = layout["page"]
    assert scroll_width <= window_width, "the page scrolls sideways"
    assert len(layout["rows"]) == len(KEYS)
    for row_scroll, row_client in layout["rows"]:
        assert row_scroll <= row_client, "a row of spectrograms overflows its box"
    assert len(layout["cells"]) == len(KEYS) * (1 + len(CODECS))
    assert all(right <= window_width for right in layout["cells"]), layout["cells"]


@pytest.mark.parametrize("width", WIDTHS)
def test_every_spectrogram_loads_at_its_size(layouts, width):
    images = layouts[width]["images"]
    spectrograms = [i for i in images if i[0].startswith("samples/")]
    assert len(spectrograms) == len(KEYS) * (1 + len(CODECS))
    assert all(complete and natural == 340 for _, complete, natural in spectrograms), images
    assert png_pixels(layouts[width]["shot"]).std() > 10  # Not a blank page.

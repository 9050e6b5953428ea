"""Builders and readers shared by the pipeline tests: generated songs, shard inspection.

Everything here is plain code over local files so that the tests can use it with or without
Ray. Audio is always generated (`testing.synth`), never committed.
"""

from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import fsspec
import numpy as np
import pytest
import soundfile as sf
import soxr

from pipeline.claims import Fence, claim_output
from pipeline.io import StorageOptions, filesystem
from pipeline.prepare.records import SongSource
from pipeline.prepare.segment import SegmentConfig
from pipeline.prepare.shards import ShardLimits
from pipeline.prepare.unit import PrepareConfig, Unit, UnitResult, prepare_unit
from testing.synth import synth_song, write_audio

if TYPE_CHECKING:
    from pipeline.tokenize.parts import Part, PartAssembler

TARGET_RATE = 48_000
TEST_RUN_FILE = "_tests/run.json"  # The tests' claim on an output that no stage claimed.


def write_song(
    path: str,
    seconds: float = 2.5,
    rate: int = 48_000,
    channels: int = 2,
    subtype: str | None = "PCM_16",
    seed: int = 0,
    peak: float = 0.7,
) -> np.ndarray:
    """Write a synthetic song and return the float32 audio `[frames, channels]` written.

    For lossless containers the returned audio is what a reader gets back (quantised to the
    file's bit depth), so it is the exact reference for the pipeline's output.
    """
    audio = synth_song(seconds, rate, channels, seed, peak)
    write_audio(path, audio, rate, subtype)
    if path.rsplit(".", 1)[-1] in ("wav", "flac", "aiff", "w64"):
        return sf.read(path, dtype="float32", always_2d=True)[0]
    return audio


def reference_48k(audio: np.ndarray, rate: int) -> np.ndarray:
    """A one-shot high-quality resample of `audio` to 48 kHz, the fidelity reference."""
    if rate == TARGET_RATE:
        return audio.astype(np.float32)
    return soxr.resample(audio.astype(np.float32), rate, TARGET_RATE, quality="HQ")


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-noise ratio of `test` against `reference`, in dB."""
    noise = np.sum((reference.astype(np.float64) - test) ** 2)
    return float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / max(noise, 1e-30)))


def small_config(
    scratch: str,
    segment_seconds: float = 1.0,
    tail_policy: str = "keep",
    min_tail_seconds: float = 0.25,
    **kwargs,
) -> PrepareConfig:
    """A PrepareConfig with short segments so generated songs stay a few seconds long."""
    return PrepareConfig(
        segment=SegmentConfig(segment_seconds, tail_policy, min_tail_seconds),
        scratch_dir=scratch,
        **kwargs,
    )


def limits(max_samples: int = 100_000, max_bytes: int = 1_000_000_000) -> ShardLimits:
    return ShardLimits(max_samples=max_samples, max_bytes=max_bytes)


def claimed(output: str) -> Fence:
    """The fence of the tests' claim on `output` (the same claim each time: a resume).

    A unit or part writes only into an output its run has claimed; a test that runs one
    outside its stage claims the output this way first.
    """
    fs, root = filesystem(output, StorageOptions())
    return claim_output(fs, root, TEST_RUN_FILE, {"claimed by": "tests"}, (), False, str)


def part_assembler(root: str, parts: list[Part], row_group_size: int = 64) -> PartAssembler:
    """Tokenize's part writer for `parts` into `root`, fenced by the tests' claim."""
    from pipeline.tokenize.parts import PartAssembler  # Loads torch: not for every test.

    fs = fsspec.filesystem("file")
    return PartAssembler(fs, root, parts, row_group_size, claimed(root).guard(fs))


def run_unit(
    songs: list[SongSource], output: str, config: PrepareConfig, index: int = 0
) -> UnitResult:
    """Prepare one unit of `songs` with the plain function (no Ray, no child process)."""
    return prepare_unit(Unit(index, tuple(songs)), config, output, claimed(output))


def tar_members(path: str) -> list[tuple[str, bytes]]:
    """The (name, data) members of a tar file, in archive order."""
    with tarfile.open(path) as archive:
        return [(m.name, archive.extractfile(m).read()) for m in archive.getmembers()]


@dataclass
class ShardSample:
    key: str
    flac: bytes
    meta: dict
    txt: str

    def audio(self) -> np.ndarray:
        """The sample's audio as float32 `[frames, 2]`."""
        return sf.read(io.BytesIO(self.flac), dtype="float32", always_2d=True)[0]

    def info(self) -> sf._SoundFileInfo:
        return sf.info(io.BytesIO(self.flac))


def read_samples(shard_paths: list[str]) -> list[ShardSample]:
    """Every sample of the shards, in order; asserts one sample's members are adjacent."""
    samples: list[ShardSample] = []
    for path in shard_paths:
        members = tar_members(path)
        assert len(members) % 3 == 0, f"{path}: {len(members)} members"
        for i in range(0, len(members), 3):
            group = members[i : i + 3]
            keys = {name.split(".", 1)[0] for name, _ in group}
            assert len(keys) == 1, f"{path}: members of one sample not adjacent: {group}"
            by_ext = {name.split(".", 1)[1]: data for name, data in group}
            assert set(by_ext) == {"flac", "json", "txt"}
            samples.append(
                ShardSample(
                    key=keys.pop(),
                    flac=by_ext["flac"],
                    meta=json.loads(by_ext["json"]),
                    txt=by_ext["txt"].decode("utf-8"),
                )
            )
    return samples


def shard_files(output: str) -> list[str]:
    return sorted(glob.glob(os.path.join(output, "shards", "*.tar")))


def song_audio(samples: list[ShardSample], song_id: str) -> np.ndarray:
    """A song's segments concatenated in order (real audio only, padding removed)."""
    parts = sorted((s for s in samples if s.meta["song_id"] == song_id), key=lambda s: s.key)
    audio = [s.audio()[: round(s.meta["duration_s"] * TARGET_RATE)] for s in parts]
    return np.concatenate(audio) if audio else np.zeros((0, 2), np.float32)


@contextlib.contextmanager
def mounted_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of `size` at `path`: a second filesystem, or a small disk that fills up.

    Mounting needs root, as the suite runs in CI; anywhere else the test fails saying so
    rather than passing without having checked anything.
    """
    path.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                           capture_output=True, text=True, check=False)  # fmt: skip
    if mount.returncode != 0:
        pytest.fail(f"this test mounts a tmpfs, which needs root: {mount.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def launch_chromium(playwright):
    """Debian's Chromium, headless, under Playwright, kept off the network."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is installed by scripts/install.sh dev"
    return playwright.chromium.launch(
        executable_path=chromium,
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--no-first-run"],
    )  # fmt: skip


def open_in_chromium(page_path: Path, screenshot_path: Path, viewport_width: int = 1100):
    """Console errors, `[src, complete, naturalWidth]` of every image, and audio sources.

    The screenshot is of the full page: wider than `viewport_width` if the page scrolls
    sideways.
    """
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": viewport_width, "height": 1400})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("requestfailed", lambda r: errors.append(f"failed: {r.url}"))
        page.goto(page_path.as_uri())
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all(
            "img", "els => els.map(e => [e.getAttribute('src'), e.complete, e.naturalWidth])"
        )
        audios = page.eval_on_selector_all("audio", "els => els.map(e => e.getAttribute('src'))")
        screenshot = page.screenshot(full_page=True)
        browser.close()
    picture = np.asarray(png_pixels(screenshot))
    assert picture.std() > 10  # Not a blank page: spectrograms and text are drawn.
    screenshot_path.write_bytes(screenshot)
    return errors, images, audios


def png_pixels(data: bytes) -> np.ndarray:
    """A PNG's pixels, 0..255."""
    import matplotlib.image

    return matplotlib.image.imread(io.BytesIO(data), format="png") * 255

"""Fixtures for the pipeline tests: scratch space, a loopback S3 server, a shared corpus.

The session's local Ray is `ray_local` in tests/conftest.py (shared with tests/jobs).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from audio_codecs.base import CodecSpec
from pipeline.prepare.segment import SegmentConfig
from pipeline.prepare.stage import prepare_corpus
from pipeline.prepare.unit import PrepareConfig
from pipeline.tokenize.stage import TokenizeConfig, TokenizeSummary, tokenize_shards
from testing.synth import synth_song, write_audio
from tests.conftest import TEST_AWS_ENV


@pytest.fixture
def scratch(tmp_path) -> str:
    """Local scratch directory for spools and shards in progress."""
    path = tmp_path / "scratch"
    path.mkdir()
    return str(path)


@pytest.fixture(scope="session")
def s3_endpoint(ray_local) -> str:
    """A real S3 API (moto's server mode) on a free loopback port; returns its URL.

    Depends on `ray_local` so the dummy AWS credentials are in the environment before Ray
    starts its workers.
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    assert all(os.environ.get(k) == v for k, v in TEST_AWS_ENV.items())
    yield f"http://{host}:{port}"
    server.stop()


# --- One prepared and tokenized corpus, shared by the tokenize, spot-check and audit tests ---

# 2 s segments, tails of 0.5 s or more kept: a few seconds of audio give a dozen segments.
SHORT_SEGMENTS = SegmentConfig(segment_seconds=2.0, tail_policy="keep", min_tail_seconds=0.5)
TINY_MUCODEC = CodecSpec("mucodec", preset="tiny")


def make_corpus(root: Path, songs: int = 3) -> None:
    """Short songs: one float source that clips (gain < 1), one loud, one with LRC lyrics."""
    specs = [(5.3, 44_100, 2, 1.3), (4.1, 48_000, 1, 0.95), (6.7, 32_000, 2, 0.5)]
    for index in range(songs):
        seconds, rate, channels, peak = specs[index % len(specs)]
        path = root / f"song{index:02d}.wav"
        write_audio(str(path), synth_song(seconds, rate, channels, index, peak), rate, "FLOAT")
    (root / "song00.lrc").write_text("[00:00.50]first\n[00:02.50]second\n[00:04.10]third\n")


@pytest.fixture(scope="session")
def prepared_corpus(tmp_path_factory, ray_local) -> str:
    """`make_corpus` prepared into 3 shards, one song each. Read it; never change it."""
    root = tmp_path_factory.mktemp("shared-corpus")
    make_corpus(root / "corpus")
    output = str(root / "prepared")
    config = PrepareConfig(segment=SHORT_SEGMENTS, songs_per_unit=1)
    summary = prepare_corpus(str(root / "corpus"), output, config)
    assert summary.units_failed == 0 and summary.shards == 3
    return output


@pytest.fixture(scope="session")
def tokenized_corpus(prepared_corpus, tmp_path_factory) -> tuple[Path, TokenizeSummary]:
    """`prepared_corpus` tokenized by tiny MuCodec in 2 parts: its folder and summary."""
    root = tmp_path_factory.mktemp("shared-tokens")
    config = TokenizeConfig(codecs=(TINY_MUCODEC,), batch_size=4, shards_per_part=2)
    summaries = tokenize_shards(prepared_corpus, str(root), config)
    assert list(summaries) == ["mucodec"]
    return root / "mucodec", summaries["mucodec"]

"""The tokenize stage end to end on real Ray, with the tiny tokenizer and generated audio."""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch

from audio_codecs.base import CodecSpec, EncodedSegment
from audio_codecs.registry import load_codec
from mucodec.encoder.config import preset
from mucodec.encoder.tokenizer import MuCodecTokenizer
from pipeline.io import StorageOptions
from pipeline.prepare.stage import prepare_corpus
from pipeline.prepare.unit import PrepareConfig
from pipeline.shard_reader import ShardRef, find_shards, iter_shard_samples
from pipeline.tokenize.dataset import TokenDataset
from pipeline.tokenize.encoded import encoded_segment
from pipeline.tokenize.stage import (
    PoolShape,
    TokenizeConfig,
    actor_pool_shape,
    reading_tasks,
    tokenize_shards,
)
from schemas.tokens import validate_tokens_table
from tests.pipeline.conftest import SHORT_SEGMENTS, TINY_MUCODEC, make_corpus


def shard_samples(prepared: str) -> dict[str, dict]:
    """Every sample in the prepared shards: key -> {audio, metadata}."""
    samples = {}
    for shard in find_shards(prepared, StorageOptions()):
        for key, members in iter_shard_samples(shard.url, StorageOptions()):
            audio, _ = sf.read(io.BytesIO(members["flac"]), dtype="float32", always_2d=True)
            assert key not in samples
            samples[key] = {"audio": audio.T.copy(), "meta": json.loads(members["json"])}
    return samples


def token_rows(output: Path) -> list[dict]:
    rows = []
    for path in sorted((output / "tokens").glob("*.parquet")):
        table = pq.read_table(path)
        validate_tokens_table(table)
        rows.extend(table.to_pylist())
    return rows


def test_every_segment_appears_exactly_once_with_the_tokenizers_codes(
    prepared_corpus, tokenized_corpus
):
    output, summary = tokenized_corpus
    samples = shard_samples(prepared_corpus)
    rows = token_rows(output)
    assert Counter(r["key"] for r in rows) == Counter(samples.keys())
    assert summary.segments == len(samples) and summary.parts == 2 and summary.rejects == 0

    tokenizer = MuCodecTokenizer.from_config(preset("tiny"), seed=0)
    for row in rows:
        sample = samples[row["key"]]
        meta = sample["meta"]
        expected = tokenizer.encode_segments(
            [torch.from_numpy(sample["audio"]) / float(meta["gain"])],  # The shard's gain undone.
            song_peaks=[meta["song_peak"]],
        )[0]
        codes = np.array(row["codes"], dtype=np.int64)
        assert codes.shape == (row["n_codebooks"], row["n_frames"]) == tuple(expected.shape)
        np.testing.assert_array_equal(codes, expected.numpy(), err_msg=row["key"])
        assert row["song_id"] == meta["song_id"] and row["start_s"] == meta["start_s"]
        assert row["checkpoint_sha256"] == "random-weights-seed-0"
        assert row["token_rate"] == 25.0 and row["encoder_layer"] == 2
        assert (row["tokenizer"], row["codec_preset"], row["codec_mode"]) == (
            "mucodec", "tiny", "encode",
        )  # fmt: skip
        assert (row["sample_rate"], row["channels"], row["scales"], row["chunk_frames"]) == (
            48_000, 1, [], [],
        )  # fmt: skip
        assert np.isnan(row["input_db"]) and row["bitrate_kbps"] > 0
    assert any(samples[r["key"]]["meta"]["gain"] < 1 for r in rows)


def test_lyrics_and_statistics_travel_with_the_tokens(tokenized_corpus):
    output, summary = tokenized_corpus
    rows = {r["key"]: r for r in token_rows(output)}
    first = next(r for k, r in rows.items() if k.startswith("song00") and k.endswith("_00000"))
    assert first["lyrics_aligned"] and [line["text"] for line in first["lyrics"]] == ["first"]
    stats = json.loads((output / "codebook_stats.json").read_text())
    assert stats["codebooks"][0]["tokens"] == sum(r["n_frames"] for r in rows.values())
    assert summary.tokens == stats["codebooks"][0]["tokens"]
    assert (output / "codebook_stats.png").read_bytes().startswith(b"\x89PNG")


def test_split_artist_and_measures_travel_with_the_tokens(prepared_corpus, tokenized_corpus):
    output, _ = tokenized_corpus
    samples = shard_samples(prepared_corpus)
    for row in token_rows(output):
        meta = samples[row["key"]]["meta"]
        assert row["split"] == meta["split"] and row["artist"] == meta["artist"]
        assert row["quality"] == meta["quality"]
        assert row["song_quality"] == meta["song_quality"]
        assert row["quality"]["bandwidth_hz"] > 0


def test_rerun_on_a_finished_output_does_nothing(prepared_corpus, tokenized_corpus):
    output, _ = tokenized_corpus
    before = {p: p.stat().st_mtime_ns for p in (output / "tokens").glob("*.parquet")}
    config = TokenizeConfig(codecs=(TINY_MUCODEC,), batch_size=4, shards_per_part=2)
    summary = tokenize_shards(prepared_corpus, str(output.parent), config)["mucodec"]
    assert summary.parts_run == 0 and summary.parts_already_done == 2
    assert {p: p.stat().st_mtime_ns for p in (output / "tokens").glob("*.parquet")} == before


def test_tables_read_with_duckdb_hf_datasets_and_the_torch_dataset(tokenized_corpus):
    output, _ = tokenized_corpus
    rows = token_rows(output)
    pattern = str(output / "tokens" / "*.parquet")

    import duckdb

    counts = duckdb.sql(
        f"SELECT song_id, count(*) FROM read_parquet('{pattern}') GROUP BY song_id"
    ).fetchall()
    assert dict(counts) == Counter(r["song_id"] for r in rows)
    ((first_codebook,),) = duckdb.sql(
        f"SELECT codes[1] FROM read_parquet('{pattern}') WHERE key = '{rows[0]['key']}'"
    ).fetchall()
    assert first_codebook == rows[0]["codes"][0]

    from datasets import load_dataset

    hf = load_dataset("parquet", data_files=pattern, split="train")
    assert sorted(hf["key"]) == sorted(r["key"] for r in rows)
    by_key = {r["key"]: r for r in rows}
    hf_row = hf.with_format("numpy")[0]
    np.testing.assert_array_equal(hf_row["codes"], np.array(by_key[hf_row["key"]]["codes"]))

    loader = torch.utils.data.DataLoader(TokenDataset(str(output)), batch_size=None, num_workers=2)
    seen = Counter()
    for codes, lyrics in loader:
        assert codes.dtype == torch.int64 and codes.ndim == 2
        seen[(tuple(codes.flatten().tolist()), lyrics["text"])] += 1
    expected = Counter((tuple(np.array(r["codes"]).flatten()), r["lyrics_text"]) for r in rows)
    assert seen == expected


def test_a_corrupt_sample_is_rejected_and_the_rest_tokenized(prepared_corpus, tmp_path, ray_local):
    shards = find_shards(prepared_corpus, StorageOptions())
    broken_dir = tmp_path / "broken"
    broken_dir.mkdir()
    victim = None
    with (
        tarfile.open(shards[0].url) as source,
        tarfile.open(broken_dir / shards[0].name, "w", format=tarfile.USTAR_FORMAT) as out,
    ):
        for info in source:
            data = source.extractfile(info).read()
            if victim is None and info.name.endswith(".flac"):
                victim = info.name.split(".")[0]
                data = b"fLaC" + b"\x00" * (len(data) - 4)
            out.addfile(info, io.BytesIO(data))
    config = TokenizeConfig(codecs=(TINY_MUCODEC,), batch_size=4)
    summary = tokenize_shards(str(broken_dir), str(tmp_path / "out"), config)["mucodec"]
    rejects = pq.read_table(tmp_path / "out" / "mucodec" / "rejects.parquet").to_pylist()
    assert [r["path"] for r in rejects] == [f"{shards[0].name}#{victim}"]
    assert rejects[0]["stage"] == "tokenize" and victim in rejects[0]["reason"]
    keys = {r["key"] for r in token_rows(tmp_path / "out" / "mucodec")}
    assert victim not in keys and len(keys) == summary.segments > 0


def test_s3_in_and_out_through_a_loopback_s3_server(prepared_corpus, s3_endpoint):
    import s3fs

    storage = StorageOptions(endpoint_url=s3_endpoint)
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint)
    fs.mkdir("tokenize-bucket")
    fs.put(prepared_corpus, "tokenize-bucket/prepared", recursive=True)
    config = TokenizeConfig(codecs=(TINY_MUCODEC,), batch_size=4, storage=storage)
    summary = tokenize_shards(
        "s3://tokenize-bucket/prepared", "s3://tokenize-bucket/tokens", config
    )["mucodec"]
    parts = fs.glob("tokenize-bucket/tokens/mucodec/tokens/*.parquet")
    keys = []
    for part in parts:
        with fs.open(part, "rb") as handle:
            table = pq.read_table(handle)
        validate_tokens_table(table)
        keys.extend(table.column("key").to_pylist())
    assert sorted(keys) == sorted(shard_samples(prepared_corpus)) and summary.segments == len(keys)
    assert fs.exists("tokenize-bucket/tokens/mucodec/summary.json")


def test_three_codecs_resume_after_the_job_is_killed_midway(tmp_path, ray_local):
    """Three codecs in one pass, SIGKILLed once parts exist: a rerun finishes every codec's
    table, each segment once per codec with that codec's own codes, and leaves the parts
    finished before untouched. (A rerun on a one-CPU Ray: tests/pipeline/test_node_loss.py.)"""
    songs = 3  # One part each.
    make_corpus(tmp_path / "corpus", songs=songs)
    prepared = str(tmp_path / "prepared")
    config = PrepareConfig(segment=SHORT_SEGMENTS, songs_per_unit=1)
    prepare_corpus(str(tmp_path / "corpus"), prepared, config)
    root = tmp_path / "tokens"
    codecs = ("mucodec", "dac", "encodec")
    command = [
        sys.executable, "-m", "jobs.tokenize", "--shards", prepared, "--output", str(root),
        "--codec", ",".join(codecs), "--config", "tiny", "--shards-per-part", "1",
        "--batch-size", "1", "--num-cpus", "2",
    ]  # fmt: skip
    job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)  # fmt: skip
    markers = {codec: root / codec / "_tokenize" / "parts" for codec in codecs}
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(markers["mucodec"].glob("*.json"))) < 1:
        assert job.poll() is None, "the job finished before it could be interrupted"
        time.sleep(0.2)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    finished_before = {
        codec: {p.name: p.stat().st_mtime_ns for p in folder.glob("*.json")}
        for codec, folder in markers.items()
    }
    assert 0 < len(finished_before["mucodec"]) < songs

    specs = tuple(CodecSpec(codec, preset="tiny") for codec in codecs)
    config = TokenizeConfig(codecs=specs, batch_size=4, shards_per_part=1)
    summaries = tokenize_shards(prepared, str(root), config)
    samples = shard_samples(prepared)
    for codec in codecs:
        summary = summaries[codec]
        assert summary.parts == songs and summary.parts_already_done >= len(finished_before[codec])
        for name, mtime in finished_before[codec].items():
            assert (markers[codec] / name).stat().st_mtime_ns == mtime, (codec, name)
        leftovers = [p for p in (root / codec / "tokens").iterdir() if ".partial" in p.name]
        assert leftovers == [] or all(not p.name.endswith(".parquet") for p in leftovers)
        _assert_each_segment_once_with_the_codecs_codes(codec, token_rows(root / codec), samples)


def _assert_each_segment_once_with_the_codecs_codes(
    name: str, rows: list[dict], samples: dict[str, dict]
) -> None:
    assert Counter(r["key"] for r in rows) == Counter(samples.keys()), name
    codec = load_codec(CodecSpec(name, preset="tiny"), torch.device("cpu"))
    for row in rows:
        sample = samples[row["key"]]
        # The actors see the shard's PCM16: the same audio, quantised as the reader does.
        pcm = torch.from_numpy((sample["audio"] * 32768.0).round().clip(-32768, 32767) / 32768.0)
        (expected,) = codec.encode(
            [pcm.float()], song_peaks=[sample["meta"]["song_peak"]],
            gains=[sample["meta"]["gain"]],
        )  # fmt: skip
        got: EncodedSegment = encoded_segment(row)
        assert row["tokenizer"] == name and row["channels"] == codec.info.channels
        np.testing.assert_array_equal(got.codes, expected.codes, err_msg=f"{name} {row['key']}")
        # Scales are float sums: a batch may round them 1 ulp apart (README: rtol 1e-6).
        np.testing.assert_allclose(got.scales, expected.scales, rtol=1e-6)


def test_audit_passes_a_clean_run_and_catches_duplicates_and_losses(
    prepared_corpus, tokenized_corpus, tmp_path
):
    from pipeline.audit import audit_codec, audit_run

    output, _ = tokenized_corpus
    run = audit_run(prepared_corpus, str(output.parent), StorageOptions())
    assert run.ok and list(run.codecs) == ["mucodec"]
    clean = run.codecs["mucodec"]
    assert clean.ok and clean.shard_samples == clean.token_rows > 0

    copy = tmp_path / "copy"
    shutil.copytree(output, copy)
    parts = sorted((copy / "tokens").glob("*.parquet"))
    shutil.copy(parts[0], copy / "tokens" / "part-999999.parquet")  # A part written twice.
    parts[1].unlink()  # A part lost.
    broken = audit_codec(prepared_corpus, str(copy), StorageOptions())
    lost = set(pq.read_table(output / "tokens" / parts[1].name).column("key").to_pylist())
    assert not broken.ok
    assert set(broken.duplicated) == set(pq.read_table(parts[0]).column("key").to_pylist())
    assert set(broken.missing) == lost and broken.unexpected == []


@pytest.mark.integration
def test_audit_job_exits_with_the_same_status_every_time(prepared_corpus, tokenized_corpus):
    # The job used to print its report and then abort (exit 134) in about one run of five:
    # Arrow released read-ahead buffers during interpreter shutdown.
    output, _ = tokenized_corpus
    command = [sys.executable, "-m", "jobs.audit", "--shards", prepared_corpus, "--tokens",
               str(output.parent)]  # fmt: skip
    # Ten runs side by side: the abort came at shutdown, whatever else ran beside.
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(10)]  # fmt: skip
    outputs = [run.communicate(timeout=180) for run in runs]
    assert all('"ok": true' in stdout for stdout, _ in outputs)
    assert [run.returncode for run in runs] == [0] * 10, [err[-500:] for _, err in outputs]


def test_reading_tasks_take_runs_of_small_shards_but_keep_every_reader_busy():
    mib = 1 << 20
    small = [ShardRef(f"{i}.tar", f"/s/{i}.tar", 20 * mib) for i in range(200)]
    assert reading_tasks(small, cpus=2) == math.ceil(200 * 20 / 64)  # ~64 MiB per task.
    big = [ShardRef(f"{i}.tar", f"/s/{i}.tar", 900 * mib) for i in range(3)]
    assert reading_tasks(big, cpus=16) == 3  # A shard is never split.
    few = [ShardRef(f"{i}.tar", f"/s/{i}.tar", mib) for i in range(10)]
    assert reading_tasks(few, cpus=4) == 8  # Two per CPU, though the bytes fit in one.


def test_the_actor_pool_always_leaves_cpu_for_the_readers():
    config = TokenizeConfig(codecs=(TINY_MUCODEC,))
    assert actor_pool_shape(config, gpus=0, cpus=8) == PoolShape(3, 2, 2)
    # A device's actors hold half a CPU each and take two batches at a time (one staged while
    # the device encodes the other); the readers, one per CPU, share what is left.
    assert actor_pool_shape(config, gpus=2, cpus=8) == PoolShape(
        2, 0.5, 1, reader_cpus=1.0, calls_per_actor=2
    )
    simulated = actor_pool_shape(config, gpus=0, cpus=2, simulated=True)
    assert simulated == PoolShape(1, 0.5, 1, reader_cpus=0.75, calls_per_actor=2, fixed_size=True)
    # Three codecs on one GPU: each pool's actor gets a third of it, a sixth per call.
    assert actor_pool_shape(config, gpus=1, cpus=16, pools=3).memory_share == pytest.approx(1 / 6)
    # One CPU left (a laptop, or a cluster that lost a node): actor and readers share it.
    assert actor_pool_shape(config, gpus=0, cpus=1) == PoolShape(1, 0.5, 1, reader_cpus=0.5)
    with pytest.raises(ValueError, match="lower --actors"):
        actor_pool_shape(TokenizeConfig(codecs=(TINY_MUCODEC,), actors=2), gpus=0, cpus=2)

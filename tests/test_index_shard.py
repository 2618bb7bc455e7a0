"""Sharded gallery embedding: `siamcli index GALLERY --shard I/N` then `siamcli index --merge PART...`.

The promise tested here: N partials merged give the index one process would have built —
the same ids, bit-identical vectors, the same items.sqlite and items.csv, the same answers —
and every way of getting the partials wrong is refused with one line.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, write_identity_folders
from test_index_cli import index_json, invoke, one_line_error
from test_index_engine import copy_run

from siamcli.errors import UserError
from siamcli.index.shard import parse_shard, shard_range

BATCH = "4"  # small batches: 31 gallery files make 8 batches, so 3 shards get 2–3 batches each


def test_shard_ranges_are_whole_batches_that_tile_the_gallery():
    for count in (1, 7, 30, 31, 1000):
        for batch in (1, 4, 32):
            for shards in (1, 2, 3, 5, 40):
                ranges = [shard_range(count, batch, i, shards) for i in range(1, shards + 1)]
                assert ranges[0][0] == 0 and ranges[-1][1] == count
                for (_, stop), (start, _) in zip(ranges, ranges[1:]):
                    assert stop == start  # contiguous, no overlap, no gap
                for start, stop in ranges:
                    assert start % batch == 0 and (stop % batch == 0 or stop == count)
                sizes = [stop - start for start, stop in ranges]
                assert max(sizes) - min(sizes) <= batch  # as even as whole batches allow


def test_shard_argument_is_one_based_i_of_n():
    assert parse_shard("1/4") == (1, 4) and parse_shard(" 4 / 4 ") == (4, 4)
    for bad in ("0/4", "5/4", "1/0", "a/b", "1-4", "", "-1/4"):
        with pytest.raises(UserError, match="--shard"):
            parse_shard(bad)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, tiny_run):
    """A gallery with one undecodable image, indexed once whole and once as 3 shards merged."""
    base = tmp_path_factory.mktemp("sharded")
    run, data = copy_run(tiny_run, base)
    (data / "id_2" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    single = index_json(data, "--model", run, "--out", base / "single", "--batch-size", BATCH)
    parts = []
    for i in (1, 2, 3):
        part = base / f"part{i}"
        if i == 2:  # one shard through a real subprocess, as on another machine
            completed = run_cli("index", str(data), "--model", str(run), "--shard", "2/3", "--out", str(part),
                                "--batch-size", BATCH, "--json")
            assert completed.returncode == 0, completed.stderr
            summary = json.loads(completed.stdout)
        else:
            summary = index_json(data, "--model", run, "--shard", f"{i}/3", "--out", part, "--batch-size", BATCH)
        assert summary["mode"] == "shard" and summary["shard"] == f"{i}/3" and summary["gallery_count"] == 31
        parts.append((part, summary))
    merged = index_json("--merge", *[p for p, _ in reversed(parts)], "--model", run, "--out", base / "merged")
    return run, data, base, single, parts, merged


def test_merged_partials_equal_a_single_build(sharded):
    run, data, base, single, parts, merged = sharded
    single_dir, merged_dir = base / "single", base / "merged"
    ranges = [summary["range"] for _, summary in parts]
    assert ranges[0][0] == 0 and ranges[-1][1] == 31 and all(r[1] > r[0] for r in ranges)
    assert sum(summary["count"] for _, summary in parts) == 30  # the broken image is in no partial…
    assert [s["path"] for _, summary in parts for s in summary["skipped"] if "broken" in s["path"]]  # …and is reported

    assert merged["mode"] == "merge" and merged["count"] == single["count"] == 30
    assert merged["factory"] == single["factory"] == "Flat"
    assert [s["path"] for s in merged["skipped"]] == [s["path"] for s in single["skipped"]]
    # Same ids, paths, labels and hashes, byte for byte; the same vectors, bit for bit.
    for name in ("items.sqlite", "items.csv", "index.faiss"):
        assert (merged_dir / name).read_bytes() == (single_dir / name).read_bytes(), name
    single_vectors = np.load(single_dir / "embeddings.npy")
    merged_vectors = np.load(merged_dir / "embeddings.npy")
    assert single_vectors.shape == (30, 16) and np.array_equal(merged_vectors, single_vectors)
    manifest, reference = (json.loads((d / "manifest.json").read_text()) for d in (merged_dir, single_dir))
    for key in ("model_fingerprint", "embedding_dim", "image_size", "count", "next_id", "gallery", "factory", "recall_at_10"):
        assert manifest[key] == reference[key], key

    # The merged index answers queries like the single one.
    query = data / "id_4" / "img_1.png"
    answers = [index_json_query(query, d) for d in (merged_dir, single_dir)]
    assert answers[0] == answers[1] and answers[0][0][0] == str(query)


def index_json_query(image: Path, index_dir: Path) -> list:
    result = invoke("query", image, "--index", index_dir, "--k", "5", "--json")
    assert result.exit_code == 0, result.stderr
    hits = json.loads(result.stdout)[0]["results"]
    return [(hit["path"], hit["id"], round(hit["similarity"], 6)) for hit in hits]


def test_a_partial_is_not_searchable_and_says_to_merge(sharded):
    _, data, base, *_ = sharded
    one_line_error(invoke("query", data / "id_0" / "img_0.png", "--index", base / "part1"), "partial index", "--merge")


def test_merge_refuses_missing_duplicated_or_foreign_partials(sharded, tmp_path):
    run, data, base, *_ = sharded
    part1, part2, part3 = (base / f"part{i}" for i in (1, 2, 3))
    out = tmp_path / "out"
    one_line_error(invoke("index", "--merge", part1, part3, "--model", run, "--out", out), "shard 2/3 missing")
    one_line_error(invoke("index", "--merge", part1, part2, part2, part3, "--model", run, "--out", out), "shard 2/3 is given twice")
    one_line_error(invoke("index", "--merge", part1, base / "single", part3, "--model", run, "--out", out), "whole index")
    one_line_error(invoke("index", "--merge", "--model", run, "--out", out), "--merge needs")
    one_line_error(invoke("index", "--merge", part1, part2, part3, "--model", run, "--out", base / "single"), "already holds an index", "--force")

    # A gallery that changed between shard runs: that shard's listing differs.
    changed = tmp_path / "changed"
    shutil.copytree(data, changed)
    write_identity_folders(changed / "extra", identities=1, per_identity=2, size=40)
    moved = invoke("index", changed, "--model", run, "--shard", "2/3", "--out", tmp_path / "p2", "--batch-size", BATCH)
    assert moved.exit_code == 0, moved.stderr
    one_line_error(invoke("index", "--merge", part1, tmp_path / "p2", part3, "--model", run, "--out", out), "different listing")
    other_batch = invoke("index", data, "--model", run, "--shard", "2/3", "--out", tmp_path / "b2", "--batch-size", "8")
    assert other_batch.exit_code == 0, other_batch.stderr
    one_line_error(invoke("index", "--merge", part1, tmp_path / "b2", part3, "--model", run, "--out", out), "--batch-size")
    assert not out.exists()  # nothing written by any refused merge

    # A partial damaged after it was written.
    damaged = Path(shutil.copytree(part3, tmp_path / "damaged"))
    with open(damaged / "embeddings.npy", "r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\0\0\0\0")
    one_line_error(invoke("index", "--merge", part1, part2, damaged, "--model", run, "--out", out), "checksum")


def test_shard_and_merge_option_errors(sharded, tmp_path):
    run, data, base, *_ = sharded
    one_line_error(invoke("index", data, "--model", run, "--shard", "4/3", "--out", tmp_path / "p"), "--shard")
    one_line_error(invoke("index", data, "--model", run, "--shard", "1/3", "--append", "--out", tmp_path / "p"), "--append")
    one_line_error(invoke("index", data, "--model", run, "--shard", "1/3", "--out", base / "part1"), "already holds an index", "--force")
    one_line_error(invoke("index", data, "--model", run, "--shard", "1/3", "--index-type", "hnsw", "--out", tmp_path / "p"), "--merge")
    one_line_error(invoke("index", "--merge", base / "part1", "--shard", "1/3", "--model", run), "separate commands")
    one_line_error(invoke("index", "--merge", base / "part1", "--append", "--model", run), "--append")
    one_line_error(invoke("index", data, data, "--model", run), "pass --merge")
    one_line_error(invoke("index", "--model", run), "give one gallery folder")


def test_shard_defaults_to_a_partial_beside_the_run(tmp_path, tiny_run):
    run, data = copy_run(tiny_run, tmp_path)
    summary = index_json(data, "--model", run, "--shard", "2/2")
    assert summary["index_dir"] == str(run / "index.part-2-of-2")
    assert summary["range"] == [0, 30] and summary["count"] == 30  # 30 images = one batch of 32: all in the last shard
    merged = invoke("index", "--merge", run / "index.part-2-of-2", "--model", run)
    one_line_error(merged, "shard 1/2 missing")

"""`siamcli index` through the CLI: outputs, refusing to overwrite, --append, --prune, --force,
the threshold, flat galleries, and a build killed with SIGKILL in a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from conftest import REPO, write_identity_folders, write_test_calibration
from PIL import Image
from test_index_engine import build, copy_run
from typer.testing import CliRunner

runner = CliRunner()


def _app():
    from siamcli.cli.app import app

    return app


def invoke(*args: str):
    return runner.invoke(_app(), [str(a) for a in args])


def index_json(*args: str) -> dict:
    result = invoke("index", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def items(index_dir: Path) -> dict[str, int]:
    """path → id of every live row (all segments, tombstones applied)."""
    from siamcli.index.store import load_index

    return {item.path: item.id for item in load_index(index_dir).items}


def one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_index_writes_json_summary_and_refuses_to_replace_an_existing_index(tmp_path, tiny_run):
    run, data = copy_run(tiny_run, tmp_path)
    summary = index_json(data, "--model", run)
    assert summary["count"] == 30 and summary["added"] == 30 and summary["mode"] == "build" and summary["written"]
    assert summary["index_type"] == "flat" and summary["factory"] == "Flat" and summary["recall_at_10"] == 1.0
    assert summary["index_dir"] == str(run / "index") and summary["skipped"] == [] and summary["threshold"] is None
    assert summary["images_per_second"] is None  # 30 images: too few for a speed figure (test_index_messages)
    before = {p.name: p.read_bytes() for p in (run / "index").iterdir()}
    one_line_error(invoke("index", data, "--model", run), "already holds an index", "--append", "--prune", "--force")
    one_line_error(invoke("index", data, "--model", run, "--force", "--append"), "--force")
    one_line_error(invoke("index", data, "--model", run, "--index-type", "annoy", "--force"), "--index-type")
    assert {p.name: p.read_bytes() for p in (run / "index").iterdir()} == before
    # The human summary: a table on stdout.
    result = invoke("index", data, "--model", run, "--force")
    assert result.exit_code == 0, result.stderr
    assert "images in the index" in result.stdout and "30" in result.stdout and "Flat" in result.stdout


def test_append_is_idempotent_adds_only_new_images_and_keeps_ids(tmp_path, tiny_run):
    run, data = copy_run(tiny_run, tmp_path)
    build(run, data)
    index_dir = run / "index"
    ids = items(index_dir)
    files = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in index_dir.iterdir()}

    unchanged = index_json(data, "--model", run, "--append")
    assert (unchanged["added"], unchanged["removed"], unchanged["kept"], unchanged["written"]) == (0, 0, 30, False)
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in index_dir.iterdir()} == files

    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(data / "id_0" / "new.png")
    grown = index_json(data, "--model", run, "--append")
    assert (grown["added"], grown["replaced"], grown["count"], grown["kept"]) == (1, 0, 31, 30)
    after = items(index_dir)
    assert {p: after[p] for p in ids} == ids  # every existing id kept
    assert after[str(data / "id_0" / "new.png")] == 30
    again = index_json(data, "--model", run, "--append")
    assert again["added"] == 0 and again["count"] == 31 and not again["written"]

    # Same path, new content: the stale row is replaced under a new id; the others stay.
    changed = data / "id_1" / "img_0.png"
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(changed)
    refreshed = index_json(data, "--model", run, "--append")
    assert (refreshed["added"], refreshed["replaced"], refreshed["count"]) == (0, 1, 31)
    final = items(index_dir)
    assert final[str(changed)] == 31
    assert {p: i for p, i in final.items() if p != str(changed)} == {p: i for p, i in after.items() if p != str(changed)}
    from siamcli.index.store import load_index

    loaded = load_index(index_dir, full=True)
    assert loaded.count == 31 and loaded.manifest["next_id"] == 32
    # Updates wrote segments beside the base, never rewrote it: one new row each, the replaced row a tombstone.
    assert [segment.rows for segment in loaded.segments] == [30, 1, 1] and loaded.index.ntotal == 30
    assert [segment.deleted.tolist() for segment in loaded.segments] == [[ids[str(changed)]], [], []]
    assert not (index_dir / "items.csv").exists()  # the full build's export would be stale: removed
    exported = invoke("index", "--export-items", "--model", run)
    assert exported.exit_code == 0, exported.stderr
    lines = (index_dir / "items.csv").read_text().splitlines()
    assert lines[0] == "id,path,label" and {line.split(",")[1]: int(line.split(",")[0]) for line in lines[1:]} == final


def test_prune_drops_entries_whose_files_are_gone_and_ids_are_never_reused(tmp_path, tiny_run):
    run, data = copy_run(tiny_run, tmp_path)
    build(run, data)
    index_dir = run / "index"
    ids = items(index_dir)
    gone = [data / "id_2" / "img_3.png", data / "id_5" / "img_0.png"]
    saved = gone[0].read_bytes()
    for path in gone:
        path.unlink()
    pruned = index_json(data, "--model", run, "--prune")
    assert (pruned["removed"], pruned["count"], pruned["added"]) == (2, 28, 0)
    left = items(index_dir)
    assert left == {p: i for p, i in ids.items() if p not in {str(g) for g in gone}}
    gone[0].write_bytes(saved)  # back again: a new entry, with a new id
    back = index_json(data, "--model", run, "--append", "--prune")
    assert back["added"] == 1 and back["count"] == 29
    assert items(index_dir)[str(gone[0])] == 30

    from siamcli.index.search import search_vectors
    from siamcli.index.store import load_index

    loaded = load_index(index_dir)
    vectors = loaded.vectors([ref for ref, _ in loaded.entries])
    top = search_vectors(loaded, vectors, 1)
    assert [answer[0].id for answer in top] == [item.id for item in loaded.items]  # each row finds itself


def test_the_summary_shows_the_run_calibration_which_the_manifest_never_copies(tmp_path, tiny_run):
    run, data = copy_run(tiny_run, tmp_path)
    write_test_calibration(run, 0.3)
    summary = index_json(data, "--model", run)
    assert summary["threshold"] == 0.3
    manifest = json.loads((run / "index" / "manifest.json").read_text())
    assert not any(key.startswith("threshold") for key in manifest)  # one source: <run>/calibration.json
    write_test_calibration(run, 0.3, reliable=False)
    assert index_json(data, "--model", run, "--force")["threshold"] is None


def test_flat_unlabelled_gallery_gets_empty_labels_and_skipped_files_are_named(tmp_path, tiny_run):
    run, _ = copy_run(tiny_run, tmp_path, with_data=False)
    gallery = tmp_path / "flat"
    gallery.mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(gallery / f"photo_{i}.jpg")
    (gallery / "readme.txt").write_text("not an image")
    (gallery / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = invoke("index", gallery, "--model", run, "--out", tmp_path / "idx", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["count"] == 4
    assert {Path(s["path"]).name for s in summary["skipped"]} == {"readme.txt", "broken.png"}
    assert "readme.txt" in result.stderr and "broken.png" in result.stderr
    lines = (tmp_path / "idx" / "items.csv").read_text().splitlines()
    assert all(line.endswith(",") for line in lines[1:])  # label column is empty


def test_index_errors_are_one_line(tmp_path, tiny_run):
    run, data = copy_run(tiny_run, tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(invoke("index", empty, "--model", run), "no images")
    one_line_error(invoke("index", tmp_path / "nope", "--model", run), "does not exist")
    one_line_error(invoke("index", data, "--model", tmp_path / "no_run"), "not found")
    one_line_error(invoke("index", data, "--model", run, "--batch-size", "0"), "--batch-size")
    (tmp_path / "file").write_text("x")
    one_line_error(invoke("index", data, "--model", run, "--out", tmp_path / "file"), "is a file")
    one_line_error(invoke("index", "--compact", "--model", run), "no index at")
    one_line_error(invoke("index", "--export-items", "--out", tmp_path / "nope"), "no index at")
    one_line_error(invoke("index", data, "--compact", "--model", run), "give no GALLERY_DIR")


def test_append_with_another_model_is_refused(tmp_path, tiny_run):
    from conftest import build_untrained_run

    run, data = copy_run(tiny_run, tmp_path)
    build(run, data)
    other = build_untrained_run(tmp_path / "other", data, val=[], train=[], seed=1)
    result = invoke("index", data, "--model", other, "--out", run / "index", "--append")
    one_line_error(result, "not the model", "--force")


def test_defaults_use_runs_latest_and_write_its_index(tmp_path, tiny_run, monkeypatch):
    run, data = copy_run(tiny_run, tmp_path / "runs")
    (tmp_path / "runs" / "latest").symlink_to("run")
    monkeypatch.chdir(tmp_path)
    summary = index_json(data, "--index-type", "hnsw")
    assert Path(summary["index_dir"]).resolve() == (run / "index").resolve()
    assert summary["index_type"] == "hnsw" and summary["recall_at_10"] >= 0.95 and "efSearch" in summary["search_params"]
    # An update keeps the type the user chose.
    (data / "id_0" / "img_0.png").rename(data / "id_0" / "moved.png")
    update = index_json(data, "--append", "--prune")
    assert update["index_type"] == "hnsw" and update["added"] == 1 and update["removed"] == 1


def test_build_killed_with_sigkill_leaves_the_previous_index_loadable(tmp_path, tiny_run):
    from siamcli.index.store import load_index

    run, data = copy_run(tiny_run, tmp_path)
    build(run, data)
    index_dir = run / "index"
    manifest_before = (index_dir / "manifest.json").read_text()
    big = write_identity_folders(tmp_path / "big", identities=10, per_identity=40, size=40, seed=2)
    process = subprocess.Popen(
        [sys.executable, "-m", "siamcli", "index", str(big), "--model", str(run), "--force", "--batch-size", "2"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ},
    )
    partial = None
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and process.poll() is None:
            # Embedding has started once vectors stream into the temporary build folder.
            for candidate in run.glob(".index.*.tmp/embeddings.npy"):
                if candidate.stat().st_size > 1024:
                    partial = candidate
            if partial:
                break
            time.sleep(0.01)
        assert partial is not None, f"the build never started embedding: {process.stderr.read().decode()[-2000:] if process.poll() is not None else ''}"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    loaded = load_index(index_dir, full=True)
    assert loaded.count == 30 and (index_dir / "manifest.json").read_text() == manifest_before
    # The next build notices the leftover, and works.
    result = invoke("index", data, "--model", run, "--append", "--json")
    assert result.exit_code == 0 and "interrupted builds" in result.stderr

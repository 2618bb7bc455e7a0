"""An index update killed (SIGKILL) between any two of its steps leaves a consistent index.

siamcli.faults.crash_point lets the real `siamcli index` process kill itself at a named
point: after the new segment's vectors are written, after the segment is published, after
the tombstones are written, after the manifest is swapped. Before the manifest swap the index
must read exactly as it was; after it, exactly as updated; and the next update must finish
the job and leave no file that no manifest names.
"""

import json
import os
import shutil

import numpy as np
from conftest import run_cli
from PIL import Image
from test_index_engine import build, copy_run


def _live(index_dir) -> dict[str, int]:
    from siamcli.index.search import search_vectors
    from siamcli.index.store import load_index

    loaded = load_index(index_dir)
    ids = {item.path: item.id for item in loaded.items}
    assert len(ids) == loaded.count  # every path once
    vectors = loaded.vectors([ref for ref, _ in loaded.entries])
    assert [answer[0].id for answer in search_vectors(loaded, vectors, 1)] == [item.id for item in loaded.items]
    return ids


def _killed(index_dir, run, data, point: str, *flags: str):
    completed = run_cli("index", str(data), "--model", str(run), *flags, env={"SIAMCLI_CRASH_AT": point})
    assert completed.returncode == -9, (point, completed.returncode, completed.stderr[-2000:])


def test_an_update_killed_at_any_step_leaves_the_old_or_the_new_index_and_the_next_one_finishes(tmp_path, tiny_run):
    run, data = copy_run(tiny_run, tmp_path)
    build(run, data)
    index_dir = run / "index"
    before = _live(index_dir)
    added = data / "id_0" / "added.png"
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(added)

    # Killed while the new segment is being written, then after it is published: not yet part of the index.
    _killed(index_dir, run, data, "index-segment-embedded", "--append")
    assert _live(index_dir) == before and list((index_dir / "segments").glob(".*.tmp"))
    _killed(index_dir, run, data, "index-segment-written", "--append")
    assert _live(index_dir) == before and (index_dir / "segments" / "000001").is_dir()

    # A prune killed after its tombstones are written: not yet committed either.
    gone = data / "id_3" / "img_2.png"
    gone.unlink()
    _killed(index_dir, run, data, "index-tombstones-written", "--prune")
    assert _live(index_dir) == before
    # Killed right after the manifest swap: committed, only the tidying is left.
    _killed(index_dir, run, data, "index-manifest-written", "--prune")
    pruned = _live(index_dir)
    assert pruned == {path: i for path, i in before.items() if path != str(gone)}

    # The next update finishes the job: the image once, with the next id, and nothing stray left behind.
    finished = run_cli("index", str(data), "--model", str(run), "--append", "--prune", "--json")
    assert finished.returncode == 0, finished.stderr[-2000:]
    summary = json.loads(finished.stdout)
    assert (summary["added"], summary["removed"], summary["count"]) == (1, 0, 30)
    assert _live(index_dir) == {**pruned, str(added): 30}
    manifest = json.loads((index_dir / "manifest.json").read_text())
    named = {segment["name"] for segment in manifest["segments"]} | {manifest["deleted"]["file"]} | set(manifest["retired"])
    stray = {p.relative_to(index_dir).as_posix() for p in [*index_dir.glob("deleted-*"), *(index_dir / "segments").iterdir()]}
    assert stray == named == {"segments/000001", manifest["deleted"]["file"]}


def test_a_killed_rewrite_leaves_the_previous_index(tmp_path, tiny_run):
    run, data = copy_run(tiny_run, tmp_path)
    build(run, data)
    index_dir = run / "index"
    before = _live(index_dir)
    for path in sorted((data / "id_1").iterdir())[:3]:
        path.unlink()
    shutil.rmtree(data / "id_2")  # 8 of 30 rows gone: more than 25 %, so --prune rewrites the index
    env = {"SIAMCLI_CRASH_AT": "index-rewrite-written"}
    killed = run_cli("index", str(data), "--model", str(run), "--prune", env=env)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert _live(index_dir) == before
    assert [p for p in os.listdir(run) if p.startswith(".index.")]  # the unfinished copy, beside the index
    finished = run_cli("index", str(data), "--model", str(run), "--prune", "--json")
    assert finished.returncode == 0 and json.loads(finished.stdout)["segments"] == 1
    assert set(_live(index_dir)) == {p for p in before if os.path.exists(p)}

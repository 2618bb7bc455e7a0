"""manifest.json has one typed record (IndexManifest, SegmentRecord), one reader and one writer:
what a build and an update write reads back key for key, in order; an index written without the
keys a later release added still loads and updates, and keys this version does not know survive."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from test_index_engine import build, copy_run

from siamcli.index import manifest as mf
from siamcli.index.store import load_index


def _raw(index_dir: Path) -> dict:
    return json.loads((index_dir / mf.MANIFEST).read_text())


def test_a_build_and_an_update_write_the_documented_keys_and_read_back_key_for_key(tiny_run, tmp_path):
    run, data = copy_run(tiny_run, tmp_path)
    index_dir = build(run, data).index_dir
    written = _raw(index_dir)
    assert list(written) == list(mf.INDEX_KEYS)  # every key docs/index.md lists, in this order, no other
    assert written["segments"] == [] and written["deleted"] is None and written["generation"] == 1
    record = mf.read_manifest(index_dir)
    assert record.to_json() == written and list(record.to_json()) == list(written)
    assert record.base.name == "" and record.base.number == 0 and record.base.rows == written["rows"] == 30

    person = sorted(p for p in data.iterdir() if p.is_dir())[0]
    shutil.copy(next(person.iterdir()), person / "again.png")  # one new image: a later segment
    build(run, data, append=True)
    updated = _raw(index_dir)
    assert updated["generation"] == 2 and updated["count"] == 31 and len(updated["segments"]) == 1
    segment = updated["segments"][0]
    assert list(segment) == ["name", "number", *mf.SEGMENT_KEYS] and segment["name"] == "segments/000001"
    assert mf.read_manifest(index_dir).to_json() == updated


def test_an_index_without_the_later_keys_loads_and_updates_and_unknown_keys_are_kept(tiny_run, tmp_path):
    run, data = copy_run(tiny_run, tmp_path)
    index_dir = build(run, data).index_dir
    older = _raw(index_dir)
    for key in ("chosen_by", "recall_sample", "recall_count", "generation", "next_segment", "retired", "galleries",
                "faiss_version"):
        del older[key]
    older["written_by_another_tool"] = {"note": "kept"}
    (index_dir / mf.MANIFEST).write_text(json.dumps(older))

    loaded = load_index(index_dir)
    assert loaded.count == 30 and loaded.record.generation is None and loaded.manifest == older  # nothing invented
    person = sorted(p for p in data.iterdir() if p.is_dir())[0]
    shutil.copy(next(person.iterdir()), person / "again.png")
    build(run, data, append=True)
    updated = _raw(index_dir)
    assert updated["written_by_another_tool"] == {"note": "kept"}
    assert updated["generation"] == 2 and updated["next_segment"] == 2 and updated["galleries"] == [str(data)]
    assert "chosen_by" not in updated  # the base's record is as it was read
    assert load_index(index_dir).count == 31

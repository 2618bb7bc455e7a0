"""Segments, tombstones and compaction: updates that cost what changed, answers as if rebuilt."""

import json
import os

import numpy as np
from PIL import Image
from test_index_engine import build, copy_run


def _photo(path, value: int) -> None:
    Image.fromarray(np.full((40, 40, 3), value, np.uint8)).save(path)


def test_an_indexed_file_is_read_again_only_when_its_size_or_time_changed(tmp_path, tiny_run):
    run, data = copy_run(tiny_run, tmp_path)
    build(run, data)
    untouched = build(run, data, append=True)
    assert untouched.hashed_images == 0 and not untouched.written  # 30 files: stat'ed, none read

    touched = data / "id_0" / "img_1.png"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    again = build(run, data, append=True)
    assert again.hashed_images == 1 and (again.added, again.count) == (0, 30)  # read once, same content: kept…
    assert again.segments == 2  # …its row (same id, same vector) moved to a new segment with the new time
    assert build(run, data, append=True).hashed_images == 0  # so it is not read again

    # Content changed behind the same size and time: like git, the stat data is trusted, the file not read.
    other = data / "id_0" / "img_2.png"
    info = other.stat()
    other.write_bytes(touched.read_bytes()[: info.st_size].ljust(info.st_size, b"\0"))
    os.utime(other, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert build(run, data, append=True).hashed_images == 0


def test_removed_rows_are_never_answered_and_k_stays_full(tmp_path, tiny_run):
    from siamcli.index.search import search_vectors
    from siamcli.index.store import load_index

    run, data = copy_run(tiny_run, tmp_path)
    build(run, data)
    index_dir = run / "index"
    full = load_index(index_dir)
    gone = sorted((data / "id_3").iterdir())[:4]  # 4 of 30: a tombstone file, not a rewrite
    gone_ids = {item.id for item in full.items if item.path in {str(p) for p in gone}}
    queries = full.vectors([ref for ref, item in full.entries if item.id in gone_ids])
    for path in gone:
        path.unlink()
    pruned = build(run, data, prune=True)
    assert (pruned.removed, pruned.count, pruned.segments, pruned.rewrite_reason) == (4, 26, 1, "")
    assert pruned.bytes_written < 2000  # a tombstone file and a manifest, not the index again
    loaded = load_index(index_dir)
    assert loaded.index.ntotal == 30 and loaded.segments[0].deleted.size == 4
    answers = search_vectors(loaded, queries, 26)  # the deleted rows are the nearest to these queries
    for answer in answers:
        assert len(answer) == 26 and not {n.id for n in answer} & gone_ids


def test_compaction_keeps_ids_and_answers_and_drops_removed_rows(tmp_path, tiny_run):
    from siamcli.index.compact import compact_index
    from siamcli.index.search import search_vectors
    from siamcli.index.store import load_index

    run, data = copy_run(tiny_run, tmp_path)
    build(run, data)
    index_dir = run / "index"
    _photo(data / "id_0" / "new.png", 120)
    (data / "id_4" / "img_0.png").unlink()
    updated = build(run, data, append=True, prune=True)
    assert updated.segments == 2 and updated.count == 30
    before = load_index(index_dir)
    vectors = before.vectors([ref for ref, _ in before.entries])
    answers = [[(n.id, round(n.similarity, 5)) for n in a] for a in search_vectors(before, vectors, 5)]

    compacted = compact_index(index_dir)
    assert (compacted.segments, compacted.count, compacted.removed) == (1, 30, 1)
    after = load_index(index_dir)
    manifest = json.loads((index_dir / "manifest.json").read_text())
    assert manifest["segments"] == [] and manifest["deleted"] is None and manifest["rows"] == 30
    assert [item.id for item in after.items] == [item.id for item in before.items]
    assert [[(n.id, round(n.similarity, 5)) for n in a] for a in search_vectors(after, vectors, 5)] == answers
    assert not (index_dir / "segments").exists() and not list(index_dir.glob("deleted-*"))
    assert len((index_dir / "items.csv").read_text().splitlines()) == 31


def test_many_small_updates_keep_few_segments(tmp_path, tiny_run, monkeypatch):
    from siamcli.index import update
    from siamcli.index.store import load_index

    monkeypatch.setattr(update, "MAX_LATER_SEGMENTS", 2)
    run, data = copy_run(tiny_run, tmp_path)
    build(run, data)
    for i in range(4):
        _photo(data / "id_5" / f"extra_{i}.png", 30 + 40 * i)
        result = build(run, data, append=True)
        assert result.added == 1 and result.segments == [2, 3, 2, 3][i]  # the third absorbs the other two
    loaded = load_index(run / "index")
    assert [segment.rows for segment in loaded.segments] == [30, 3, 1]
    assert sorted(item.id for item in loaded.items) == list(range(34))
    assert sorted(p.name for p in (run / "index" / "segments").iterdir()) == ["000003", "000004"]


def test_an_older_format_or_damaged_tombstones_are_one_line_errors(tmp_path, tiny_run):
    import pytest

    from siamcli.errors import CorruptArtifactError, UserError
    from siamcli.index.store import load_index

    run, data = copy_run(tiny_run, tmp_path)
    build(run, data)
    (data / "id_2" / "img_1.png").unlink()
    build(run, data, prune=True)
    index_dir = run / "index"
    manifest_path = index_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    tombstones = index_dir / manifest["deleted"]["file"]
    tombstones.write_bytes(tombstones.read_bytes()[:-8])
    with pytest.raises(CorruptArtifactError, match="deleted-.*truncated or changed"):
        load_index(index_dir)
    manifest_path.write_text(json.dumps({**manifest, "format": "siamcli-index/1"}))
    with pytest.raises(UserError, match=r"older siamcli .*--force"):
        load_index(index_dir)

"""The index engine: vectors files, the auto rule, exact and approximate FAISS search, validation.

Real FAISS on small hand-made unit vectors, and real index directories built with the tiny
untrained run (32 px, 16-d) over its 6 × 5 synthetic identities. Helpers here are used by
test_index_cli.py and test_query_cli.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import write_test_calibration

from siamcli.errors import CorruptArtifactError, UserError
from siamcli.hashing import file_sha256
from siamcli.index import faiss_index, faiss_io
from siamcli.index import manifest as mf
from siamcli.index import plan as planning
from siamcli.index import recall as recall_tuning
from siamcli.index import vectors as vector_file

# ---------------------------------------------------------------- helpers used by index tests


def unit_vectors(n: int, dim: int, seed: int = 0, clusters: int = 0, sample_seed: int | None = None) -> np.ndarray:
    """(n, dim) float32 unit vectors; with `clusters`, noisy copies of that many centres.

    The centres depend on `seed` only, so `sample_seed` draws fresh points around the same ones.
    """
    rng = np.random.default_rng(seed)
    if clusters:
        centres = rng.normal(size=(clusters, dim))
        if sample_seed is not None:
            rng = np.random.default_rng(sample_seed)
        x = centres[rng.integers(0, clusters, n)] + 0.35 * rng.normal(size=(n, dim))
    else:
        x = rng.normal(size=(n, dim))
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force_topk(gallery: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """numpy top-k by inner product, ties broken by the lower row: (scores, rows)."""
    scores = queries.astype(np.float64) @ gallery.astype(np.float64).T
    rows = np.lexsort((np.broadcast_to(np.arange(len(gallery)), scores.shape), -scores), axis=1)[:, :k]
    return np.take_along_axis(scores, rows, axis=1), rows


def write_vectors(path: Path, x: np.ndarray) -> Path:
    with vector_file.VectorWriter(path, x.shape[1], capacity=len(x)) as writer:
        writer.write(x)
    return path


def tiny_data(run_dir: Path) -> Path:
    return Path(json.loads((run_dir / "config.json").read_text())["data_dir"])


def copy_run(tiny_run: Path, dest: Path, with_data: bool = True) -> tuple[Path, Path]:
    """A writable copy of the tiny run (and of its data folder): (run_dir, data_dir)."""
    run = dest / "run"
    run.mkdir(parents=True)
    for name in ("model.keras", "config.json", "split.json"):
        shutil.copy(tiny_run / name, run / name)
    data = tiny_data(tiny_run)
    if with_data:
        data = Path(shutil.copytree(data, dest / "data"))
    return run, data


def build(run: Path, data: Path, **options):
    from siamcli.index.build import IndexOptions, build_index

    return build_index(IndexOptions(gallery=str(data), model=str(run), **options))


def rewrite_checksums(index_dir: Path) -> None:
    """Make the manifest agree with edited files, to reach the checks behind the checksums."""
    manifest = json.loads((index_dir / mf.MANIFEST).read_text())
    manifest["files"] = {name: mf.file_record(index_dir / name) for name in mf.SEGMENT_FILES}
    (index_dir / mf.MANIFEST).write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def built_index(tmp_path_factory, tiny_run):
    """(run dir, data dir, index dir): the tiny run's copy with a flat index over its data. Read-only."""
    run, data = copy_run(tiny_run, tmp_path_factory.mktemp("built"))
    result = build(run, data)
    return run, data, result.index_dir


# ---------------------------------------------------------------- vectors files


def test_vector_writer_reserves_a_header_and_writes_a_plain_npy(tmp_path):
    x = unit_vectors(37, 5)
    path = tmp_path / "v.npy"
    with vector_file.VectorWriter(path, 5, capacity=10_000_000) as writer:
        writer.write(x[:20])
        writer.write(x[20:])
    loaded = np.load(path, allow_pickle=False)
    assert loaded.dtype == np.float32 and np.array_equal(loaded, x)
    chunks = list(vector_file.iter_chunks(path, chunk_rows=8))
    assert [first for first, _ in chunks] == [0, 8, 16, 24, 32]
    assert np.array_equal(np.concatenate([c for _, c in chunks]), x)
    assert np.array_equal(vector_file.read_rows(path, np.array([36, 0, 5])), x[[36, 0, 5]])
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(CorruptArtifactError, match="truncated"):
        vector_file.read_shape(path)


# ---------------------------------------------------------------- the auto rule


def test_auto_rule_is_exact_when_small_then_hnsw_then_ivf_past_the_memory_budget():
    plan = planning.plan_index
    assert plan("auto", 30, 16).factory == "Flat"
    assert plan("auto", planning.FLAT_MAX, 256).factory == "Flat"
    assert plan("auto", planning.FLAT_MAX + 1, 256).factory == "IDMap,HNSW32,Flat"
    assert plan("auto", 1_000_000, 256).factory == "IDMap,HNSW32,Flat"  # 1.3 GB: fits
    assert plan("auto", 10_000_000, 256).factory == "IVF16384_HNSW32,PQ32,Refine(SQ8)"  # 13 GB as HNSW: compact ivfpq
    assert planning.hnsw_bytes(6_000_000, 256) <= planning.MEMORY_BUDGET < planning.hnsw_bytes(7_000_000, 256)
    assert plan("ivf", 1_000_000, 256).factory == "IVF4096,Flat"
    assert plan("ivf", 30, 16).factory == "IVF1,Flat"  # too few points to train more lists
    assert plan("flat", 10**7, 256).chosen_by == "user" and plan("auto", 10, 4).chosen_by == "auto"
    for count in (100, 5_000, 10**5, 10**6, 10**8):
        nlist = planning.nlist_for(count)
        assert nlist & (nlist - 1) == 0 and nlist * planning.MIN_POINTS_PER_LIST <= count
    with pytest.raises(UserError, match="--index-type"):
        plan("annoy", 10, 4)


# ---------------------------------------------------------------- exact and approximate search


def test_exact_search_equals_brute_force_numpy(tmp_path):
    x = unit_vectors(3000, 24, seed=1)
    queries = unit_vectors(50, 24, seed=2)
    path = write_vectors(tmp_path / "v.npy", x)
    index, tuning = faiss_index.build_and_tune(path, planning.plan_index("flat", len(x), 24))
    assert tuning.recall_at_10 == 1.0 and tuning.params == {}
    scores, rows = index.search(queries, 10)
    want_scores, want_rows = brute_force_topk(x, queries, 10)
    assert np.array_equal(rows, want_rows)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    # The chunked exact search used for recall agrees too, across chunk boundaries.
    got_scores, got_rows = recall_tuning.exact_neighbours(path, queries, 10)
    assert np.array_equal(got_rows, want_rows)
    np.testing.assert_allclose(got_scores, want_scores, atol=1e-5)


def test_exact_neighbours_leaves_out_excluded_rows_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(recall_tuning, "EXACT_CHUNK_ROWS", 64)
    x = unit_vectors(500, 8, seed=3)
    path = write_vectors(tmp_path / "v.npy", x)
    excluded = np.zeros(500, bool)
    excluded[[0, 63, 64, 200, 499]] = True
    queries = x[[0, 63, 64, 499]]
    _, rows = recall_tuning.exact_neighbours(path, queries, 5, exclude=excluded)
    scores = queries @ x.T
    scores[:, excluded] = -np.inf
    assert np.array_equal(rows, np.argsort(-scores, axis=1, kind="stable")[:, :5])


@pytest.mark.parametrize("index_type", ["hnsw", "ivf"])
def test_approximate_types_reach_the_recall_they_report(tmp_path, index_type):
    x = unit_vectors(8000, 32, seed=4, clusters=80)
    path = write_vectors(tmp_path / "v.npy", x)
    plan = planning.plan_index(index_type, len(x), 32)
    assert plan.approximate
    index, tuning = faiss_index.build_and_tune(path, plan, seed=0)
    assert index.ntotal == len(x)
    assert tuning.reached and tuning.recall_at_10 >= recall_tuning.RECALL_TARGET
    assert tuning.sample == 800 and set(tuning.params) == {recall_tuning.SEARCH_PARAMETER[index_type]}
    # Every row is there under its own id (held-out rows were added last, with their row ids).
    _, own = index.search(x[:500], 1)
    assert (own[:, 0] == np.arange(500)).mean() >= 0.95
    if index_type == "hnsw":
        ids = faiss_io.faiss_module().vector_to_array(index.id_map)
        assert np.array_equal(np.sort(ids), np.arange(len(x)))
    # Re-measure independently on fresh queries (new points around the same centres) against
    # numpy brute force: what the manifest reports is what new queries get.
    fresh = unit_vectors(500, 32, seed=4, clusters=80, sample_seed=7)
    _, found = index.search(fresh, 10)
    _, exact = brute_force_topk(x, fresh, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(found, exact)])
    assert recall >= recall_tuning.RECALL_TARGET - 0.02
    assert abs(recall - tuning.recall_at_10) <= 0.03


def test_tuning_leaves_the_index_at_the_setting_and_recall_it_reports(tmp_path):
    x = unit_vectors(4000, 32, seed=5, clusters=40)
    path = write_vectors(tmp_path / "v.npy", x)
    faiss = faiss_io.faiss_module()
    for index_type, read_back in (
        ("hnsw", lambda index: faiss.downcast_index(index.index).hnsw.efSearch),
        ("ivf", lambda index: faiss.extract_index_ivf(index).nprobe),
    ):
        plan = planning.plan_index(index_type, len(x), 32)
        index = faiss_index.create(plan, 32)
        if not index.is_trained:
            index.train(x)
        held_out = np.arange(0, 4000, 10)
        skip = np.zeros(4000, bool)
        skip[held_out] = True
        faiss_index.add_rows(index, path, skip=skip)
        probe = recall_tuning.RecallProbe(path, held_out, skip)
        tuning = recall_tuning.tune(index, plan, probe)
        (value,) = tuning.params.values()
        assert read_back(index) == value
        assert probe.recall(index) == tuning.recall_at_10 >= recall_tuning.RECALL_TARGET
        if index_type == "ivf" and value > 1:  # IVF recall falls with fewer lists probed
            faiss_io.set_search_params(index, {"nprobe": max(1, value // 4)})
            assert probe.recall(index) < recall_tuning.RECALL_TARGET


# ---------------------------------------------------------------- index directories


def test_built_index_files_agree_and_exact_search_matches_numpy_on_its_vectors(built_index, tiny_run):
    from siamcli.index.items import content_hash
    from siamcli.index.search import search_vectors
    from siamcli.index.store import load_index

    run, data, index_dir = built_index
    assert sorted(p.name for p in index_dir.iterdir()) == sorted(mf.SEGMENT_FILES + (mf.MANIFEST, "items.csv"))
    loaded = load_index(index_dir, full=True)
    manifest = loaded.manifest
    assert manifest["count"] == manifest["rows"] == loaded.index.ntotal == len(loaded.items) == 30
    assert manifest["segments"] == [] and manifest["deleted"] is None and manifest["generation"] == 1
    assert manifest["embedding_dim"] == 16 and manifest["image_size"] == 32 and manifest["metric"] == "inner_product"
    assert manifest["factory"] == "Flat" and manifest["recall_at_10"] == 1.0 and "threshold" not in manifest
    assert manifest["model_path"] == str((run / "model.keras").resolve())
    exported = (index_dir / "items.csv").read_text().splitlines()
    assert exported == ["id,path,label"] + [f"{i.id},{i.path},{i.label}" for i in loaded.items]
    assert [i.id for i in loaded.items] == list(range(30))
    assert {i.label for i in loaded.items} == {f"id_{n}" for n in range(6)}
    assert all(Path(i.path).is_absolute() and i.sha256 == content_hash(i.path) for i in loaded.items)
    vectors = np.load(index_dir / "embeddings.npy", allow_pickle=False)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    queries = vectors[[0, 7, 29]] + 0.01
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    answers = search_vectors(loaded, queries, 8)
    want_scores, want_rows = brute_force_topk(vectors, queries, 8)
    for answer, scores, rows in zip(answers, want_scores, want_rows):
        assert [n.id for n in answer] == [loaded.items[r].id for r in rows]
        np.testing.assert_allclose([n.similarity for n in answer], scores, atol=1e-5)
        assert [n.rank for n in answer] == list(range(1, 9))


def _damaged(built_index, tmp_path) -> Path:
    _, _, index_dir = built_index
    return Path(shutil.copytree(index_dir, tmp_path / "index"))


def test_truncated_or_garbage_index_file_is_a_clear_error(built_index, tmp_path):
    from siamcli.index.store import load_index

    index_dir = _damaged(built_index, tmp_path)
    data = (index_dir / "index.faiss").read_bytes()
    (index_dir / "index.faiss").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptArtifactError, match="index.faiss .*truncated or changed"):
        load_index(index_dir)
    # Even with checksums that agree, FAISS's read error becomes a CorruptArtifactError.
    rewrite_checksums(index_dir)
    with pytest.raises(CorruptArtifactError, match="damaged or truncated"):
        load_index(index_dir)
    (index_dir / "index.faiss").write_bytes(b"not a faiss index at all" * 10)
    rewrite_checksums(index_dir)
    with pytest.raises(CorruptArtifactError, match="damaged or truncated"):
        load_index(index_dir)


def test_items_rows_not_matching_ntotal_or_dimension_is_a_clear_error(built_index, tmp_path):
    import sqlite3

    from siamcli.index.store import load_index

    index_dir = _damaged(built_index, tmp_path)
    with sqlite3.connect(index_dir / "items.sqlite") as db:
        db.execute("DELETE FROM items WHERE row = 29")
    with pytest.raises(CorruptArtifactError, match="items.sqlite .*(truncated or changed|damaged or edited)"):
        load_index(index_dir)
    rewrite_checksums(index_dir)  # checksums agree: the row count check must still catch it
    with pytest.raises(CorruptArtifactError, match="items.sqlite holds 29 rows, the manifest 30"):
        load_index(index_dir)
    (index_dir / "items.sqlite").write_bytes(b"not a database" * 100)
    rewrite_checksums(index_dir)
    with pytest.raises(CorruptArtifactError, match="items.sqlite is not a readable items table"):
        load_index(index_dir)
    index_dir = _damaged(built_index, tmp_path / "dim")
    manifest = json.loads((index_dir / mf.MANIFEST).read_text())
    manifest["embedding_dim"] = 32
    (index_dir / mf.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CorruptArtifactError, match="dimension 16 but the manifest says 32"):
        load_index(index_dir)
    (index_dir / mf.MANIFEST).write_text("{not json")
    with pytest.raises(CorruptArtifactError, match="not valid JSON"):
        load_index(index_dir)
    with pytest.raises(UserError, match="no index at"):
        load_index(tmp_path / "nowhere")


def test_a_failed_build_leaves_the_previous_index_untouched(built_index, tmp_path, monkeypatch):
    from siamcli.index.store import load_index

    run, data, index_dir = built_index
    work = Path(shutil.copytree(run, tmp_path / "run"))  # the index lives inside the run
    before = {p.name: p.read_bytes() for p in (work / "index").iterdir()}

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(faiss_io, "write_index", boom)  # the index file of the new build
    with pytest.raises(RuntimeError, match="disk on fire"):
        build(work, data, force=True)
    assert {p.name: p.read_bytes() for p in (work / "index").iterdir()} == before
    assert load_index(work / "index").count == 30
    assert not list(work.glob(".index.*"))  # the temporary folder is cleaned up


def test_the_run_calibration_is_read_only_for_its_own_model(tmp_path):
    from siamcli.calibration import read_calibration, similarity_threshold

    (tmp_path / "model.keras").write_bytes(b"a model")
    write_test_calibration(tmp_path, 0.5)
    calibration, why = read_calibration(tmp_path, file_sha256(tmp_path / "model.keras"))
    assert calibration.threshold == 0.5 and calibration.similarity == 0.75 and why == ""
    evaluate = f"`siamcli evaluate --model {tmp_path}`"  # each hint names the run it is about
    assert read_calibration(tmp_path, "other") == (None, f"{tmp_path / 'calibration.json'} was measured on another model; run {evaluate} again")
    (tmp_path / "calibration.json").write_text("{not json")
    assert read_calibration(tmp_path, "x")[0] is None and "damaged" in read_calibration(tmp_path, "x")[1]
    assert read_calibration(tmp_path, "x")[1].endswith(f"run {evaluate} again")
    (tmp_path / "calibration.json").unlink()
    assert read_calibration(tmp_path, "x") == (None, f"not calibrated: run {evaluate} on identities the model never trained on")
    assert similarity_threshold(0.5) == 0.75


def test_items_store_paths_under_their_gallery_and_refuse_a_gallery_the_manifest_lacks(tmp_path):
    import os
    import sqlite3

    from siamcli.index.items import IndexItem, read_items, read_rows, write_items

    galleries = [str(tmp_path / "g0"), str(tmp_path / "g1")]
    items = [
        IndexItem(id=0, path=os.path.join(galleries[0], "alice", "1.png"), label="alice", sha256="ab" * 32, size=5, mtime_ns=7),
        IndexItem(id=4, path=os.path.join(galleries[1], "root.png"), label="", sha256="cd" * 32),
        IndexItem(id=9, path=os.path.join(galleries[1], "bob", "2.png"), label="renamed", sha256="ef" * 32),  # not implied
        IndexItem(id=11, path="/elsewhere/3.png", label="carol", sha256=""),  # under no gallery
    ]
    path = tmp_path / "items.sqlite"
    assert write_items(path, items, galleries) == 4
    assert read_items(path, galleries) == items and read_rows(path, [2, 0], galleries) == {0: items[0], 2: items[2]}
    with sqlite3.connect(path) as db:
        stored = db.execute("SELECT gallery, path, label FROM items ORDER BY row").fetchall()
    assert stored[0] == (0, os.fsencode(os.path.join("alice", "1.png")), None)  # relative, label implied
    assert stored[2][2] == b"renamed" and stored[3][:2] == (-1, b"/elsewhere/3.png")
    with pytest.raises(CorruptArtifactError, match="names gallery 1 of 1; rebuild it$"):
        read_items(path, galleries[:1])


def test_planning_an_index_imports_neither_faiss_nor_numpy():
    """plan.py is arithmetic: the `auto` rule and the byte estimates answer without FAISS loaded."""
    import subprocess
    import sys

    code = ("import sys; from siamcli.index import plan; "
            "assert plan.plan_index('auto', 10_000_000, 256).factory == 'IVF16384_HNSW32,PQ32,Refine(SQ8)'; "
            "print(sorted(m for m in ('faiss', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_run_model_states_the_facts_an_index_records(built_index):
    """models/run_model.py: the one loader; its dimension, image size and fingerprint are the index's."""
    from siamcli.index.store import load_index
    from siamcli.models.run_model import load_run_model
    from siamcli.rundir import find_run

    run, _, index_dir = built_index
    loaded = load_run_model(find_run(str(run)))
    index = load_index(index_dir)
    assert (loaded.dim, loaded.image_size, loaded.sha256) == (index.dim, index.record.image_size, index.record.model_fingerprint)
    assert loaded.sha256 == file_sha256(run / "model.keras")
    loaded.check_matches(index_dir, index.dim)  # the same length: no error
    with pytest.raises(UserError, match=rf"holds {index.dim + 1}-d vectors but model .* makes {index.dim}-d ones; rebuild it$"):
        loaded.check_matches(index_dir, index.dim + 1)


def test_a_query_model_of_another_length_is_refused_with_the_rebuild_command(built_index):
    import dataclasses

    from siamcli.index.search import load_query_model
    from siamcli.index.store import load_index

    run, _, index_dir = built_index
    index = load_index(index_dir)
    assert load_query_model(run / "model.keras", index).output_shape[-1] == index.dim
    longer = dataclasses.replace(index, record=dataclasses.replace(index.record, embedding_dim=index.dim + 1))
    with pytest.raises(UserError, match=rf"holds {index.dim + 1}-d vectors but model .* makes {index.dim}-d ones; "
                                        r"rebuild it with `siamcli index .*--force`$"):
        load_query_model(run / "model.keras", longer)

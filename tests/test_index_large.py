"""Large galleries: the ivfpq index type, memory-mapped query loads, cheap checks of big files.

Real FAISS on 20,000 clustered 32-d unit vectors (seconds, not minutes), and a real index
directory built by `build_index` with the tiny untrained run. "Memory-mapped" is proved by
the kernel, not by a mock: the index file appears in /proc/self/maps of the process that
loaded it, and the loaded lists are views of that mapping.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from siamcli.errors import CorruptArtifactError
from siamcli.index import faiss_index, faiss_io, store
from siamcli.index import manifest as mf
from siamcli.index import plan as planning
from siamcli.index import recall as recall_tuning
from siamcli.index.store import load_index
from tests.test_index_engine import build, copy_run, unit_vectors, write_vectors

COUNT, DIM = 20_000, 32


def mapped(path: Path) -> bool:
    """Whether `path` is mapped into this process (the kernel's own list)."""
    target = str(Path(path).resolve())
    with open("/proc/self/maps") as maps:
        return any(line.rstrip("\n").endswith(" " + target) for line in maps)


@pytest.fixture(scope="module")
def ivfpq_built(tmp_path_factory):
    """(vectors path, index path, plan, tuning, queries): ivfpq over 20k clustered vectors, written."""
    work = tmp_path_factory.mktemp("ivfpq")
    vectors = write_vectors(work / "v.npy", unit_vectors(COUNT, DIM, seed=3, clusters=2000))
    plan = planning.plan_index("ivfpq", COUNT, DIM)
    index, tuning = faiss_index.build_and_tune(vectors, plan, seed=0)
    path = work / "index.faiss"
    faiss_io.write_index(index, path)
    queries = unit_vectors(300, DIM, seed=3, clusters=2000, sample_seed=9)  # fresh points, same clusters
    return vectors, path, plan, tuning, queries


def test_ivfpq_plan_is_ivf_with_pq_codes_and_8bit_reranking():
    plan = planning.plan_index("ivfpq", COUNT, DIM)
    assert plan.factory == "IVF512,PQ2,Refine(SQ8)" and plan.nlist == 512 and plan.approximate
    big = planning.plan_index("ivfpq", 10_000_000, 256)
    assert big.factory == "IVF16384_HNSW32,PQ32,Refine(SQ8)" and big.nlist == 16384
    small = planning.plan_index("ivfpq", 500, 16)  # too few points for 256 centroids per codebook
    assert small.factory == "IVF8,PQ1x3,Refine(SQ8)"  # 8 centroids × 39 ≤ 500
    assert "ivfpq" in planning.INDEX_TYPES


def test_ivfpq_is_tuned_to_the_target_on_held_out_vectors(ivfpq_built):
    vectors, path, plan, tuning, queries = ivfpq_built
    assert tuning.reached and tuning.recall_at_10 >= recall_tuning.RECALL_TARGET + recall_tuning.TUNING_MARGIN
    assert tuning.sample == 1000 and set(tuning.params) == {"nprobe", recall_tuning.RERANK_PARAMETER}
    assert 1 <= tuning.params["nprobe"] <= plan.nlist
    # Fresh queries (not the tuning sample, not in the index) get the target too, against exact search.
    index = faiss_io.read_index(path)
    faiss_io.set_search_params(index, tuning.params)
    assert index.ntotal == COUNT
    _, exact = recall_tuning.exact_neighbours(vectors, queries, 10)
    _, found = index.search(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found.tolist(), exact.tolist())])
    assert recall >= recall_tuning.RECALL_TARGET
    # Re-ranking is from 8-bit vectors: the scores returned are the true inner products to within its steps.
    scores, rows = index.search(queries[:20], 10)
    x = np.load(vectors)
    assert np.allclose(scores, np.einsum("qd,qkd->qk", queries[:20], x[rows]), atol=0.01)


def test_query_load_is_memory_mapped_and_answers_like_a_normal_load(ivfpq_built):
    _, path, _, tuning, queries = ivfpq_built
    faiss = faiss_io.faiss_module()
    read = faiss_io.read_index(path)
    assert not mapped(path)
    mm = faiss_io.read_index(path, mmap=True)
    assert mapped(path)
    for index in (read, mm):
        faiss_io.set_search_params(index, tuning.params)
    # The PQ lists and the re-ranking vectors are views of the mapping, not copies.
    ivf = faiss.extract_index_ivf(mm)
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    biggest = int(np.argmax([lists.list_size(i) for i in range(ivf.nlist)]))
    refine = faiss.downcast_index(mm.refine_index)
    start, end = _mapping_range(path)
    assert not refine.codes.is_owned
    for address in (int(lists.get_codes(biggest)), int(lists.get_ids(biggest)), int(refine.codes.data())):
        assert start <= address < end
    a_scores, a_rows = read.search(queries, 10)
    b_scores, b_rows = mm.search(queries, 10)
    assert np.array_equal(a_rows, b_rows) and np.array_equal(a_scores, b_scores)


def _mapping_range(path: Path) -> tuple[int, int]:
    target = str(Path(path).resolve())
    with open("/proc/self/maps") as maps:
        spans = [line.split()[0] for line in maps if line.rstrip("\n").endswith(" " + target)]
    starts, ends = zip(*((int(a, 16), int(b, 16)) for a, b in (span.split("-") for span in spans)))
    return min(starts), max(ends)


def test_ivfpq_round_trips_through_write_and_read(ivfpq_built, tmp_path):
    _, path, _, tuning, queries = ivfpq_built
    index = faiss_io.read_index(path)
    faiss_io.set_search_params(index, tuning.params)
    again = tmp_path / "again.faiss"
    faiss_io.write_index(index, again)
    assert again.read_bytes() == path.read_bytes()


@pytest.fixture(scope="module")
def ivfpq_dir(tmp_path_factory, tiny_run):
    """(run, data, index dir): the tiny run's gallery indexed with --index-type ivfpq via build_index."""
    run, data = copy_run(tiny_run, tmp_path_factory.mktemp("ivfpq_dir"))
    result = build(run, data, index_type="ivfpq")
    assert result.index_type == "ivfpq" and result.factory.endswith(",Refine(SQ8)")
    return run, data, result.index_dir


def test_build_index_with_ivfpq_then_query_maps_it_and_finds_each_image(ivfpq_dir):
    run, data, index_dir = ivfpq_dir
    manifest = json.loads((index_dir / mf.MANIFEST).read_text())
    assert set(manifest["search_params"]) == {"nprobe", recall_tuning.RERANK_PARAMETER}
    loaded = load_index(index_dir)
    assert mapped(index_dir / mf.INDEX_FILE)
    assert not (index_dir / mf.EMBEDDINGS_FILE).exists()  # ivfpq holds the (8-bit) vectors itself
    embeddings = faiss_index.reconstruct_rows(loaded.index, 0, loaded.index.ntotal)
    scores, rows = loaded.index.search(embeddings, 10)  # (k_factor re-ranks k_factor·10 candidates, as tuned)
    # each image's nearest is itself, or an image the (untrained) model gives the same vector (to within the 8-bit scores)
    assert np.allclose(scores[:, 0], 1.0, atol=0.01) and np.all(np.einsum("nd,nd->n", embeddings[rows[:, 0]], embeddings) > 0.99)

    from siamcli.index.search import query_images

    image = loaded.items[7].path
    outcome = query_images([image], index=str(index_dir), model=str(run), k=3)
    assert abs(outcome.results[0].neighbours[0].similarity - 1.0) < 0.01  # scored from 8-bit vectors
    full = load_index(index_dir, full=True)  # an update reads it into memory: it will add to it
    assert faiss_io.faiss_module().extract_index_ivf(full.index).invlists is not None
    before = full.index.ntotal
    full.index.add(embeddings[:1])  # ivfpq's ids are positions: rows are added in order
    assert full.index.ntotal == before + 1


def test_a_big_index_file_is_checked_by_size_at_load_and_hashed_by_a_rewrite(ivfpq_dir, tmp_path, monkeypatch):
    from siamcli.index.compact import compact_index

    _, _, index_dir = ivfpq_dir
    copy = Path(shutil.copytree(index_dir, tmp_path / "index"))
    index_file = copy / mf.INDEX_FILE
    original = index_file.read_bytes()
    monkeypatch.setattr(store, "QUERY_HASH_MAX_BYTES", 1024)  # make the test's small file "big"
    assert len(original) > 1024
    # Same size, a byte changed in the codes (the 8-bit vectors, written last): a query no longer reads every byte…
    damaged = bytearray(original)
    damaged[len(damaged) - 20] ^= 0xFF
    index_file.write_bytes(bytes(damaged))
    load_index(copy)
    load_index(copy, full=True)  # nor does an update, which must cost what it changes…
    # …but a rewrite, which reads every byte anyway, hashes it all and refuses it.
    with pytest.raises(CorruptArtifactError, match="checksum"):
        compact_index(copy)
    assert index_file.read_bytes() == bytes(damaged)  # and leaves the index as it was
    # Truncated or grown: refused by the query too, before FAISS reads it.
    index_file.write_bytes(original[:-100])
    with pytest.raises(CorruptArtifactError, match="truncated or changed"):
        load_index(copy)
    index_file.write_bytes(original + b"\0" * 10)
    with pytest.raises(CorruptArtifactError, match="truncated or changed"):
        load_index(copy)
    # Under the limit, every byte is still hashed at query time.
    monkeypatch.setattr(store, "QUERY_HASH_MAX_BYTES", len(original) + 1)
    index_file.write_bytes(bytes(damaged))
    with pytest.raises(CorruptArtifactError, match="checksum"):
        load_index(copy)

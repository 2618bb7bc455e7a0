"""The compact ivfpq index: IVF + PQ codes + re-ranking from 8-bit vectors it keeps once.

Real FAISS on 20,000 clustered 64-d unit vectors (seconds). What the store relies on: ids are
rows (no IDMap), the index holds its own vectors (`keeps_vectors` is False) and gives them back
by row (`reconstruct_rows`, from a memory-mapped file too), scores are cosines to within the
8-bit steps, a rebuild from the decoded vectors searches as well as the original, and `auto`
picks it past the HNSW budget.
"""

from __future__ import annotations

import numpy as np
import pytest

from siamcli.index import faiss_index, faiss_io
from siamcli.index import plan as planning
from siamcli.index import recall as recall_tuning
from tests.test_index_engine import unit_vectors, write_vectors

COUNT, DIM, CLUSTERS = 20_000, 64, 2000


def recall_at_10(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found.tolist(), exact.tolist())]))


@pytest.fixture(scope="module")
def compact(tmp_path_factory):
    """(vectors, index path, plan, tuning, fresh queries, their exact top 10): ivfpq built and written."""
    work = tmp_path_factory.mktemp("compact")
    x = unit_vectors(COUNT, DIM, seed=5, clusters=CLUSTERS)
    vectors = write_vectors(work / "v.npy", x)
    plan = planning.plan_index("ivfpq", COUNT, DIM)
    index, tuning = faiss_index.build_and_tune(vectors, plan, seed=0)
    path = work / "index.faiss"
    faiss_io.write_index(index, path)
    queries = unit_vectors(1000, DIM, seed=5, clusters=CLUSTERS, sample_seed=11)  # fresh points, same clusters
    _, exact = recall_tuning.exact_neighbours(vectors, queries, 10)
    return x, vectors, path, plan, tuning, queries, exact


def test_factory_is_ivf_pq_with_sq8_refinement_and_no_idmap():
    faiss = faiss_io.faiss_module()
    plan = planning.plan_index("ivfpq", COUNT, DIM)
    assert plan.factory == "IVF512,PQ4,Refine(SQ8)" and plan.nlist == 512 and plan.approximate
    big = planning.plan_index("ivfpq", 10_000_000, 256)
    assert big.factory == "IVF16384_HNSW32,PQ32,Refine(SQ8)" and big.nlist == 16384
    index = faiss_index.create(plan, DIM)
    assert isinstance(index, faiss.IndexRefine) and index.metric_type == faiss.METRIC_INNER_PRODUCT
    assert isinstance(faiss.downcast_index(index.base_index), faiss.IndexIVFPQ)
    refine = faiss.downcast_index(index.refine_index)
    assert isinstance(refine, faiss.IndexScalarQuantizer) and refine.code_size == DIM  # one byte a dimension
    assert not faiss.downcast_index(index.base_index).do_polysemous_training


def test_keeps_vectors_is_false_only_where_the_index_holds_them_by_row():
    assert not planning.keeps_vectors(planning.plan_index("ivfpq", COUNT, DIM))
    assert not planning.keeps_vectors("IVF16384_HNSW32,PQ16,Refine(SQ8)")
    assert not planning.keeps_vectors("IVF16384_HNSW32,PQ32,Refine(SQ8)")
    for index_type in ("flat", "hnsw", "ivf"):
        assert planning.keeps_vectors(planning.plan_index(index_type, COUNT, DIM))
    assert planning.keeps_vectors("IVF4096,SQ8")
    assert planning.keeps_vectors("IDMap,IVF512,PQ4,RFlat")  # the old ivfpq: vectors in insertion order


def test_build_is_tuned_searches_by_inner_product_and_ids_are_rows(compact):
    x, _, path, plan, tuning, queries, exact = compact
    assert tuning.reached and tuning.recall_at_10 >= recall_tuning.RECALL_TARGET + recall_tuning.TUNING_MARGIN
    assert tuning.sample == 1000 and set(tuning.params) == {"nprobe", recall_tuning.RERANK_PARAMETER}
    index = faiss_io.read_index(path)
    faiss_io.set_search_params(index, tuning.params)
    assert index.ntotal == COUNT
    assert recall_at_10(index.search(queries, 10)[1], exact) >= recall_tuning.RECALL_TARGET
    # Every row, the held-out ones (added to the lists last) included, finds itself first.
    scores, rows = index.search(x, 1)
    assert np.mean(rows[:, 0] == np.arange(COUNT)) > 0.999
    assert np.all(np.abs(scores[:, 0] - 1.0) < 0.01)


def test_scores_are_cosines_to_within_the_8_bit_steps(compact):
    x, _, path, _, tuning, queries, _ = compact
    index = faiss_io.read_index(path)
    faiss_io.set_search_params(index, tuning.params)
    scores, rows = index.search(queries, 10)
    true = np.einsum("qd,qkd->qk", queries, x[rows])
    assert np.abs(scores - true).max() < 0.01
    assert np.all(np.diff(scores, axis=1) <= 0)  # best first


def test_reconstruct_rows_gives_the_vectors_back_within_sq8_precision(compact):
    x, _, path, _, _, _, _ = compact
    index = faiss_io.read_index(path)
    back = faiss_index.reconstruct_rows(index, 0, COUNT)
    assert back.shape == (COUNT, DIM) and back.dtype == np.float32
    # 8-bit steps over each dimension's trained range: half a step off at most (+ clipping at the ends).
    refine = faiss_io.faiss_module().downcast_index(index.refine_index)
    step = np.max(faiss_io.faiss_module().vector_to_array(refine.sq.trained)[DIM:]) / 255
    assert np.percentile(np.abs(back - x), 99.9) <= step
    assert np.abs(np.linalg.norm(back, axis=1) - 1).max() < 0.01
    middle = faiss_index.reconstruct_rows(index, 12_345, 7)
    assert np.array_equal(middle, back[12_345:12_352])
    assert faiss_index.reconstruct_rows(index, COUNT, 0).shape == (0, DIM)
    with pytest.raises(IndexError):
        faiss_index.reconstruct_rows(index, COUNT - 3, 4)


def test_reconstruct_rows_refuses_an_index_without_row_ordered_vectors():
    faiss = faiss_io.faiss_module()
    index = faiss.index_factory(8, "IDMap,HNSW32,Flat", faiss.METRIC_INNER_PRODUCT)
    with pytest.raises(ValueError):
        faiss_index.reconstruct_rows(index, 0, 1)


def test_index_file_is_far_smaller_than_float32(compact):
    _, _, path, _, _, _, _ = compact
    per_vector = path.stat().st_size / COUNT
    # SQ8 (d) + PQ codes (d/16) + the list's id (8), plus the centroids and codebooks spread over 20k rows
    assert planning.ivfpq_bytes(COUNT, DIM) / COUNT == DIM + DIM // 16 + 8
    assert per_vector < 0.4 * 4 * DIM
    assert planning.ivfpq_bytes(10_000_000, 256) / 10_000_000 <= 300  # the 10^7 × 256 budget: + 96 B of items ≤ 400


def test_memory_mapped_read_searches_and_reconstructs_like_a_normal_read(compact):
    x, _, path, _, tuning, queries, _ = compact
    from tests.test_index_large import mapped

    read = faiss_io.read_index(path)
    mm = faiss_io.read_index(path, mmap=True)
    assert mapped(path)
    refine = faiss_io.faiss_module().downcast_index(mm.refine_index)
    assert not refine.codes.is_owned  # the 8-bit vectors are a view of the file
    for index in (read, mm):
        faiss_io.set_search_params(index, tuning.params)
    a_scores, a_rows = read.search(queries, 10)
    b_scores, b_rows = mm.search(queries, 10)
    assert np.array_equal(a_rows, b_rows) and np.array_equal(a_scores, b_scores)
    assert np.array_equal(faiss_index.reconstruct_rows(mm, 100, 50), faiss_index.reconstruct_rows(read, 100, 50))


def test_rebuild_from_the_decoded_vectors_searches_as_well(compact, tmp_path):
    x, _, path, plan, tuning, queries, exact = compact
    index = faiss_io.read_index(path)
    decoded = write_vectors(tmp_path / "decoded.npy", faiss_index.reconstruct_rows(index, 0, COUNT))
    again, again_tuning = faiss_index.build_and_tune(decoded, plan, seed=0)
    assert again_tuning.reached
    faiss_io.set_search_params(index, tuning.params)
    faiss_io.set_search_params(again, tuning.params)  # the same setting: the vectors are what differs
    original = recall_at_10(index.search(queries, 10)[1], exact)
    rebuilt = recall_at_10(again.search(queries, 10)[1], exact)  # against exact search over the float32 vectors
    assert abs(rebuilt - original) <= 0.01
    assert np.abs(faiss_index.reconstruct_rows(again, 0, COUNT) - x).max() < 0.02  # decoding twice drifts little


def test_updates_add_rows_in_order_and_ids_stay_rows(compact, tmp_path):
    x, vectors, path, _, tuning, _, _ = compact
    more = unit_vectors(500, DIM, seed=5, clusters=CLUSTERS, sample_seed=12)
    longer = write_vectors(tmp_path / "longer.npy", np.concatenate([x, more]))
    index = faiss_io.read_index(path)
    faiss_index.add_rows(index, longer, start_row=COUNT)
    assert index.ntotal == COUNT + 500
    faiss_io.set_search_params(index, tuning.params)
    _, rows = index.search(more, 1)
    assert np.mean(rows[:, 0] == np.arange(COUNT, COUNT + 500)) > 0.99
    assert np.abs(faiss_index.reconstruct_rows(index, COUNT, 500) - more).max() < 0.02
    with pytest.raises(ValueError):
        faiss_index.add_rows(index, longer, start_row=COUNT)  # those rows are in already: out of order
    with pytest.raises(ValueError):
        faiss_index.add_rows(faiss_io.read_index(path), longer, start_row=COUNT, skip=np.zeros(COUNT + 500, bool))


def test_auto_picks_ivfpq_past_the_hnsw_budget():
    first_past = next(n for n in range(6_000_000, 8_000_000, 10_000) if planning.hnsw_bytes(n, 256) > planning.MEMORY_BUDGET)
    below = planning.plan_index("auto", first_past - 10_000, 256)
    assert below.index_type == "hnsw"
    past = planning.plan_index("auto", first_past, 256)
    assert past.index_type == "ivfpq" and past.chosen_by == "auto" and past.factory.endswith(",Refine(SQ8)")
    huge = planning.plan_index("auto", 10_000_000, 256)
    assert huge == planning.IndexPlan("ivfpq", "IVF16384_HNSW32,PQ32,Refine(SQ8)", "auto")
    assert not planning.keeps_vectors(huge)


"""`siamcli cluster`: the methods on graphs with a known answer (one bad edge: components merge
two groups, the default method does not), the k-NN graph (exact and IVF), representatives and
cohesion, the scores against hand-computed values, the real CLI on images made here (clusters =
identity folders, --index without re-embedding, the calibrated threshold, --link-to), and every
bad input as one line with exit code 2."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import write_identity_folders, write_test_calibration
from PIL import Image
from scipy import sparse
from test_index_cli import invoke, one_line_error

from siamcli.cluster import graph as graph_module
from siamcli.cluster.graph import KnnGraph, knn_graph
from siamcli.cluster.methods import average_linkage, chinese_whispers, cluster_labels
from siamcli.cluster.options import DEFAULT_METHOD, ClusterMethod
from siamcli.cluster.score import score_clusters
from siamcli.cluster.summary import clusters_from_labels

METHODS = ClusterMethod.values()


def _graph(count: int, edges: dict[tuple[int, int], float]) -> KnnGraph:
    rows, columns = zip(*edges)
    values = list(edges.values())
    matrix = sparse.coo_array((values * 2, (rows + columns, columns + rows)), shape=(count, count)).tocsr()
    return KnnGraph(matrix, k=count - 1, factory="Flat", search_params={}, recall=1.0)


def _groups(labels) -> set[frozenset[int]]:
    return {frozenset(np.flatnonzero(labels == label).tolist()) for label in np.unique(labels)}


def _two_groups_edges() -> dict[tuple[int, int], float]:
    """Nodes 0–4 and 5–9: every pair within a group at 0.9, and one wrong pair (4, 5) at 0.7."""
    edges = {(a, b): 0.9 for group in (range(5), range(5, 10)) for a in group for b in group if a < b}
    edges[(4, 5)] = 0.7
    return edges


def _two_groups_and_a_bad_edge() -> KnnGraph:
    return _graph(10, _two_groups_edges())


TWO_GROUPS = {frozenset(range(5)), frozenset(range(5, 10))}


def test_one_bad_edge_joins_two_groups_into_one_component_but_not_under_the_default_method():
    graph = _two_groups_and_a_bad_edge()
    assert _groups(cluster_labels(graph, 0.5, "components")) == {frozenset(range(10))}
    assert _groups(cluster_labels(graph, 0.5, DEFAULT_METHOD.value)) == TWO_GROUPS
    for method in METHODS:
        if method != "components":
            assert _groups(cluster_labels(graph, 0.5, method)) == TWO_GROUPS, method
    # above the bad edge's similarity, every method separates the groups
    for method in METHODS:
        assert _groups(cluster_labels(graph, 0.8, method)) == TWO_GROUPS, method


def test_average_linkage_counts_a_missing_pair_as_dissimilar():
    # 0–1 at 0.9, 1–2 at 0.8, no edge 0–2: {0, 1} first, then {0, 1}–2 averages (0 + 0.8) / 2 = 0.4
    graph = _graph(3, {(0, 1): 0.9, (1, 2): 0.8})
    assert _groups(average_linkage(graph.above(0.5), 0.5)) == {frozenset({0, 1}), frozenset({2})}
    assert _groups(average_linkage(graph.above(0.5), 0.4)) == {frozenset({0, 1, 2})}  # 0.4 ≥ 0.4
    assert _groups(average_linkage(graph.above(0.95), 0.95)) == {frozenset({0}), frozenset({1}), frozenset({2})}


def test_chinese_whispers_leaves_an_image_without_edges_alone_and_repeats_for_a_seed():
    edges = _graph(13, {**_two_groups_edges(), (10, 11): 0.6}).above(0.5)  # node 12 has no edge
    labels = chinese_whispers(edges, seed=3)
    assert _groups(labels) == TWO_GROUPS | {frozenset({10, 11}), frozenset({12})}
    assert labels[12] == 12
    assert np.array_equal(chinese_whispers(edges, seed=3), labels)
    alone = _graph(3, {(0, 1): 0.9})
    assert _groups(chinese_whispers(alone.above(0.5))) == {frozenset({0, 1}), frozenset({2})}


def _clustered_vectors(groups: int, per_group: int, dim: int = 32, noise: float = 0.15, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((groups, dim))
    labels = np.repeat(np.arange(groups), per_group)
    vectors = centres[labels] / np.linalg.norm(centres[labels], axis=1, keepdims=True) + noise * rng.standard_normal((len(labels), dim)) / math.sqrt(dim)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32), labels


def test_a_bridge_image_chains_two_groups_in_the_real_knn_graph_only_for_components():
    """Two groups of 8 and one image halfway between them (similar to both): single linkage chains."""
    rng = np.random.default_rng(1)
    centres = np.linalg.qr(rng.standard_normal((16, 2)))[0].T  # two orthogonal unit directions
    members = [c + 0.25 * rng.standard_normal((8, 16)) / 4 for c in centres]
    bridge = (centres[0] + centres[1])[None] / math.sqrt(2)
    vectors = np.concatenate([*members, bridge]).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    graph = knn_graph(vectors, k=8, threshold=0.6)
    assert graph.factory == "Flat" and graph.recall == 1.0
    assert _groups(cluster_labels(graph, 0.6, "components")) == {frozenset(range(17))}
    for method in METHODS:
        if method != "components":
            groups = _groups(cluster_labels(graph, 0.6, method))
            assert not any({0, 8} <= group for group in groups), (method, groups)
            assert any(set(range(8)) <= group for group in groups) and any(set(range(8, 16)) <= group for group in groups), (method, groups)


def test_knn_graph_is_symmetric_without_self_edges_and_o_of_n_k_even_with_duplicates():
    vectors, _ = _clustered_vectors(5, 20)
    vectors = np.concatenate([vectors, vectors[:10]])  # exact duplicates tie with the row itself
    graph = knn_graph(vectors, k=6, threshold=0.5)
    matrix = graph.similarity
    assert (matrix != matrix.T).nnz == 0
    assert matrix.diagonal().max() == 0
    assert np.diff(matrix.indptr).min() >= 6 and matrix.nnz <= 2 * 6 * len(vectors)
    rows, columns = matrix.nonzero()
    assert np.allclose(matrix.data, np.einsum("ij,ij->i", vectors[rows], vectors[columns]), atol=1e-5)


def test_past_the_exact_limit_the_graph_comes_from_ivf_and_finds_the_same_clusters(monkeypatch):
    vectors, labels = _clustered_vectors(40, 50, dim=64)
    exact = cluster_labels(knn_graph(vectors, 10, 0.5), 0.5, DEFAULT_METHOD.value)
    monkeypatch.setattr(graph_module, "EXACT_MAX", 500)
    approximate = knn_graph(vectors, 10, 0.5)
    assert approximate.factory.startswith("IVF") and 1 <= approximate.search_params["lists_per_vector"] <= graph_module.MAX_LISTS
    assert approximate.recall >= graph_module.RECALL_TARGET
    assert _groups(cluster_labels(approximate, 0.5, DEFAULT_METHOD.value)) == _groups(exact) == _groups(labels)


def test_representative_is_the_medoid_and_cohesion_the_mean_pairwise_similarity():
    vectors, _ = _clustered_vectors(3, 7, noise=0.6, seed=4)
    labels = np.array([2] * 7 + [0] * 9 + [5] * 4 + [9])  # sizes 9, 7, 4, 1
    clusters = clusters_from_labels(labels, vectors)
    assert [c.size for c in clusters] == [9, 7, 4, 1] and [c.id for c in clusters] == [0, 1, 2, 3]
    for cluster in clusters[:3]:
        members = np.sort(cluster.members)
        similarity = vectors[members] @ vectors[members].T
        assert cluster.representative == members[np.argmax(similarity.sum(axis=1))]
        n = len(members)
        assert cluster.cohesion == pytest.approx((similarity.sum() - n) / (n * (n - 1)), abs=1e-5)
    assert clusters[3].cohesion is None and list(clusters[3].members) == [20]


def test_scores_against_hand_computed_values():
    identities = ["a", "a", "a", "b", "b"]
    labels = np.array([0, 0, 1, 1, 1])
    score = score_clusters(identities, labels)
    # pairs of one identity: aa ×3, bb ×1; put together: {a a} 1, {a b b} 3; both: {a a}, {b b}
    assert score["pairwise_precision"] == pytest.approx(2 / 4) and score["pairwise_recall"] == pytest.approx(2 / 4)
    assert score["pairwise_f1"] == pytest.approx(0.5)
    # per image: precision 1, 1, 1/3, 2/3, 2/3; recall 2/3, 2/3, 1/3, 1, 1
    assert score["bcubed_precision"] == pytest.approx((1 + 1 + 1 / 3 + 2 / 3 + 2 / 3) / 5)
    assert score["bcubed_recall"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 3 + 1 + 1) / 5)
    assert score["bcubed_f1"] == pytest.approx(11 / 15)
    # ARI: Σ C(n_ij, 2) = 2, rows Σ C(a_i, 2) = 4, columns 4, C(5, 2) = 10 → (2 − 1.6) / (4 − 1.6)
    assert score["adjusted_rand_index"] == pytest.approx(0.4 / 2.4)
    entropy = -(0.6 * math.log(0.6) + 0.4 * math.log(0.4))
    mutual = 0.4 * math.log(0.4 / 0.24) + 0.2 * math.log(0.2 / 0.36) + 0.4 * math.log(0.4 / 0.24)
    assert score["normalized_mutual_info"] == pytest.approx(mutual / entropy)
    assert (score["clusters"], score["identities"]) == (2, 2)
    singletons = score_clusters(identities, np.arange(5))
    assert (singletons["pairwise_precision"], singletons["pairwise_recall"], singletons["pairwise_f1"]) == (1.0, 0.0, 0.0)
    assert singletons["bcubed_precision"] == 1.0
    perfect = score_clusters(identities, np.array([7, 7, 7, 3, 3]))
    assert all(perfect[key] == pytest.approx(1.0) for key in perfect if key not in ("clusters", "identities"))


# ---- the real CLI --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def faces(tmp_path_factory, tiny_run):
    """(folder, run, threshold): 4 identity folders × 5 images and a copy of the untrained tiny run;
    the threshold is the midpoint between the least similar pair of one identity and the most
    similar pair of two, read from an index of the folder (the real `siamcli index`)."""
    from siamcli.index.store import load_index

    base = tmp_path_factory.mktemp("cluster")
    folder = write_identity_folders(base / "photos", identities=4, per_identity=5, size=40, seed=3)
    run = base / "run"
    run.mkdir()
    for name in ("model.keras", "config.json", "split.json"):
        shutil.copy(tiny_run / name, run / name)
    result = invoke("index", folder, "--model", run, "--out", base / "index")
    assert result.exit_code == 0, result.stderr
    loaded = load_index(base / "index")
    vectors = np.concatenate([s.vectors(np.arange(s.rows)) for s in loaded.segments])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    identities = np.array([item.label for item in loaded.items])
    similarity = vectors @ vectors.T
    same = identities[:, None] == identities[None, :]
    np.fill_diagonal(same, False)
    lowest_same = similarity[same].min()
    highest_different = similarity[~same & ~np.eye(len(vectors), dtype=bool)].max()
    assert lowest_same > highest_different, "the untrained model does not separate these identities"
    return folder, run, float((lowest_same + highest_different) / 2), base / "index"


def cluster_json(*args) -> dict:
    result = invoke("cluster", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _by_identity(folder: Path) -> set[frozenset[str]]:
    return {frozenset(str(p) for p in sub.iterdir()) for sub in folder.iterdir()}


@pytest.mark.parametrize("method", METHODS)
def test_cluster_finds_the_identity_folders_writes_csv_and_sheet_and_scores_perfectly(faces, tmp_path, method):
    folder, run, threshold, _ = faces
    out = tmp_path / "out"
    document = cluster_json(folder, "--model", run, "--threshold", threshold, "--method", method, "--score", "--out", out)
    assert document["method"] == method and document["threshold_source"] == "--threshold"
    assert document["threshold"] == pytest.approx(threshold, abs=1e-6) and document["images"] == 20
    assert {frozenset(c["paths"]) for c in document["clusters"]} == _by_identity(folder)
    assert document["cluster_count"] == 4 and document["singletons"] == 0
    for cluster in document["clusters"]:
        assert cluster["size"] == len(cluster["paths"]) == 5 and cluster["representative"] == cluster["paths"][0]
        assert 0 < cluster["cohesion"] <= 1
    score = document["score"]
    assert score["adjusted_rand_index"] == 1.0 and score["pairwise_f1"] == 1.0 and score["bcubed_f1"] == 1.0
    assert (score["clusters"], score["identities"]) == (4, 4)
    with open(out / "clusters.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(row["path"] for row in rows) == sorted(p for c in document["clusters"] for p in c["paths"])
    by_cluster = {c["id"]: set(c["paths"]) for c in document["clusters"]}
    assert all(row["path"] in by_cluster[int(row["cluster"])] for row in rows)
    with Image.open(out / "contact_sheet.png") as sheet:
        assert sheet.format == "PNG" and sheet.height > 4 * 96 and sheet.width > 5 * 96
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def test_cluster_on_an_index_reads_its_vectors_without_the_images(faces, tmp_path):
    folder, run, threshold, index = faces
    copy = Path(shutil.copytree(index, tmp_path / "index"))
    from_folder = cluster_json(folder, "--model", run, "--threshold", threshold, "--out", tmp_path / "a")
    moved = Path(shutil.move(str(folder), str(tmp_path / "gone")))  # not one image left to embed
    try:
        from_index = cluster_json("--index", copy, "--threshold", threshold, "--out", tmp_path / "b")
    finally:
        shutil.move(str(moved), str(folder))
    assert [set(c["paths"]) for c in from_index["clusters"]] == [set(c["paths"]) for c in from_folder["clusters"]]
    assert from_index["source"] == str(copy) and from_index["graph"]["factory"] == "Flat"


def test_the_runs_reliable_calibration_is_the_default_threshold(faces, tmp_path):
    folder, run, threshold, index = faces
    calibrated = tmp_path / "run"
    shutil.copytree(run, calibrated)
    write_test_calibration(calibrated, threshold=2 - 2 * threshold)  # a squared distance between unit vectors
    document = cluster_json(folder, "--model", calibrated, "--out", tmp_path / "out")
    assert document["threshold_source"] == "calibrated" and document["threshold"] == pytest.approx(threshold, abs=1e-6)
    assert {frozenset(c["paths"]) for c in document["clusters"]} == _by_identity(folder)
    write_test_calibration(calibrated, threshold=2 - 2 * threshold, reliable=False)
    one_line_error(invoke("cluster", folder, "--model", calibrated, "--out", tmp_path / "out"),
                   "not reliable", "--threshold 0.5", "siamcli evaluate --model", f"--model {calibrated}")
    write_test_calibration(calibrated, threshold=2 - 2 * threshold, model_sha256="0" * 64)
    one_line_error(invoke("cluster", folder, "--model", calibrated, "--out", tmp_path / "out"), "another model", "--threshold 0.5")


def test_without_a_threshold_one_line_names_both_fixes_with_every_option(faces, tmp_path):
    folder, run, _, index = faces
    out = tmp_path / "elsewhere"
    result = invoke("cluster", folder, "--model", run, "--method", "average", "--k", "7", "--out", out)
    one_line_error(result, "no threshold", f"siamcli cluster {folder} --model {run} --threshold 0.5 --method average --k 7 --out {out}",
                   f"siamcli evaluate --model {run}")
    assert not out.exists()  # nothing was written
    one_line_error(invoke("cluster", "--index", index, "--out", out), "no threshold", "--threshold 0.5")


def test_link_to_makes_a_folder_of_links_per_cluster_and_never_deletes_a_real_file(faces, tmp_path):
    folder, run, threshold, _ = faces
    links = tmp_path / "links"
    before = {p: p.read_bytes() for p in folder.rglob("*.png")}
    common = [folder, "--model", run, "--threshold", threshold, "--out", tmp_path / "out"]
    document = cluster_json(*common, "--link-to", links)
    folders = sorted(p for p in links.iterdir() if p.is_dir())
    assert len(folders) == document["cluster_count"] == 4 and document["links"] == str(links)
    for cluster, sub in zip(document["clusters"], folders):
        entries = sorted(sub.iterdir())
        assert all(entry.is_symlink() for entry in entries)
        assert [str(entry.resolve()) for entry in entries] == [str(Path(p).resolve()) for p in cluster["paths"]]
    assert {p: p.read_bytes() for p in folder.rglob("*.png")} == before  # originals untouched, still in place
    one_line_error(invoke("cluster", *common, "--link-to", links), "--force")
    cluster_json(*common, "--link-to", links, "--force")
    (links / "cluster-0000" / "notes.txt").write_text("mine")
    one_line_error(invoke("cluster", *common, "--link-to", links, "--force"), "holds more than the links")
    assert (links / "cluster-0000" / "notes.txt").read_text() == "mine"


def test_a_flat_folder_and_a_single_image_are_clustered_too(faces, tmp_path):
    folder, run, threshold, _ = faces
    flat = tmp_path / "flat"
    flat.mkdir()
    for identity in ("id_0", "id_1"):
        for image in (folder / identity).iterdir():
            shutil.copy(image, flat / f"{identity}-{image.name}")
    document = cluster_json(flat, "--model", run, "--threshold", threshold, "--out", tmp_path / "a")
    assert sorted(sorted(Path(p).name.split("-")[0] for p in c["paths"]) for c in document["clusters"]) == [["id_0"] * 5, ["id_1"] * 5]
    single = tmp_path / "single"
    single.mkdir()
    shutil.copy(folder / "id_0" / "img_0.png", single / "only.png")
    document = cluster_json(single, "--model", run, "--threshold", threshold, "--out", tmp_path / "b")
    assert document["cluster_count"] == document["singletons"] == 1 and document["k"] == 0
    assert document["clusters"] == [{"id": 0, "size": 1, "representative": str(single / "only.png"), "cohesion": None,
                                     "paths": [str(single / "only.png")]}]


def test_bad_inputs_are_one_line_with_exit_code_2(faces, tmp_path):
    folder, run, threshold, index = faces
    t = str(threshold)
    empty = tmp_path / "empty"
    empty.mkdir()
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    loose = tmp_path / "loose"
    shutil.copytree(folder, loose)
    shutil.copy(folder / "id_0" / "img_0.png", loose / "stray.png")
    cases = [
        ((), "give a FOLDER"),
        ((folder, "--index", index, "--threshold", t), "not both"),
        ((tmp_path / "missing", "--model", run, "--threshold", t), "does not exist"),
        ((a_file, "--model", run, "--threshold", t), "is not a folder"),
        ((empty, "--model", run, "--threshold", t, "--out", tmp_path / "o"), "holds no images"),
        ((folder, "--model", tmp_path / "norun", "--threshold", t), "not found"),
        ((folder, "--model", run, "--threshold", "1.5"), "between 0 and 1"),
        ((folder, "--model", run, "--threshold", "0"), "between 0 and 1"),
        ((folder, "--model", run, "--threshold", t, "--k", "0"), "--k must be"),
        ((folder, "--model", run, "--threshold", t, "--batch-size", "0"), "--batch-size"),
        ((folder, "--model", run, "--threshold", t, "--method", "kmeans"), "--method"),
        ((folder, "--model", run, "--threshold", t, "--force"), "--link-to"),
        ((folder, "--model", run, "--threshold", t, "--out", a_file), "is a file"),
        ((folder, "--model", run, "--threshold", t, "--out", folder / "clusters"), "inside"),
        ((folder, "--model", run, "--threshold", t, "--link-to", folder / "links"), "inside"),
        ((folder, "--model", run, "--threshold", t, "--link-to", a_file), "is a file"),
        ((loose, "--model", run, "--threshold", t, "--score", "--out", tmp_path / "o"), "--score"),
        (("--index", tmp_path / "noindex", "--threshold", t), "no index"),
        (("--index", index, "--model", tmp_path / "norun", "--threshold", t), "not found"),
    ]
    for args, needle in cases:
        one_line_error(invoke("cluster", *args), needle)
    assert not (folder / "clusters").exists() and not (folder / "links").exists()

"""`siamcli cluster` measured: unseen identities against an oracle and raw pixels; time and memory at scale.

    SIAMCLI_ATT_FACES=DIR nice -n 10 python benchmarks/bench_cluster.py faces  [--work DIR]
    nice -n 10 python benchmarks/bench_cluster.py digits [--work DIR]
    nice -n 10 python benchmarks/bench_cluster.py scale  [--sizes 100000,1000000] [--methods chinese-whispers,components,average]
    nice -n 10 python benchmarks/bench_cluster.py join   [--sizes 100000]

faces   ORL (read from $SIAMCLI_ATT_FACES only). A model is trained on s1–s20 with the demo's flags
        (`siamcli train … --image-size 64 --weights none --frozen-epochs 5 --finetune-epochs 2
        --steps-per-epoch 50 --val-fraction 0.5`) and `siamcli evaluate` calibrates its threshold on
        the 10 identities it held out. Method and k are *selected* on those 10 (never on the test
        set); the *test* is s21–s40, 20 identities never seen in training or selection, clustered
        at the calibrated threshold. Compared with an oracle told the true number of clusters
        (scikit-learn's AgglomerativeClustering(n_clusters=20): ward, its default, and average and
        complete linkage) on the same embeddings, and with raw pixels (mean-centred, unit length;
        the methods at the pixels' own EER threshold from the selection identities, and the oracle).
        Also scikit-learn's connectivity-constrained average linkage on the same k-NN graph, the
        library method the hand-written `average` replaces, and one end-to-end `siamcli cluster
        --score --json` run whose ARI must equal the in-process row.
digits  The same on scikit-learn's digits: a model trained on 0–4 (images written to --work), the
        test on 5–9 (5 clusters of ≈ 180). Five identities are too few for a reliable calibration
        (siamcli wants 10), so the threshold is the EER one `siamcli evaluate` measures on the
        digits 0–4 folder, passed as --threshold.
scale   Synthetic clustered unit vectors (256-d): clusters of 1–60 (geometric, mean ≈ 10) plus 10 %
        singletons, in sibling pairs whose centres are ≈ 0.6 similar, members ≈ 0.74 similar within
        a cluster; threshold 0.55. Each size runs in its own process (OMP_NUM_THREADS=2): wall and
        CPU seconds and peak resident memory from the kernel (wait4), the peak including the
        vectors themselves (1 GiB at 10^6), ARI against the generating clusters.

join    The graph's IVF self-join against FAISS's own IVF search on the same synthetic vectors: CPU
        seconds and recall of the exact top-k neighbours above the threshold (on 1,000 sampled
        vectors), for each number of lists per vector (self-join) and each nprobe (IVF search).

The work folder (default: a temporary one) keeps the trained runs, so a second run skips training.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TRAIN_FLAGS = ["--image-size", "64", "--weights", "none", "--frozen-epochs", "5", "--finetune-epochs", "2", "--steps-per-epoch", "50",
               "--seed", "0"]
KS = (5, 8, 10, 15, 20, 30)
METHODS = ("chinese-whispers", "average", "components")
SCALE_THRESHOLD = 0.55


def siamcli(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "siamcli", *map(str, args)], capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if result.returncode != 0:
        sys.exit(f"siamcli {' '.join(map(str, args))} failed:\n{result.stderr[-3000:]}")
    return result


def linked_folder(root: Path, source: Path, names: list[str]) -> Path:
    """root/<name> → source/<name> links: a dataset of some of the identities, no copies."""
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        if not (root / name).exists():
            (root / name).symlink_to((source / name).resolve(), target_is_directory=True)
    return root


def trained_run(train_dir: Path, run_dir: Path, val_fraction: str) -> Path:
    if not (run_dir / "model.keras").is_file():
        print(f"training {run_dir} on {train_dir} …", flush=True)
        siamcli("train", train_dir, "--out", run_dir, "--force", *TRAIN_FLAGS, "--val-fraction", val_fraction)
    else:
        print(f"reusing the trained run {run_dir}", flush=True)
    return run_dir


def embedded(run_dir: Path, folder: Path):
    """(identities, vectors, pixels): the folder's images through the run's model, and as raw pixels."""
    from siamcli.index.build import scan_gallery
    from siamcli.models.embed import embed, load_pixels, model_image_size
    from siamcli.models.embedding import load_embedding_model

    _, paths, identities = scan_gallery(str(folder))
    model = load_embedding_model(run_dir / "model.keras")
    result = embed(model, paths)
    assert len(result.kept) == len(paths), result.failures
    pixels = load_pixels(paths, model_image_size(model)).images.reshape(len(paths), -1).astype(np.float32)
    return np.array(identities), unit(result.vectors), pixels


def unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def eer_similarity(vectors: np.ndarray, identities) -> float:
    from siamcli.evaluation.verification import verification_metrics

    return 1.0 - verification_metrics(vectors, list(identities)).threshold / 2.0


def method_rows(vectors, identities, threshold: float, ks=KS) -> list[dict]:
    from siamcli.cluster.graph import knn_graph
    from siamcli.cluster.methods import cluster_labels
    from siamcli.cluster.score import score_clusters

    rows = []
    for k in ks:
        graph = knn_graph(vectors, k, threshold)
        for method in METHODS:
            labels = cluster_labels(graph, threshold, method)
            rows.append({"method": method, "k": k, **score_clusters(list(identities), labels)})
        rows.append({"method": "sklearn average (connectivity)", "k": k,
                     **score_clusters(list(identities), sklearn_connectivity_average(vectors, graph, threshold))})
    return rows


def sklearn_connectivity_average(vectors, graph, threshold: float) -> np.ndarray:
    """scikit-learn's average linkage restricted to the k-NN graph, cut at the threshold."""
    import warnings

    from sklearn.cluster import AgglomerativeClustering

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the connectivity matrix has N components": it completes it
        return AgglomerativeClustering(n_clusters=None, metric="cosine", linkage="average", connectivity=graph.similarity,
                                       distance_threshold=1.0 - threshold).fit_predict(vectors)


def oracle_rows(vectors, identities, name: str) -> list[dict]:
    from sklearn.cluster import AgglomerativeClustering

    from siamcli.cluster.score import score_clusters

    count = len(set(identities))
    rows = []
    for linkage in ("ward", "average", "complete"):
        model = AgglomerativeClustering(n_clusters=count, linkage=linkage, metric="euclidean" if linkage == "ward" else "cosine")
        rows.append({"method": f"oracle {linkage} (n_clusters={count})", "k": "all", "features": name,
                     **score_clusters(list(identities), model.fit_predict(vectors))})
    return rows


def table(rows: list[dict], title: str) -> str:
    lines = [f"\n{title}\n", "| features | method | k | ARI | NMI | pairwise F1 | BCubed F1 | clusters / identities |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row.get('features', 'embedding')} | {row['method']} | {row['k']} | {row['adjusted_rand_index']:.3f} | "
                     f"{row['normalized_mutual_info']:.3f} | {row['pairwise_f1']:.3f} | {row['bcubed_f1']:.3f} | "
                     f"{row['clusters']} / {row['identities']} |")
    return "\n".join(lines)


def unseen_identities(run_dir: Path, selection: Path | None, test: Path, threshold: float, source: str) -> dict:
    """Selection and test tables for one dataset; returns the rows for --json."""
    from siamcli.cluster.options import DEFAULT_K, DEFAULT_METHOD

    report = {"threshold": threshold, "threshold_source": source}
    pixel_threshold = None
    if selection is not None:
        ids, vectors, pixels = embedded(run_dir, selection)
        pixels = unit(pixels - pixels.mean(axis=0))
        pixel_threshold = eer_similarity(pixels, ids)
        report["selection"] = method_rows(vectors, ids, threshold)
        print(table(report["selection"], f"Selection: {len(set(ids))} held-out identities, {len(ids)} images, similarity ≥ {threshold:.4f} ({source})"))
    ids, vectors, pixels = embedded(run_dir, test)
    pixels = unit(pixels - pixels.mean(axis=0))
    if pixel_threshold is None:
        pixel_threshold = eer_similarity(pixels, ids)  # no selection set: the pixels' EER on the test set (said in the title)
    test_rows = method_rows(vectors, ids, threshold) + oracle_rows(vectors, ids, "embedding")
    pixel_rows = [{**row, "features": "raw pixels"} for row in method_rows(pixels, ids, pixel_threshold, ks=(DEFAULT_K,))
                  if row["method"] in METHODS] + oracle_rows(pixels, ids, "raw pixels")
    report["test"], report["pixels"], report["pixel_threshold"] = test_rows, pixel_rows, pixel_threshold
    print(table(test_rows, f"Test: {len(set(ids))} unseen identities, {len(ids)} images, similarity ≥ {threshold:.4f} ({source})"))
    print(table(pixel_rows, f"Raw pixels (mean-centred, unit length), similarity ≥ {pixel_threshold:.4f} (their EER threshold)"))
    default = next(r for r in test_rows if r["method"] == DEFAULT_METHOD.value and r["k"] == DEFAULT_K)
    oracle = next(r for r in test_rows if r["method"].startswith("oracle ward"))
    best = max((r for r in test_rows if r["method"].startswith("oracle")), key=lambda r: r["adjusted_rand_index"])
    ratio = default["adjusted_rand_index"] / oracle["adjusted_rand_index"]
    print(f"\ndefault ({DEFAULT_METHOD.value}, k = {DEFAULT_K}): ARI {default['adjusted_rand_index']:.3f} = {ratio:.2f} × the oracle's "
          f"{oracle['adjusted_rand_index']:.3f} (AgglomerativeClustering's default, ward); "
          f"{default['adjusted_rand_index'] / best['adjusted_rand_index']:.2f} × the best oracle ({best['method']}, "
          f"{best['adjusted_rand_index']:.3f}); target ≥ 0.9: {'met' if ratio >= 0.9 else 'NOT met'}")
    report["default_over_oracle"] = ratio
    return report


def end_to_end(test: Path, run_dir: Path, work: Path, *threshold: str) -> dict:
    started = time.perf_counter()
    result = siamcli("cluster", test, "--model", run_dir, *threshold, "--score", "--json", "--out", work / "clusters")
    document = json.loads(result.stdout)
    print(f"\n`siamcli cluster {test} --model {run_dir} {' '.join(threshold)} --score --json`: {document['method']}, k = {document['k']}, "
          f"ARI {document['score']['adjusted_rand_index']:.3f}, {document['cluster_count']} clusters, {time.perf_counter() - started:.0f} s "
          "(model loading included)")
    return {key: document[key] for key in ("method", "k", "threshold", "threshold_source", "cluster_count", "score")}


def faces(work: Path) -> dict:
    root = os.environ.get("SIAMCLI_ATT_FACES")
    if not root or not Path(root).is_dir():
        sys.exit("set SIAMCLI_ATT_FACES to the ORL faces folder (s1 … s40)")
    train = linked_folder(work / "orl_train", Path(root), [f"s{i}" for i in range(1, 21)])
    test = linked_folder(work / "orl_test", Path(root), [f"s{i}" for i in range(21, 41)])
    run_dir = trained_run(train, work / "orl_run", "0.5")
    if not (run_dir / "calibration.json").is_file():
        siamcli("evaluate", "--model", run_dir)
    from siamcli.calibration import read_calibration
    from siamcli.hashing import file_sha256

    calibration, why = read_calibration(run_dir, file_sha256(run_dir / "model.keras"))
    if calibration is None or not calibration.reliable:
        sys.exit(f"no reliable calibration in {run_dir}: {why or calibration.reason}")
    val = json.loads((run_dir / "split.json").read_text())["val"]
    selection = linked_folder(work / "orl_selection", Path(root), val)
    report = unseen_identities(run_dir, selection, test, calibration.similarity, f"calibrated EER on the {len(val)} held-out identities")
    report["cli"] = end_to_end(test, run_dir, work)
    return report


def digits(work: Path) -> dict:
    from PIL import Image
    from sklearn.datasets import load_digits

    data = load_digits()
    for i, (image, digit) in enumerate(zip(data.images, data.target)):
        folder = work / "digits" / ("train" if digit < 5 else "test") / f"digit{digit}"
        if not (folder / f"{i:04d}.png").exists():
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (image / 16.0 * 255).clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels).resize((32, 32), Image.BICUBIC).convert("RGB").save(folder / f"{i:04d}.png")
    run_dir = trained_run(work / "digits" / "train", work / "digits_run", "0.2")
    metrics = json.loads(siamcli("evaluate", "--model", run_dir, work / "digits" / "train", "--no-baselines", "--json").stdout)
    threshold = 1.0 - float(metrics["threshold"]) / 2.0  # a squared distance between unit vectors
    report = unseen_identities(run_dir, None, work / "digits" / "test", threshold, "EER on the digits 0–4, given as --threshold")
    report["cli"] = end_to_end(work / "digits" / "test", run_dir, work, "--threshold", f"{threshold:.6f}")
    return report


def synthetic(count: int, dim: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(count, dim) unit vectors and their generating cluster (module docstring)."""
    rng = np.random.default_rng(seed)
    sizes, total = [], 0
    while total < count:
        size = 1 if rng.random() < 0.1 else int(min(60, rng.geometric(0.1)))
        sizes.append(size)
        total += size
    sizes[-1] -= total - count
    parents = unit(rng.standard_normal(((len(sizes) + 1) // 2, dim)).astype(np.float32))
    centres = unit(parents[np.arange(len(sizes)) // 2] + 0.8 * rng.standard_normal((len(sizes), dim)).astype(np.float32) / np.sqrt(dim))
    labels = np.repeat(np.arange(len(sizes)), sizes).astype(np.int32)
    vectors = np.empty((count, dim), np.float32)
    for start in range(0, count, 65536):
        part = slice(start, start + 65536)
        vectors[part] = centres[labels[part]] + 0.6 * rng.standard_normal((len(labels[part]), dim)).astype(np.float32) / np.sqrt(dim)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors, labels


def scale_one(count: int, methods: list[str]) -> None:
    """In a child process: time every stage on `count` synthetic vectors; one JSON line on stdout."""
    import resource

    from siamcli.cluster.graph import knn_graph
    from siamcli.cluster.methods import cluster_labels
    from siamcli.cluster.options import DEFAULT_K
    from siamcli.cluster.score import score_clusters
    from siamcli.cluster.summary import clusters_from_labels

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    vectors, truth = synthetic(count)
    stages = {}
    wall, used = time.perf_counter(), cpu()
    graph = knn_graph(vectors, DEFAULT_K, SCALE_THRESHOLD)
    stages["graph"] = {"wall_s": time.perf_counter() - wall, "cpu_s": cpu() - used, "factory": graph.factory,
                       "params": graph.search_params, "recall": graph.recall, "edges": graph.similarity.nnz // 2}
    for method in methods:
        wall, used = time.perf_counter(), cpu()
        labels = cluster_labels(graph, SCALE_THRESHOLD, method)
        clusters = clusters_from_labels(labels, vectors)
        score = score_clusters(truth, labels)
        stages[method] = {"wall_s": time.perf_counter() - wall, "cpu_s": cpu() - used, "clusters": len(clusters),
                          "ari": score["adjusted_rand_index"], "bcubed_f1": score["bcubed_f1"]}
        del labels, clusters
    print(json.dumps({"count": count, "true_clusters": int(truth.max()) + 1, "stages": stages}))


def scale(sizes: list[int], methods: list[str]) -> list[dict]:
    results = []
    for count in sizes:
        load = os.getloadavg()[0]
        started = time.perf_counter()
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            child = subprocess.Popen([sys.executable, __file__, "scale-one", str(count), "--methods", ",".join(methods)], stdout=out,
                                     stderr=err, env={**os.environ, "OMP_NUM_THREADS": "2"})
            _, status, usage = os.wait4(child.pid, 0)
            out.seek(0)
            err.seek(0)
            if os.waitstatus_to_exitcode(status) != 0:
                sys.exit(err.read()[-3000:])
            result = json.loads(out.read().strip().splitlines()[-1])
        result.update(wall_s=time.perf_counter() - started, cpu_s=usage.ru_utime + usage.ru_stime, peak_mib=usage.ru_maxrss / 1024,
                      load_before=load, load_after=os.getloadavg()[0])
        results.append(result)
        graph = result["stages"]["graph"]
        print(f"\nN = {count:,} ({result['true_clusters']:,} generating clusters): total {result['wall_s']:.0f} s wall, "
              f"{result['cpu_s']:.0f} s CPU, peak {result['peak_mib']:.0f} MiB (load average {load:.1f} → {result['load_after']:.1f})")
        print(f"  graph ({graph['factory']}, {graph['params']}, recall {graph['recall']:.3f}, {graph['edges']:,} edges): "
              f"{graph['wall_s']:.0f} s wall, {graph['cpu_s']:.0f} s CPU")
        for method in methods:
            stage = result["stages"][method]
            print(f"  {method}: {stage['wall_s']:.0f} s wall, {stage['cpu_s']:.0f} s CPU, {stage['clusters']:,} clusters, "
                  f"ARI {stage['ari']:.3f}, BCubed F1 {stage['bcubed_f1']:.3f}")
    return results


def join_against_ivf_search(count: int, per_vector_settings: list[int], nprobe_settings: list[int]) -> list[dict]:
    """CPU seconds and recall: the graph's self-join at each lists-per-vector, FAISS IVF search at each nprobe."""
    import resource

    import faiss

    from siamcli.cluster import graph
    from siamcli.cluster.options import DEFAULT_K
    from siamcli.index import faiss_index

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    vectors, _ = synthetic(count)
    k, rng = DEFAULT_K, np.random.default_rng(1)
    rows = np.sort(rng.choice(count, 1000, replace=False))
    scores, exact = faiss.knn(vectors[rows], vectors, k + 1, metric=faiss.METRIC_INNER_PRODUCT)
    wanted = (scores >= SCALE_THRESHOLD) & (exact != rows[:, None])

    def recall(found: np.ndarray) -> float:
        return sum(len(set(exact[i][wanted[i]]) & set(found[i])) for i in range(len(rows))) / int(wanted.sum())

    results = []
    lists = faiss_index.nlist_for(count)
    used = cpu()
    ivf = faiss_index.create(faiss_index.IndexPlan("ivf", f"IVF{lists},Flat", "auto"), vectors.shape[1])
    ivf.train(vectors[np.sort(rng.choice(count, min(count, graph.TRAIN_POINTS_PER_LIST * lists), replace=False))])
    trained, used = cpu() - used, cpu()
    nearest = faiss.downcast_index(ivf.quantizer).search(vectors, graph.MAX_LISTS)[1].astype(np.int32)
    setup = trained + cpu() - used  # training and each vector's nearest lists
    for per_vector in per_vector_settings:
        used = cpu()
        found, _ = graph._join(vectors, nearest, per_vector, lists, k, graph.NO_EVENTS)
        results.append({"how": f"self-join IVF{lists}", "setting": f"{per_vector} lists a vector", "cpu_s": setup + cpu() - used,
                        "recall": recall(found[rows])})
    used = cpu()
    ivf.add(vectors)
    setup = trained + cpu() - used  # training and adding
    for nprobe in nprobe_settings:
        ivf.nprobe = nprobe
        used = cpu()
        found = np.concatenate([ivf.search(vectors[start:start + 8192], k + 1)[1] for start in range(0, count, 8192)])
        results.append({"how": f"FAISS IVF{lists},Flat search", "setting": f"nprobe {nprobe}", "cpu_s": setup + cpu() - used,
                        "recall": recall(found[rows])})
    print(f"\nN = {count:,}, k = {k}, threshold {SCALE_THRESHOLD}: CPU seconds including training and assignment (and adding, for the search)")
    print("| how | setting | CPU s | recall of above-threshold neighbours |\n|---|---|---|---|")
    for row in results:
        print(f"| {row['how']} | {row['setting']} | {row['cpu_s']:.1f} | {row['recall']:.3f} |")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["faces", "digits", "scale", "join", "scale-one"])
    parser.add_argument("count", nargs="?", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help="folder for the runs and data (kept; default: a temporary folder)")
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--methods", default="chinese-whispers,components,average")
    parser.add_argument("--lists-per-vector", default="1,2,4,8,16", help="join: the self-join settings")
    parser.add_argument("--nprobe", default="1,2,4,8,16,32", help="join: the IVF search settings")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    methods = args.methods.split(",")
    if args.what == "scale-one":
        scale_one(args.count, methods)
        return
    if args.what == "scale":
        results = scale([int(s) for s in args.sizes.split(",")], methods)
    elif args.what == "join":
        results = [join_against_ivf_search(int(s), [int(m) for m in args.lists_per_vector.split(",")], [int(p) for p in args.nprobe.split(",")])
                   for s in args.sizes.split(",")]
    else:
        work = args.work or Path(tempfile.mkdtemp(prefix="bench_cluster."))
        results = faces(work) if args.what == "faces" else digits(work)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()

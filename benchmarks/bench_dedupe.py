"""`siamcli dedupe` against imagededup on the same folders: duplicate pairs found, time, memory.

The folder (made by `make_folder`, seeded):
  * originals — every ORL / AT&T face (the folder named by SIAMCLI_ATT_FACES: 40 people, 10
    photos each, so every face has 9 hard negatives: other photos of the same person), then
    synthetic "scenes" to reach the size (3 photos a scene: one layout, each photo its own
    texture and a small shift, so they are hard negatives of each other too; 256×192 JPEG);
  * near duplicates, 20 % of the folder, of one of five kinds each (round robin), of a random
    original: `resize` (×0.5–0.8 or ×1.25–2), `jpeg` (quality 30–70), `crop` (5–10 % of each
    side's length, at a random offset), `brightness` (±10–20 %), `watermark` (a small
    semi-transparent "© 2026" label in a corner);
  * exact copies, 5 % of the folder, byte for byte, of random originals.
A true pair is two files made from one original (the original, its copies, its variants).

Scored per kind on the originals plus that kind's variants only (the pairs found among them
against the true ones), and on everything ("all"). Pairs: every pair inside one of siamcli's
groups (what --move-to acts on); every (key, listed file) of imagededup's map.

Each tool runs in its own process; wall time is that process's, peak memory the largest sum of
resident memory over it and its children (sampled every 20 ms from /proc). With --repeats N the
tools run in turn N times and the table shows median wall times (and each one). imagededup runs from
its own virtual environment (--imagededup-python; `pip install imagededup` there: it pulls torch),
with every hash method at its default max_distance_threshold (10 of 64 bits); its CNN method
needs torchvision's ImageNet weights, downloaded on first use, which cannot be fetched offline.

    SIAMCLI_ATT_FACES=/path/to/att_faces nice -n 10 python benchmarks/bench_dedupe.py \\
        [--sizes 1000 10000 100000] [--imagededup-python /tmp/idd-venv/bin/python] [--json out.json]
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path

import numpy as np

BENCHMARKS = Path(__file__).resolve().parent
KINDS = ("resize", "jpeg", "crop", "brightness", "watermark")
NEAR_SHARE, COPY_SHARE = 0.20, 0.05
SCENE_PHOTOS = 3
SCENE_SIZE = (256, 192)
IMAGEDEDUP_METHODS = ("PHash", "DHash", "AHash", "WHash")


# ---- the folder ---------------------------------------------------------------------------------
def variant(image, kind: str, rng: np.random.Generator):
    """A near duplicate of `image` (a PIL image) of this kind, and the extension to save it with."""
    from PIL import Image, ImageDraw, ImageEnhance

    width, height = image.size
    if kind == "resize":
        factor = rng.uniform(0.5, 0.8) if rng.random() < 0.5 else rng.uniform(1.25, 2.0)
        return image.resize((max(8, round(width * factor)), max(8, round(height * factor))), Image.BICUBIC), ".png"
    if kind == "jpeg":
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=int(rng.integers(30, 71)))
        return Image.open(io.BytesIO(buffer.getvalue())), ".jpg"
    if kind == "crop":
        cut_x, cut_y = round(width * rng.uniform(0.05, 0.10)), round(height * rng.uniform(0.05, 0.10))
        left, top = int(rng.integers(0, cut_x + 1)), int(rng.integers(0, cut_y + 1))
        return image.crop((left, top, width - (cut_x - left), height - (cut_y - top))), ".png"
    if kind == "brightness":
        factor = 1 + rng.choice([-1, 1]) * rng.uniform(0.10, 0.20)
        return ImageEnhance.Brightness(image).enhance(factor), ".png"
    if kind == "watermark":
        marked = image.convert("RGBA")
        layer = Image.new("RGBA", marked.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        box_w, box_h = max(12, width // 4), max(8, height // 12)
        corner = (width - box_w - 2, height - box_h - 2) if rng.random() < 0.5 else (2, 2)
        draw.rectangle((*corner, corner[0] + box_w, corner[1] + box_h), fill=(255, 255, 255, 110))
        draw.text((corner[0] + 2, corner[1]), "© 2026", fill=(0, 0, 0, 170))
        return Image.alpha_composite(marked, layer).convert(image.mode if image.mode in ("L", "RGB") else "RGB"), ".png"
    raise ValueError(kind)


def scene_photo(scene: int, photo: int):
    """Photo `photo` of synthetic scene `scene`: the scene's layout (coarse colours), shifted a
    little, under a texture of the photo's own."""
    from PIL import Image

    width, height = SCENE_SIZE
    layout_rng = np.random.default_rng([scene, 7])
    coarse = layout_rng.integers(0, 256, size=(4, 5, 3)).astype(np.uint8)
    margin = 0.06
    big = Image.fromarray(coarse).resize((round(width * (1 + 2 * margin)), round(height * (1 + 2 * margin))), Image.BICUBIC)
    rng = np.random.default_rng([scene, photo, 11])
    dx, dy = (rng.uniform(-0.03, 0.03, 2) + margin) * np.array([width, height])
    base = np.asarray(big.crop((round(dx), round(dy), round(dx) + width, round(dy) + height)), np.float32)
    texture = np.asarray(Image.fromarray(rng.integers(0, 256, (height // 8, width // 8, 3)).astype(np.uint8))
                         .resize((width, height), Image.BICUBIC), np.float32) - 128
    fine = rng.normal(0, 10, (height, width, 1))
    return Image.fromarray(np.clip(base + 0.45 * texture + fine, 0, 255).astype(np.uint8))


def make_folder(root: Path, size: int, att: Path, seed: int = 0, people: range = range(1, 41), first_scene: int = 0) -> dict:
    """Write the benchmark folder of `size` images under root (the ORL faces of `people`, then
    scenes from number `first_scene` on); returns its truth:
    {"kind": {relative path: kind or "original"/"copy"}, "source": {relative path: original's path}}."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    near, copies = round(size * NEAR_SHARE), round(size * COPY_SHARE)
    originals = _write_originals(root, size - near - copies, att, people, first_scene)
    kind = {path: "original" for path in originals}
    source = {path: path for path in originals}
    for n, original in enumerate(rng.choice(originals, near + copies)):
        with Image.open(root / original) as opened:
            image = opened.copy()
        stem = Path(original).with_suffix("").as_posix().replace("/", "_")
        if n < near:
            name = KINDS[n % len(KINDS)]
            made, ext = variant(image, name, rng)
            target = f"near/{name}/{stem}_{n}{ext}"
            (root / target).parent.mkdir(parents=True, exist_ok=True)
            made.save(root / target)
        else:
            name = "copy"
            target = f"copies/{stem}_{n}{Path(original).suffix}"
            (root / target).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / original, root / target)
        kind[target], source[target] = name, str(original)
    truth = {"kind": kind, "source": source}
    (root.parent / f"{root.name}.truth.json").write_text(json.dumps(truth))
    return truth


def _write_originals(root: Path, count: int, att: Path, people: range, first_scene: int) -> list[str]:
    faces = sorted((p for p in att.glob("s*/*.png") if int(p.parent.name[1:]) in people), key=lambda p: (int(p.parent.name[1:]), int(p.stem)))
    faces = faces[:count]
    paths = []
    for face in faces:
        target = f"orl/{face.parent.name}/{face.name}"
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(face, root / target)
        paths.append(target)
    for n in range(count - len(paths)):
        scene, photo = divmod(n, SCENE_PHOTOS)
        scene += first_scene
        target = f"scenes/{scene // 1000:04d}/{scene:07d}_{photo}.jpg"
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        scene_photo(scene, photo).save(root / target, quality=90)
        paths.append(target)
    return paths


# ---- scoring -------------------------------------------------------------------------------------
def true_pairs(truth: dict, keep) -> set[frozenset]:
    by_source: dict[str, list[str]] = {}
    for path, original in truth["source"].items():
        if keep(path):
            by_source.setdefault(original, []).append(path)
    return {frozenset(pair) for members in by_source.values() for pair in combinations(sorted(members), 2)}


def scores(found: set[frozenset], truth: dict) -> dict:
    """Precision, recall and F1 of `found` pairs, on everything and per kind (the originals
    plus that kind's files only)."""
    rows = {}
    for name in ("all", *KINDS, "copy"):
        def keep(path, name=name):
            return name == "all" or truth["kind"][path] in ("original", name)
        expected = true_pairs(truth, keep)
        got = {pair for pair in found if all(keep(path) for path in pair)}
        hits = len(got & expected)
        precision = hits / len(got) if got else 1.0
        recall = hits / len(expected) if expected else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows[name] = {"precision": precision, "recall": recall, "f1": f1, "pairs": len(expected), "found": len(got)}
    return rows


# ---- choosing the thresholds ---------------------------------------------------------------------
def calibrate(folder: Path, truth: dict, radii=range(6, 16), aligned=(0.96, 0.97, 0.975, 0.98, 0.985, 0.99, 0.995)) -> list[dict]:
    """F1 of all pairs (every kind) for each hash radius, without and with the crop check at each
    aligned-similarity threshold: siamcli's own steps (keys, pairs, groups), the scores computed once."""
    from siamcli.data.scan import scan_folder
    from siamcli.dedupe import pairs as near
    from siamcli.dedupe.align import aligned_similarity
    from siamcli.dedupe.groups import components
    from siamcli.dedupe.keys import THUMB_SIDE, read_keys

    paths = [item.path for item in scan_folder(folder, labelled=False).items]
    thumbs = np.zeros((len(paths), THUMB_SIDE, THUMB_SIDE), np.uint8)
    keys = read_keys(paths, perceptual=True, workers=os.cpu_count() or 1, thumbs=thumbs)
    names = [os.path.relpath(path, folder) for path in keys.paths]
    exact = near.exact_pairs(keys.sha256)
    first = near.leaders(keys.count, exact)
    hashed = near.lifted(near.hash_pairs(keys.codes[first], radius=max(radii)), first)
    bits = np.unpackbits(keys.codes, axis=1)
    distance = (bits[hashed[0]] != bits[hashed[1]]).sum(axis=1)
    candidates = near.lifted(near.nearest_pairs(near.layout_vectors(thumbs[first]), near.LAYOUT_NEIGHBOURS, minimum=near.LAYOUT_MIN)[:2], first)
    similarity = aligned_similarity(thumbs, *candidates)
    rows = []
    for radius in radii:
        close = distance <= radius
        for threshold in (None, *aligned):
            chosen = [exact, (hashed[0][close], hashed[1][close])]
            if threshold is not None:
                keep = similarity >= threshold
                chosen.append((candidates[0][keep], candidates[1][keep]))
            found = set()
            for members in components(keys.count, *near.joined(chosen)):
                found.update(frozenset(pair) for pair in combinations((names[r] for r in members), 2))
            got = scores(found, truth)
            rows.append({"radius": radius, "aligned_min": threshold, **{name: got[name] for name in ("all", *KINDS)}})
    return rows


def compare_hashes(folder: Path, truth: dict, sizes=(8, 16)) -> list[dict]:
    """For each of imagehash's hashes at each size: F1 of all pairs (hash only, no crop check) at
    its best radius, with that radius's per-kind recall; every pair compared (a small folder)."""
    import imagehash
    from PIL import Image

    from siamcli.data.scan import scan_folder
    from siamcli.dedupe.groups import components

    paths = [item.path for item in scan_folder(folder, labelled=False).items]
    names = [os.path.relpath(path, folder) for path in paths]
    greys = [Image.open(path).convert("L") for path in paths]
    rows = []
    for name, function in (("phash", imagehash.phash), ("dhash", imagehash.dhash), ("ahash", imagehash.average_hash),
                           ("whash", imagehash.whash)):
        for size in sizes:
            bits = np.array([function(grey, size).hash.reshape(-1) for grey in greys], np.uint8)
            distance = np.concatenate([(bits[start:start + 256, None, :] != bits[None, :, :]).sum(axis=2)
                                       for start in range(0, len(bits), 256)])
            best = None
            for radius in range(0, bits.shape[1] // 4 + 1, max(1, bits.shape[1] // 64)):
                first, second = np.nonzero(np.triu(distance <= radius, k=1))
                found = set()
                for members in components(len(paths), first, second):
                    found.update(frozenset(pair) for pair in combinations((names[r] for r in members), 2))
                got = scores(found, truth)
                if best is None or got["all"]["f1"] > best["all"]["f1"]:
                    best = {"radius": f"{name}{size} ≤ {radius}", "aligned_min": "", **got}
            rows.append(best)
    return rows


def calibrate_model(folder: Path, truth: dict, run: Path, thresholds=(0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998)) -> list[dict]:
    """F1 of all pairs for each cosine threshold of the run's embeddings (siamcli's own steps)."""
    from siamcli.data.scan import scan_folder
    from siamcli.dedupe import pairs as near
    from siamcli.dedupe.groups import components
    from siamcli.dedupe.keys import read_keys
    from siamcli.models.embed import embed
    from siamcli.models.embedding import load_embedding_model

    keys = read_keys([item.path for item in scan_folder(folder, labelled=False).items], perceptual=False)
    names = [os.path.relpath(path, folder) for path in keys.paths]
    exact = near.exact_pairs(keys.sha256)
    vectors = embed(load_embedding_model(run / "model.keras"), keys.paths).vectors
    first, second, similarity = near.nearest_pairs(vectors, near.NEIGHBOURS)
    rows = []
    for threshold in thresholds:
        keep = similarity >= threshold
        found = set()
        for members in components(keys.count, *near.joined([exact, (first[keep], second[keep])])):
            found.update(frozenset(pair) for pair in combinations((names[r] for r in members), 2))
        got = scores(found, truth)
        rows.append({"radius": "–", "aligned_min": f"cosine ≥ {threshold}", **{name: got[name] for name in ("all", *KINDS)}})
    return rows


def calibration_table(rows: list[dict]) -> str:
    lines = ["| hash radius | aligned min | F1 all | precision | recall | " + " | ".join(f"recall {k}" for k in KINDS) + " |",
             "|---" * (5 + len(KINDS)) + "|"]
    for row in rows:
        a = row["all"]
        lines.append(f"| {row['radius']} | {row['aligned_min'] or '(no crop check)'} | {a['f1']:.3f} | {a['precision']:.3f} | "
                     f"{a['recall']:.3f} | " + " | ".join(f"{row[k]['recall']:.3f}" for k in KINDS) + " |")
    return "\n".join(lines)


# ---- running the tools ---------------------------------------------------------------------------
def measured(command: list[str]) -> tuple[subprocess.CompletedProcess, float, float]:
    """(the finished process, wall seconds, peak MiB of its process tree's resident memory)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        peak = 0
        while child.poll() is None:
            peak = max(peak, _tree_rss_kib(child.pid))
            time.sleep(0.02)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        done = subprocess.CompletedProcess(command, child.returncode, out.read(), err.read())
    return done, wall, peak / 1024


def _tree_rss_kib(pid: int) -> int:
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
            for task in Path(f"/proc/{current}/task").iterdir():
                stack.extend(int(child) for child in (task / "children").read_text().split())
        except (OSError, StopIteration, ValueError):
            continue
    return total


def run_siamcli(folder: Path, extra: list[str]) -> dict:
    done, wall, peak = measured([sys.executable, "-m", "siamcli", "dedupe", str(folder), "--json", *extra])
    if done.returncode:
        sys.exit(f"siamcli dedupe failed: {done.stderr[-2000:]}")
    report = json.loads(done.stdout)
    found = set()
    for group in report["groups"]:
        members = [os.path.relpath(path, folder) for path in group["paths"]]
        found.update(frozenset(pair) for pair in combinations(members, 2))
    return {"tool": "siamcli dedupe" + (" " + " ".join(extra) if extra else ""), "found": found, "seconds": wall, "peak_mib": peak,
            "method": report.get("method")}


def run_imagededup(python: str, folder: Path, method: str, timeout: float) -> dict:
    """imagededup's `method` on the folder, in its own interpreter; a failure or a timeout is reported, not fatal."""
    code = ("import json, sys\nfrom imagededup import methods\n"
            f"found = getattr(methods, {method!r})(verbose=False).find_duplicates(image_dir=sys.argv[1], recursive=True)\n"
            "print(json.dumps(found))\n")
    try:
        done, wall, peak = measured(["timeout", str(int(timeout)), python, "-c", code, str(folder)])
    except FileNotFoundError as exc:
        return {"tool": f"imagededup {method}", "error": f"cannot run {python}: {exc}"}
    if done.returncode:
        why = "ran past the time limit" if done.returncode == 124 else (done.stderr.strip().splitlines() or ["failed"])[-1][:200]
        return {"tool": f"imagededup {method}", "error": why, "seconds": wall, "peak_mib": peak}
    duplicates = json.loads(done.stdout.strip().splitlines()[-1])
    found = {frozenset((key, other)) for key, others in duplicates.items() for other in others if other != key}
    return {"tool": f"imagededup {method}", "found": found, "seconds": wall, "peak_mib": peak}


def _repeated(tools: list, repeats: int) -> list[dict]:
    """Each tool's row, run `repeats` times in turn (tool 1, 2, …, then again: the machine's load
    weighs on all alike); its wall time and peak memory are the medians, every time listed."""
    runs = [[tool() for tool in tools] for _ in range(repeats)]
    rows = []
    for position in range(len(tools)):
        tries = [run[position] for run in runs]
        row = tries[0]
        if "error" not in row and repeats > 1:
            row["times"] = [t["seconds"] for t in tries]
            row["seconds"] = float(np.median(row["times"]))
            row["peak_mib"] = float(np.median([t["peak_mib"] for t in tries]))
        rows.append(row)
    return rows


# ---- the tables ----------------------------------------------------------------------------------
def table(size: int, rows: list[dict], truth: dict) -> str:
    names = ("all", *KINDS, "copy")
    lines = [f"### {size:,} images", "",
             "| tool | " + " | ".join(f"F1 {n}" for n in names) + " | precision all | recall all | wall s | peak MiB |",
             "|---" * (len(names) + 5) + "|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['tool']} | did not run: {row['error']} |" + " |" * (len(names) + 3))
            continue
        got = row["scores"]
        cells = " | ".join(f"{got[n]['f1']:.3f}" for n in names)
        times = f" ({', '.join(f'{t:.1f}' for t in row['times'])})" if "times" in row else ""
        lines.append(f"| {row['tool']} | {cells} | {got['all']['precision']:.3f} | {got['all']['recall']:.3f} | "
                     f"{row['seconds']:.1f}{times} | {row['peak_mib']:.0f} |")
    pairs = scores(set(), truth)
    lines += ["", "true pairs: " + ", ".join(f"{n} {pairs[n]['pairs']}" for n in names)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--imagededup-python", default="/tmp/idd-venv/bin/python")
    parser.add_argument("--imagededup-max-size", type=int, default=100000, help="skip imagededup above this size")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds one imagededup method may take")
    parser.add_argument("--work", type=Path, default=None, help="where to write the folders (kept; default: a new temporary folder)")
    parser.add_argument("--siamcli-runs", nargs="+", default=["", "--no-crops"],
                        help="siamcli dedupe runs, each its extra options as one string (default: the default, and --no-crops)")
    parser.add_argument("--imagededup-methods", nargs="+", default=list(IMAGEDEDUP_METHODS), choices=IMAGEDEDUP_METHODS)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each tool, in turn; the table shows the median wall time, and each")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--calibrate", type=int, default=0, metavar="N",
                        help="instead: the thresholds' table on a folder of N images from ORL s1–s20 and other scenes (seed + 1)")
    parser.add_argument("--calibrate-model", type=Path, default=None, metavar="RUN",
                        help="instead: the cosine thresholds' table for RUN (trained on ORL s1–s20) on 1000 images: ORL s21–s40, other scenes, variants")
    parser.add_argument("--compare-hashes", type=int, default=0, metavar="N",
                        help="instead: imagehash's hashes compared (best F1 of each) on the calibration folder of N images")
    args = parser.parse_args()
    att = Path(os.environ.get("SIAMCLI_ATT_FACES", ""))
    if not all((att / f"s{i}").is_dir() for i in range(1, 41)):
        sys.exit("set SIAMCLI_ATT_FACES to the att_faces folder (s1 … s40)")
    work = args.work or Path(tempfile.mkdtemp(prefix="siamcli-bench-dedupe-"))
    if args.calibrate_model:
        folder = work / "calibration_model"
        shutil.rmtree(folder, ignore_errors=True)
        truth = make_folder(folder, 1000, att, args.seed + 2, people=range(21, 41), first_scene=2_000_000)
        print(calibration_table(calibrate_model(folder, truth, args.calibrate_model)))
        return
    if args.calibrate or args.compare_hashes:
        size = args.calibrate or args.compare_hashes
        folder = work / f"calibration_{size}"
        shutil.rmtree(folder, ignore_errors=True)
        truth = make_folder(folder, size, att, args.seed + 1, people=range(1, 21), first_scene=1_000_000)
        print(calibration_table(calibrate(folder, truth) if args.calibrate else compare_hashes(folder, truth)))
        return
    results = []
    for size in args.sizes:
        folder = work / f"folder_{size}"
        truth_file = work / f"folder_{size}.truth.json"
        if truth_file.is_file():
            truth = json.loads(truth_file.read_text())
        else:
            shutil.rmtree(folder, ignore_errors=True)
            truth = make_folder(folder, size, att, args.seed)
        tools = [functools.partial(run_siamcli, folder, options.split()) for options in args.siamcli_runs]
        if size <= args.imagededup_max_size:
            tools += [functools.partial(run_imagededup, args.imagededup_python, folder, method, args.timeout)
                      for method in args.imagededup_methods]
        rows = _repeated(tools, args.repeats)
        if size > args.imagededup_max_size:
            rows += [{"tool": f"imagededup {m}", "error": f"not run above --imagededup-max-size {args.imagededup_max_size}"}
                     for m in args.imagededup_methods]
        for row in rows:
            if "found" in row:
                row["scores"] = scores(row.pop("found"), truth)
        print(table(size, rows, truth), flush=True)
        print(f"load average after the runs (1, 5, 15 min): {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs\n",
              flush=True)
        results.append({"size": size, "rows": rows})
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

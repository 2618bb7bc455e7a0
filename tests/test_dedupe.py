"""`siamcli dedupe` through the real CLI, on image files made here.

The folder: synthetic scenes, three photos each (one layout, each photo its own texture and a
small shift: other photos of the same scene, which are NOT duplicates), one photo with a near
duplicate of every known kind (resize, JPEG quality 30–70, a 5–10 % crop, brightness ±20 %, a
small watermark: the benchmark's own generator, benchmarks/bench_dedupe.py), another with a crop
only, and an exact copy of a third in a sub-folder. The groups must be exactly those.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_cli
from test_index_cli import invoke, one_line_error

sys.path.insert(0, str(REPO / "benchmarks"))
from bench_dedupe import KINDS, scene_photo, variant  # noqa: E402  (the known kinds, said once there)

SCENES = 4


def write_folder(root: Path) -> list[set[str]]:
    """The folder above; returns its true groups (paths relative to root)."""
    rng = np.random.default_rng(0)
    for scene in range(SCENES):
        for photo in range(3):
            (root / f"scene{scene}").mkdir(parents=True, exist_ok=True)
            scene_photo(scene, photo).save(root / f"scene{scene}" / f"photo{photo}.jpg", quality=90)
    near = root / "near"
    near.mkdir()
    original = scene_photo(0, 0)
    names = {"scene0/photo0.jpg"}
    for kind in KINDS:
        image, ext = variant(original, kind, rng)
        image.save(near / f"{kind}{ext}")
        names.add(f"near/{kind}{ext}")
    cropped, ext = variant(scene_photo(2, 2), "crop", rng)
    cropped.save(near / f"second_crop{ext}")
    (root / "copies").mkdir()
    shutil.copyfile(root / "scene1" / "photo1.jpg", root / "copies" / "photo1 copy.jpg")
    return [names, {"scene2/photo2.jpg", f"near/second_crop{ext}"}, {"scene1/photo1.jpg", "copies/photo1 copy.jpg"}]


@pytest.fixture
def folder(tmp_path) -> tuple[Path, list[set[str]]]:
    root = tmp_path / "photos"
    return root, write_folder(root)


def error_after_progress(result, *needles: str) -> None:
    """An error found after the search began: the progress lines, then one error line (exit 2, no traceback)."""
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert lines[-1].startswith("error: ") and sum(line.startswith("error") for line in lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[-1], result.stderr


def dedupe_json(*args) -> dict:
    result = invoke("dedupe", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def relative(root: Path, paths) -> set[str]:
    return {Path(p).relative_to(root).as_posix() for p in paths}


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_groups_are_exactly_the_duplicates_and_a_dry_run_moves_nothing(folder):
    root, truth = folder
    before = snapshot(root)
    answer = dedupe_json(root)
    found = [relative(root, group["paths"]) for group in answer["groups"]]
    assert sorted(map(sorted, found)) == sorted(map(sorted, truth))  # other photos of a scene: never grouped
    kinds = {frozenset(relative(root, g["paths"])): g["kind"] for g in answer["groups"]}
    assert kinds[frozenset(truth[2])] == "exact" and kinds[frozenset(truth[0])] == kinds[frozenset(truth[1])] == "near"
    assert snapshot(root) == before
    text = invoke("dedupe", root)
    assert text.exit_code == 0, text.stderr
    summary = text.stdout.strip().splitlines()[-1]
    assert summary.startswith("3 group(s) (1 exact, 2 near) among 19 images: 7 file(s) to move; dry run, nothing moved")
    assert f"`siamcli dedupe {root} --keep largest --move-to DIR`" in summary  # the hint repeats the options
    assert snapshot(root) == before


def test_without_the_crop_check_crops_are_not_found(folder):
    root, truth = folder
    found = [relative(root, g["paths"]) for g in dedupe_json(root, "--no-crops")["groups"]]
    assert truth[2] in found and truth[0] - {"near/crop.png"} in found and truth[1] not in found


def test_json_contract(folder):
    root, _ = folder
    answer = dedupe_json(root)
    assert {"groups", "counts", "threshold", "method", "pairs", "skipped", "folder"} <= set(answer)
    assert answer["method"] == "perceptual"
    assert answer["threshold"] == {"hash": "dhash16", "hash_radius": 14, "aligned_min": 0.975}
    assert answer["counts"] == {"images": 19, "groups": 3, "exact_groups": 1, "near_groups": 2, "to_move": 7, "skipped": 0}
    for group in answer["groups"]:
        assert set(group) == {"paths", "keep", "kind"} and group["keep"] == group["paths"][0] and group["kind"] in ("exact", "near")
        assert all(isinstance(path, str) and os.path.isfile(path) for path in group["paths"])


def test_keep_rules_largest_oldest_first(folder):
    root, truth = folder
    groups = {frozenset(relative(root, g["paths"])): g["keep"] for g in dedupe_json(root)["groups"]}
    # largest: most pixels — the ×1.25–2 resize, if that is what the resize kind drew, else the original
    from PIL import Image

    members = sorted(truth[0])
    pixels = {m: np.prod(Image.open(root / m).size) for m in members}
    assert relative(root, [groups[frozenset(truth[0])]]) == {max(members, key=lambda m: (pixels[m], (root / m).stat().st_size))}
    # among exact copies (equal pixels and bytes) the first by path
    assert relative(root, [groups[frozenset(truth[2])]]) == {"copies/photo1 copy.jpg"}
    os.utime(root / "scene1" / "photo1.jpg", ns=(10**18, 10**18))
    os.utime(root / "copies" / "photo1 copy.jpg", ns=(2 * 10**18, 2 * 10**18))
    oldest = {frozenset(relative(root, g["paths"])): g["keep"] for g in dedupe_json(root, "--keep", "oldest")["groups"]}
    assert relative(root, [oldest[frozenset(truth[2])]]) == {"scene1/photo1.jpg"}
    first = {frozenset(relative(root, g["paths"])): g["keep"] for g in dedupe_json(root, "--keep", "first")["groups"]}
    assert relative(root, [first[frozenset(truth[0])]]) == {"near/brightness.png"}


def test_move_to_then_undo_restores_every_file_byte_for_byte(folder, tmp_path):
    root, truth = folder
    before = snapshot(root)
    answer = dedupe_json(root, "--move-to", tmp_path / "dupes")
    moved = {Path(m["from"]).relative_to(root.resolve()).as_posix() for m in answer["moved"]}
    kept = {Path(g["keep"]).relative_to(root).as_posix() for g in answer["groups"]}
    assert moved == set().union(*truth) - kept and len(moved) == 7
    for path in moved:  # each at DIR/<its path under FOLDER>, its bytes unchanged, gone from FOLDER
        assert (tmp_path / "dupes" / path).read_bytes() == before[path] and not (root / path).exists()
    record = Path(answer["record"])
    assert record.parent == (tmp_path / "dupes").resolve() and record.name.startswith("dedupe-record-")
    entries = json.loads(record.read_text())["moves"]
    assert {e["state"] for e in entries} == {"moved"} and len(entries) == 7
    undone = invoke("dedupe", "--undo", record, "--json")
    assert undone.exit_code == 0, undone.stderr
    assert len(json.loads(undone.stdout)["restored"]) == 7
    assert snapshot(root) == before
    assert not [p for p in (tmp_path / "dupes").rglob("*") if p.is_file() and p != record]
    again = invoke("dedupe", "--undo", record)  # nothing left to restore: says so, changes nothing
    assert again.exit_code == 0 and "restored 0 file(s)" in again.stdout and "7 were back already" in again.stdout
    assert snapshot(root) == before


def test_move_to_never_overwrites(folder, tmp_path):
    root, _ = folder
    before = snapshot(root)
    taken = tmp_path / "dupes" / "copies" / "photo1 copy.jpg"
    plan = dedupe_json(root, "--keep", "oldest")  # which copy moves depends on times: make both targets taken
    for group in plan["groups"]:
        for path in group["paths"][1:]:
            target = tmp_path / "dupes" / Path(path).relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"someone else's file")
    result = invoke("dedupe", root, "--keep", "oldest", "--move-to", tmp_path / "dupes")
    error_after_progress(result, "--move-to would overwrite", "nothing was moved")
    assert snapshot(root) == before and taken.read_bytes() == b"someone else's file"


def test_undo_refuses_when_a_restore_would_overwrite_a_file(folder, tmp_path):
    root, _ = folder
    answer = dedupe_json(root, "--move-to", tmp_path / "dupes")
    first = Path(answer["moved"][0]["from"])
    first.write_bytes(b"a new file at the old name")
    result = invoke("dedupe", "--undo", answer["record"])
    one_line_error(result, "cannot undo", str(first), "nothing was restored")
    assert first.read_bytes() == b"a new file at the old name"
    assert all(Path(m["to"]).exists() for m in answer["moved"])  # every moved file still in DIR


def test_a_move_that_fails_halfway_leaves_a_record_that_undo_uses(folder, tmp_path):
    root, _ = folder
    before = snapshot(root)
    plan = dedupe_json(root)
    copy = next(g for g in plan["groups"] if g["kind"] == "exact")  # the last group: moved after the others
    blocked = Path(copy["paths"][1]).relative_to(root).parts[0]
    (tmp_path / "dupes").mkdir()
    (tmp_path / "dupes" / blocked).write_bytes(b"a file where the folder should go")  # so its folder cannot be made
    result = invoke("dedupe", root, "--move-to", tmp_path / "dupes")
    error_after_progress(result, "cannot move", "undo with `siamcli dedupe --undo")
    record = next((tmp_path / "dupes").glob("dedupe-record-*.json"))
    states = [m["state"] for m in json.loads(record.read_text())["moves"]]
    assert "moved" in states and "planned" in states  # what did move, and what did not
    undone = invoke("dedupe", "--undo", record)
    assert undone.exit_code == 0, undone.stderr
    assert snapshot(root) == before


def test_undo_finishes_a_move_stopped_between_its_link_and_its_unlink(folder, tmp_path):
    """A kill between the two steps of a move leaves the file under both names and the record saying
    'planned' (it is rewritten only after each step): undo must take the target name away, nothing else."""
    root, _ = folder
    before = snapshot(root)
    answer = dedupe_json(root, "--move-to", tmp_path / "dupes")
    record = Path(answer["record"])
    data = json.loads(record.read_text())
    half = data["moves"][0]
    os.link(half["to"], half["from"])  # the state at the kill: both names, one file
    half["state"] = "planned"
    record.write_text(json.dumps(data))
    undone = invoke("dedupe", "--undo", record)
    assert undone.exit_code == 0, undone.stderr
    assert snapshot(root) == before and not Path(half["to"]).exists()


def test_a_file_that_does_not_decode_is_skipped_and_named(folder):
    root, truth = folder
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a JPEG")
    result = invoke("dedupe", root, "--json")
    assert result.exit_code == 0, result.stderr
    answer = json.loads(result.stdout)
    assert [s["path"] for s in answer["skipped"]] == [str(root / "broken.jpg")] and answer["counts"]["skipped"] == 1
    assert "warning: skipped 1 file(s): " in result.stderr and "broken.jpg" in result.stderr
    assert sorted(map(sorted, (relative(root, g["paths"]) for g in answer["groups"]))) == sorted(map(sorted, truth))


def test_a_file_in_a_linked_folder_moves_by_its_name_under_folder(folder, tmp_path):
    root, _ = folder
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copyfile(root / "scene3" / "photo0.jpg", elsewhere / "photo0 again.jpg")
    (root / "zlinked").symlink_to(elsewhere, target_is_directory=True)  # after scene3 by path: the one that moves
    answer = dedupe_json(root, "--keep", "first", "--move-to", tmp_path / "dupes")
    assert {"from": str(root / "zlinked" / "photo0 again.jpg"), "to": str(tmp_path / "dupes" / "zlinked" / "photo0 again.jpg")} \
        in answer["moved"]
    assert not (elsewhere / "photo0 again.jpg").exists() and (tmp_path / "dupes" / "zlinked" / "photo0 again.jpg").is_file()
    undone = invoke("dedupe", "--undo", answer["record"])
    assert undone.exit_code == 0, undone.stderr
    assert (elsewhere / "photo0 again.jpg").read_bytes() == (root / "scene3" / "photo0.jpg").read_bytes()


def test_imagededup_json_is_imagededups_map(folder, tmp_path):
    root, truth = folder
    target = tmp_path / "map.json"
    dedupe_json(root, "--imagededup-json", target)
    answer = json.loads(target.read_text())
    images = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert set(answer) == images  # every image, by its path relative to FOLDER, as imagededup names them
    for group in truth:
        for name in group:
            assert set(answer[name]) == group - {name}
    assert all(answer[name] == [] for name in images - set().union(*truth))


def test_the_embedding_method_with_a_run(tmp_path, tiny_run):
    """--model: exact copies by content; near pairs by the run's cosine similarity ≥ --threshold."""
    root = tmp_path / "photos"
    truth = write_folder(root)
    answer = dedupe_json(root, "--model", tiny_run)
    assert answer["method"] == "embedding" and answer["threshold"]["cosine_min"] == 0.995
    assert any(relative(root, g["paths"]) == truth[2] and g["kind"] == "exact" for g in answer["groups"])
    everything = dedupe_json(root, "--model", tiny_run, "--threshold", "-1")  # every neighbour a duplicate: one group
    assert len(everything["groups"]) == 1 and len(everything["groups"][0]["paths"]) == 19


def test_against_an_index_keeps_the_indexed_image_and_moves_only_new_ones(tmp_path, tiny_run):
    gallery = tmp_path / "gallery"
    for scene in range(3):
        gallery.mkdir(exist_ok=True)
        scene_photo(scene, 0).save(gallery / f"scene{scene}.jpg", quality=90)
    built = run_cli("index", str(gallery), "--model", str(tiny_run), "--out", str(tmp_path / "index"), "--json")
    assert built.returncode == 0, built.stderr
    new = tmp_path / "new"
    new.mkdir()
    shutil.copyfile(gallery / "scene1.jpg", new / "copy of scene1.jpg")
    scene_photo(3, 0).save(new / "other.jpg", quality=90)
    before = snapshot(gallery)
    answer = dedupe_json(new, "--against", tmp_path / "index", "--move-to", tmp_path / "dupes")
    copy_group = next(g for g in answer["groups"] if str(new / "copy of scene1.jpg") in g["paths"])
    assert copy_group["keep"] == str(gallery / "scene1.jpg") and copy_group["kind"] == "exact"
    assert str(gallery / "scene1.jpg") in answer["indexed"]
    assert [m["from"] for m in answer["moved"]] == [str((new / "copy of scene1.jpg").resolve())]
    assert snapshot(gallery) == before  # the indexed gallery is only read


def test_multi_index_hashing_finds_every_pair_within_the_radius_and_no_other():
    from siamcli.dedupe.pairs import hash_pairs

    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (3000, 32), dtype=np.uint8)
    for n in range(0, 600, 2):  # plant pairs at 0 … 15 bits
        bits = np.unpackbits(codes[n])
        bits[rng.choice(256, n % 16, replace=False)] ^= 1
        codes[n + 1] = np.packbits(bits)
    found = set(zip(*(a.tolist() for a in hash_pairs(codes, 14))))
    unpacked = np.unpackbits(codes, axis=1).astype(np.int16)
    distance = (unpacked[:, None, :] != unpacked[None, :, :]).sum(axis=2)  # brute force, to check against
    expected = {(i, j) for i, j in zip(*np.nonzero(np.triu(distance <= 14, k=1)))}
    assert found == expected and len(expected) >= 250


@pytest.mark.parametrize("args, needles", [
    (["{missing}"], ["does not exist"]),
    (["{file}"], ["is not a folder"]),
    (["{empty}"], ["holds no images"]),
    ([], ["give the FOLDER"]),
    (["{root}", "--keep", "biggest"], ["--keep 'biggest' is not a rule", "largest, oldest, first"]),
    (["{root}", "--threshold", "0.9"], ["--threshold", "needs --model RUN or --against INDEX"]),
    (["{root}", "--workers", "0"], ["--workers must be at least 1"]),
    (["{root}", "--move-to", "{root}/dupes"], ["is inside", "choose a folder outside it"]),
    (["{root}", "--move-to", "{file}"], ["is a file"]),
    (["{root}", "--model", "{missing}"], ["--model", "not found"]),
    (["{root}", "--against", "{missing}"], ["no index at"]),
    (["{root}", "--imagededup-json", "{file}/map.json"], ["cannot be written", "is a file"]),
    (["{root}", "--imagededup-json", "{empty}"], ["is a folder"]),
    (["{root}", "--model", "{missing}", "--no-crops"], ["--crops and --no-crops belong to the perceptual method"]),
    (["{root}", "--threshold", "2", "--model", "{missing}"], ["--threshold 2.0 is not a cosine similarity"]),
    (["--undo", "{missing}"], ["dedupe record", "is missing"]),
    (["--undo", "{file}"], ["is not valid JSON"]),
    (["--undo", "{not_a_record}"], ["is not a dedupe record"]),
    (["{root}", "--undo", "{not_a_record}"], ["--undo RECORD takes no FOLDER or other options"]),
    (["--undo", "{not_a_record}", "--model", "x"], ["--undo RECORD takes no FOLDER or other options", "--model"]),
])
def test_every_bad_input_is_one_line_and_exit_2(folder, tmp_path, args, needles):
    root, _ = folder
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("not an image folder")
    (tmp_path / "record.json").write_text('{"format": "something else"}')
    names = {"root": root, "missing": tmp_path / "missing", "file": tmp_path / "file.txt", "empty": tmp_path / "empty",
             "not_a_record": tmp_path / "record.json"}
    result = invoke("dedupe", *(arg.format(**names) for arg in args))
    one_line_error(result, *needles)

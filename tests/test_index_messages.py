"""What `siamcli index` says: hints that run as printed, counts that add up, true messages on
Ctrl-C and about the threshold, one warning for skipped files, no lock file left behind.

Through the real CLI (CliRunner, or a subprocess where a signal is sent), the real tiny model,
real FAISS and real image files; every output read is --json or a plain stderr line.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, write_identity_folders, write_test_calibration
from PIL import Image
from test_index_cli import index_json, invoke, one_line_error
from test_index_engine import copy_run

from siamcli.errors import UserError


def _hint(stderr: str, marker: str) -> list[str]:
    """The `siamcli index …` command a warning containing `marker` suggests, as arguments."""
    line = next(line for line in stderr.splitlines() if marker in line)
    command = re.search(r"`siamcli (index [^`]*)`", line)
    assert command, line
    return shlex.split(command.group(1))


def _new_image(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)


# ---------------------------------------------------------------- finding 3: hints that run as printed


def test_the_gone_files_hint_names_model_and_out_and_prunes_that_index_when_run_as_printed(tmp_path, tiny_run, monkeypatch):
    run, data = copy_run(tiny_run, tmp_path)
    other, _ = copy_run(tiny_run, tmp_path / "other", with_data=False)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "latest").symlink_to(other)  # the default model is another run: the hint must not rely on it
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "idx" / "gal"
    index_json(data, "--model", run, "--out", out)
    for path in (data / "id_2" / "img_3.png", data / "id_5" / "img_0.png"):
        path.unlink()
    appended = invoke("index", data, "--model", run, "--out", out, "--append", "--json")
    assert appended.exit_code == 0, appended.stderr
    hint = _hint(appended.stderr, "indexed files are gone")
    assert Path(hint[hint.index("--model") + 1]).resolve() == run.resolve() and hint[hint.index("--out") + 1] == str(out)
    assert "--prune" in hint
    pruned = index_json(*hint[1:])  # run exactly as printed
    assert (pruned["index_dir"], pruned["removed"], pruned["count"]) == (str(out), 2, 28)
    assert not (other / "index").exists()


def test_prune_and_compact_refuse_when_there_is_no_index_and_say_how_to_build_one(tmp_path, tiny_run):
    run, data = copy_run(tiny_run, tmp_path)
    nowhere = tmp_path / "idx" / "none"
    result = invoke("index", data, "--model", run, "--out", nowhere, "--prune")
    one_line_error(result, f"no index at {nowhere}", f"--model {run}", f"--out {nowhere}")
    assert not nowhere.exists()
    hint = _hint(result.stderr, "no index at")
    assert hint[1:] == [str(data), "--model", str(run), "--out", str(nowhere)]
    compacted = invoke("index", "--compact", "--model", run, "--out", nowhere)
    one_line_error(compacted, f"no index at {nowhere}", f"--model {run}", f"--out {nowhere}")
    assert not nowhere.exists()


def test_a_damaged_index_names_the_full_rebuild_command(tmp_path, tiny_run):
    run, data = copy_run(tiny_run, tmp_path)
    out = tmp_path / "idx"
    index_json(data, "--model", run, "--out", out)
    with open(out / "index.faiss", "r+b") as handle:
        handle.truncate(40)
    for args in (("query", data / "id_0" / "img_0.png", "--index", out), ("index", data, "--model", run, "--out", out, "--append")):
        result = invoke(*args)
        one_line_error(result, "rebuild it with")
        hint = shlex.split(re.search(r"`siamcli (index [^`]*)`", result.stderr).group(1))
        assert hint[1:] == [str(data), "--model", str(run / "model.keras"), "--out", str(out), "--force"], result.stderr
    rebuilt = index_json(*hint[1:])
    assert rebuilt["count"] == 30 and rebuilt["index_dir"] == str(out)


def test_the_shard_summary_names_the_merge_with_its_model(tmp_path, tiny_run):
    run, data = copy_run(tiny_run, tmp_path)
    result = invoke("index", data, "--model", run, "--shard", "1/1", "--out", tmp_path / "part")
    assert result.exit_code == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("When every shard is done"))
    assert f"--model {run}" in line, line


# ---------------------------------------------------------------- finding 9: counts that add up


def _adds_up(summary: dict) -> None:
    before = summary["changed"] + summary["touched"] + summary["removed"] + summary["gone"] + summary["kept"]
    after = summary["added"] + summary["changed"] + summary["touched"] + summary["gone"] + summary["kept"]
    assert (before, after) == (summary["previous"], summary["count"]), summary


def test_update_counts_add_up_and_say_what_was_written(tmp_path, tiny_run):
    run, data = copy_run(tiny_run, tmp_path)
    big = write_identity_folders(tmp_path / "big", identities=10, per_identity=10, size=40, seed=3)
    for folder in big.iterdir():  # a base of 130, so that 4 new rows go into a segment, not a rewrite
        folder.rename(data / f"more_{folder.name}")
    first = index_json(data, "--model", run)
    assert first["previous"] == 0 and first["added"] == 130 and first["count"] == 130
    for i in range(4):
        _new_image(data / "id_0" / f"new_{i}.png", seed=10 + i)
    _new_image(data / "id_1" / "img_0.png", seed=20)  # changed content
    touched = data / "id_1" / "img_1.png"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))  # touched, same content
    (data / "id_2" / "img_0.png").unlink()
    (data / "id_2" / "img_1.png").unlink()

    appended = index_json(data, "--model", run, "--append")
    assert {key: appended[key] for key in ("previous", "added", "changed", "touched", "removed", "gone", "kept", "count")} == {
        "previous": 130, "added": 4, "changed": 1, "touched": 1, "removed": 0, "gone": 2, "kept": 126, "count": 134}
    assert appended["replaced"] == appended["changed"]  # the older key, kept for readers of it
    _adds_up(appended)
    assert appended["update"] == "a new segment and a tombstone file; existing files untouched", appended["update"]
    assert appended["images_per_second"] is None  # 5 images embedded: too few for a speed figure

    pruned = index_json(data, "--model", run, "--prune")
    assert (pruned["previous"], pruned["removed"], pruned["gone"], pruned["kept"], pruned["count"]) == (134, 2, 0, 132, 132)
    _adds_up(pruned)
    assert pruned["update"] == "a tombstone file; existing files untouched", pruned["update"]
    assert pruned["images_per_second"] is None  # nothing embedded


def test_a_speed_figure_only_from_enough_images(tmp_path, tiny_run):
    from siamcli.index.result import MIN_IMAGES_FOR_SPEED

    run, _ = copy_run(tiny_run, tmp_path, with_data=False)
    small = write_identity_folders(tmp_path / "small", identities=3, per_identity=3, size=40)
    assert index_json(small, "--model", run, "--out", tmp_path / "a")["images_per_second"] is None
    enough = write_identity_folders(tmp_path / "enough", identities=5, per_identity=-(-MIN_IMAGES_FOR_SPEED // 5), size=40)
    assert index_json(enough, "--model", run, "--out", tmp_path / "b")["images_per_second"] > 0


# ---------------------------------------------------------------- finding 12: true messages


def test_the_summary_gives_the_calibrations_own_reason_for_no_threshold(tmp_path, tiny_run):
    run, data = copy_run(tiny_run, tmp_path)
    uncalibrated = index_json(data, "--model", run, "--out", tmp_path / "a")
    assert uncalibrated["threshold"] is None and f"`siamcli evaluate --model {run}`" in uncalibrated["threshold_note"]
    write_test_calibration(run, 0.3, reliable=False)
    refused = index_json(data, "--model", run, "--out", tmp_path / "b")
    assert refused["threshold"] is None
    assert "measured on 2 identities; a threshold needs at least 10" in refused["threshold_note"], refused["threshold_note"]
    assert "not calibrated" not in refused["threshold_note"]
    write_test_calibration(run, 0.3)
    assert index_json(data, "--model", run, "--out", tmp_path / "c")["threshold_note"] == ""


def _interrupt_while_embedding(args: list[str]) -> subprocess.CompletedProcess:
    """Run `siamcli index ARGS` and send it SIGINT once it reports the model loaded (embedding starts)."""
    process = subprocess.Popen([sys.executable, "-m", "siamcli", "index", *map(str, args), "--batch-size", "2"], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        for line in process.stderr:
            seen.append(line)
            if line.startswith("loading model"):
                process.send_signal(signal.SIGINT)
                break
        rest = process.stderr.read()
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()
    return subprocess.CompletedProcess(args, process.returncode, "", "".join(seen) + rest)


def _last_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


def test_ctrl_c_on_a_fresh_index_says_nothing_was_written(tmp_path, tiny_run):
    run, _ = copy_run(tiny_run, tmp_path, with_data=False)
    big = write_identity_folders(tmp_path / "big", identities=10, per_identity=40, size=40, seed=2)
    out = tmp_path / "idx" / "gal"
    done = _interrupt_while_embedding([big, "--model", run, "--out", out])
    assert done.returncode == 130, done.stderr[-2000:]
    line = _last_line(done.stderr)
    assert line.startswith("error: interrupted") and "nothing was written; the gallery is unchanged" in line, line
    assert "intact" not in line
    assert not out.exists() and os.listdir(out.parent) == []  # no index, no temporary folder, no lock file


def test_ctrl_c_on_an_update_says_the_index_is_as_it_was(tmp_path, tiny_run):
    run, data = copy_run(tiny_run, tmp_path)
    out = tmp_path / "idx"
    index_json(data, "--model", run, "--out", out)
    before = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    for folder in write_identity_folders(tmp_path / "big", identities=10, per_identity=40, size=40, seed=2).iterdir():
        folder.rename(data / f"more_{folder.name}")
    done = _interrupt_while_embedding([data, "--model", run, "--out", out, "--append"])
    assert done.returncode == 130, done.stderr[-2000:]
    line = _last_line(done.stderr)
    assert line.startswith("error: interrupted") and "the index is as it was before this update" in line, line
    assert {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()} == before
    assert sorted(os.listdir(tmp_path)) == ["big", "data", "idx", "run"]  # no temporary folder, no lock file


# ---------------------------------------------------------------- finding 14: lock files


def test_no_lock_file_is_left_after_a_build_an_update_or_a_failure(tmp_path, tiny_run):
    run, data = copy_run(tiny_run, tmp_path)
    out = tmp_path / "idx" / "gal"
    index_json(data, "--model", run, "--out", out)
    assert os.listdir(out.parent) == ["gal"]
    index_json(data, "--model", run, "--out", out, "--append")
    index_json("--compact", "--out", out)
    assert invoke("index", "--export-items", "--out", out).exit_code == 0
    assert os.listdir(out.parent) == ["gal"]
    one_line_error(invoke("index", tmp_path / "nonexistent", "--model", run), "does not exist")
    one_line_error(invoke("index", tmp_path / "nonexistent", "--model", run, "--out", tmp_path / "new" / "idx"), "does not exist")
    assert sorted(os.listdir(run)) == ["config.json", "model.keras", "split.json"] and not (tmp_path / "new").exists()


def test_a_refused_writer_leaves_the_holders_lock_in_place(tmp_path, tiny_run):
    from siamcli.index.lock import index_lock, lock_path

    run, data = copy_run(tiny_run, tmp_path)
    out = tmp_path / "idx"
    with index_lock(out):
        one_line_error(invoke("index", data, "--model", run, "--out", out), "another `siamcli index`")
        assert lock_path(out).is_file()  # the holder's lock: not the refused one's to remove
        with pytest.raises(UserError, match="another `siamcli index`"):
            with index_lock(out):
                pass
    assert not lock_path(out).exists()
    assert index_json(data, "--model", run, "--out", out)["count"] == 30  # and the next writer gets the lock


# ---------------------------------------------------------------- finding 13: one warning, shard specs


def test_skipped_files_are_named_in_one_warning(tmp_path, tiny_run):
    run, _ = copy_run(tiny_run, tmp_path, with_data=False)
    gallery = write_identity_folders(tmp_path / "gallery", identities=2, per_identity=3, size=40)
    (gallery / "readme.txt").write_text("not an image")  # skipped by the scan
    (gallery / "id_0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # fails to decode
    result = invoke("index", gallery, "--model", run, "--out", tmp_path / "idx", "--json")
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "readme.txt" in warnings[0] and "broken.png" in warnings[0], warnings
    assert len(json.loads(result.stdout)["skipped"]) == 2


@pytest.mark.parametrize("spec", ["x", "3/2", "0/2", "1/0"])
def test_a_bad_shard_spec_is_a_one_line_user_error_in_the_engine_the_api_and_the_cli(tmp_path, tiny_run, spec):
    import siamcli
    from siamcli.index.build import IndexOptions, build_index
    from siamcli.index.shard import build_part

    run, data = copy_run(tiny_run, tmp_path)
    for write in (build_index, build_part):  # build_index never writes a partial: a UserError, not a ValueError
        with pytest.raises(UserError, match="shard") as raised:
            write(IndexOptions(gallery=str(data), model=str(run), shard=spec))
        assert "\n" not in str(raised.value)
    with pytest.raises(UserError, match="shard"):  # the API names its keyword, the CLI its option
        siamcli.build_index(data, run=run, shard=spec)
    one_line_error(invoke("index", data, "--model", run, "--shard", spec), "--shard")
    assert not (run / "index").exists() and not list(run.glob("index.part*"))

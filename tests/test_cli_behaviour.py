"""The CLI under mistakes: fast one-line refusals, help that does not mislead, interruptions that
say how to continue, paths that work from anywhere and print whole."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO, run_cli, write_identity_folders
from test_index_cli import invoke, one_line_error
from test_index_engine import build, copy_run


@pytest.mark.parametrize("command", ["train", "index", "query", "evaluate"])
def test_help_shows_no_bool_placeholders_and_names_arguments_alike(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert "<bool>" not in result.stdout
    usage = next(line for line in result.stdout.splitlines() if "Usage:" in line)
    expected = {"train": "[DATA_DIR]", "index": "[GALLERY_DIR]...", "query": "{IMAGE}...", "evaluate": "[DATA_DIR]"}[command]
    assert expected in usage, usage


def test_a_missing_argument_reads_as_a_sentence():
    result = invoke("query")
    assert result.exit_code == 2
    assert result.stderr == "error: Missing argument 'IMAGE'; see `siamcli query --help`\n"


def test_a_bad_train_option_is_refused_before_tensorflow_is_imported(tmp_path):
    """Typos cost half a second, not TensorFlow's start-up: checked in a fresh interpreter."""
    data = write_identity_folders(tmp_path / "data", identities=2, per_identity=2, size=32)
    script = (
        "import sys\nfrom siamcli.cli.app import main\n"
        f"sys.argv = ['siamcli', 'train', {str(data)!r}, '--image-size', '8']\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    code = exit.code\n"
        "print(code, 'tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.stdout.split() == ["2", "False", "False"], (done.stdout, done.stderr)
    assert done.stderr.startswith("error: --image-size must be at least 32") and done.stderr.count("\n") == 1


def test_an_unreadable_index_path_is_one_line_and_exit_2(tmp_path, tiny_run):
    """An OSError on a path the user gave (here: the manifest is a folder) is not an 'unexpected' failure."""
    run, data = copy_run(tiny_run, tmp_path)
    index_dir = tmp_path / "idx"
    index_dir.mkdir()
    (index_dir / "manifest.json").mkdir()
    one_line_error(invoke("query", data / "id_0" / "img_0.png", "--index", index_dir), str(index_dir))


@pytest.mark.slow
@pytest.mark.train
def test_a_terminated_train_ends_with_the_exact_resume_command(tmp_path):
    data = write_identity_folders(tmp_path / "data", identities=4, per_identity=4, size=32)
    run = tmp_path / "runs" / "r"
    process = subprocess.Popen(
        [sys.executable, "-m", "siamcli", "train", str(data), "--out", str(run), "--weights", "none", "--image-size", "32",
         "--frozen-epochs", "50", "--finetune-epochs", "0", "--steps-per-epoch", "2", "--batch-size", "8", "--patience", "0",
         "--no-augment"],  # one cached view per image: epoch 2 comes sooner
        cwd=tmp_path, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"},
    )
    lines = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # plain progress lines (stderr is a pipe): wait for epoch 2's
        line = process.stderr.readline()
        lines.append(line)
        if line.startswith("epoch 2 "):
            break
    assert any(line.startswith("epoch 1 (frozen 1/50): loss") for line in lines), lines
    process.send_signal(signal.SIGTERM)
    rest = process.stderr.read()
    assert process.wait(timeout=120) == 130
    last = rest.strip().splitlines()[-1]
    assert last == f"error: interrupted; every complete epoch is saved: continue with `siamcli train --resume {run}`", rest
    assert "Traceback" not in rest


@pytest.mark.slow
def test_a_run_evaluates_from_another_folder_and_after_moving_with_its_data(tmp_path, tiny_run, monkeypatch):
    project = tmp_path / "project"
    run, data = copy_run(tiny_run, project)
    config = json.loads((run / "config.json").read_text())
    config.update(data_dir=str(data), data_dir_from_run="../data")  # as `siamcli train` records them
    (run / "config.json").write_text(json.dumps(config))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # from another folder: in this process (the moved run below: in a subprocess)
    done = invoke("evaluate", "--model", run, "--no-baselines", "--projection", "pca", "--json")
    assert done.exit_code == 0, done.stderr
    assert json.loads((run / "eval" / "report.json").read_text())["data_dir"] == str(data)
    moved = tmp_path / "moved"
    shutil.move(project, moved)  # the run and its data move together: the absolute path is gone
    done = run_cli("evaluate", "--model", str(moved / "run"), "--no-baselines", "--projection", "pca", "--json", cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    report = json.loads((moved / "run" / "eval" / "report.json").read_text())
    assert report["data_dir"] == str(moved / "data")


def test_train_records_absolute_data_paths(tmp_path, monkeypatch):
    from siamcli.training.config import TrainConfig

    monkeypatch.chdir(tmp_path)
    assert TrainConfig(data_dir="faces").resolve().data_dir == str(tmp_path / "faces")


@pytest.mark.slow
def test_query_tables_in_a_pipe_print_long_paths_whole(tmp_path, tiny_run):
    run, data = copy_run(tiny_run, tmp_path)
    deep = data / ("a_rather_long_folder_name_for_one_identity_" * 3)
    deep.mkdir()
    shutil.copy(data / "id_0" / "img_0.png", deep / "the_photo_with_a_long_name.png")
    build(run, data)
    done = run_cli("query", str(deep / "the_photo_with_a_long_name.png"), "--model", str(run), "--k", "1", cwd=tmp_path,
                   env={"COLUMNS": ""})  # as in a pipe with no terminal width set
    assert done.returncode == 0, done.stderr
    assert str(deep / "the_photo_with_a_long_name.png") in done.stdout  # on one line, not folded

"""Artifacts: atomic writes under a full disk, refusing tampered or foreign models."""

import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from siamcli.atomic import write_bytes, write_text
from siamcli.cli.app import app
from siamcli.errors import UserError

runner = CliRunner()


@pytest.fixture
def full_disk(tmp_path):
    """A real 256 KiB tmpfs (root can mount one, as on CI); removed afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({proc.stderr.strip()}); the disk-full path is untested on this machine")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_reports_clearly_and_keeps_the_previous_file(full_disk):
    target = full_disk / "history.csv"
    write_text(target, "epoch,loss\n1,0.5\n")
    with pytest.raises(UserError, match="free disk space"):
        write_bytes(target, b"x" * (1 << 20))
    assert target.read_text() == "epoch,loss\n1,0.5\n"
    assert [p.name for p in full_disk.iterdir()] == ["history.csv"]  # no temporary file left behind


def _copy_run(tiny_run, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    return run


def test_a_damaged_model_is_refused_with_exit_2(tiny_run, tmp_path):
    run = _copy_run(tiny_run, tmp_path)
    data = (run / "model.keras").read_bytes()
    (run / "model.keras").write_bytes(data[: len(data) // 2])
    result = runner.invoke(app, ["evaluate", "--model", str(run), "--out", str(tmp_path / "eval"), "--no-baselines"])
    assert result.exit_code == 2
    assert "damaged" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_model_with_arbitrary_code_is_refused_by_safe_mode(tiny_run, tmp_path):
    from siamcli.tf_runtime import import_tensorflow

    import_tensorflow()
    import keras

    run = _copy_run(tiny_run, tmp_path)
    inputs = keras.Input((None, None, 3))
    outputs = keras.layers.Lambda(lambda x: keras.ops.mean(x, axis=(1, 2)))(inputs)  # code inside the file
    keras.Model(inputs, outputs).save(run / "model.keras")
    result = runner.invoke(app, ["evaluate", "--model", str(run), "--out", str(tmp_path / "eval"), "--no-baselines"])
    assert result.exit_code == 2
    assert "cannot load model" in result.stderr and "Traceback" not in result.output

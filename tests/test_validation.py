"""Every bad option or input: one line on stderr, exit code 2, no traceback."""

import socket
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from siamcli.cli.app import app

runner = CliRunner()


def _assert_one_line_usage_error(result, *fragments):
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def data(image_folders):
    return image_folders(identities=3, per_identity=3, size=32)


@pytest.mark.parametrize(
    "options, fragment",
    [
        (["--val-fraction", "1.5"], "--val-fraction"),
        (["--val-fraction", "0"], "--val-fraction"),
        (["--image-size", "16"], "--image-size"),
        (["--frozen-epochs", "-1"], "--frozen-epochs"),
        (["--finetune-epochs", "-2"], "--finetune-epochs"),
        (["--frozen-epochs", "0", "--finetune-epochs", "0"], "nothing to train"),
        (["--strategy", "magic"], "--strategy"),
        (["--mining", "hardest"], "--mining"),
        (["--precision", "float8"], "--precision"),
        (["--batch-size", "10"], "multiple"),
        (["--batch-size", "4"], "--batch-size"),
        (["--margin", "0"], "--margin"),
        (["--lr", "-1"], "--lr"),
        (["--dropout", "1.0"], "--dropout"),
        (["--patience", "-1"], "--patience"),
        (["--lr-schedule", "linear"], "--lr-schedule"),
        (["--embedding-dim", "1"], "--embedding-dim"),
        (["--weights", "/no/such/file.weights.h5"], "not found"),
        (["--feature-layer", "conv9", "--weights", "none"], "--feature-layer"),
        (["--pooling", "max", "--weights", "none"], "--pooling"),
        (["--finetune-from", "nope", "--weights", "none", "--frozen-epochs", "0"], "--finetune-from"),
    ],
)
def test_train_rejects_bad_options(tmp_path, data, options, fragment):
    result = runner.invoke(app, ["train", str(data), "--out", str(tmp_path / "run"), "--image-size", "32", *options])
    _assert_one_line_usage_error(result, fragment)


def test_train_rejects_missing_and_unusable_data(tmp_path, image_folders):
    _assert_one_line_usage_error(runner.invoke(app, ["train", str(tmp_path / "missing"), "--weights", "none"]), "does not exist")
    (tmp_path / "file.txt").write_text("x")
    _assert_one_line_usage_error(runner.invoke(app, ["train", str(tmp_path / "file.txt"), "--weights", "none"]), "not a folder")
    single = image_folders("single", identities=1, per_identity=3)
    _assert_one_line_usage_error(runner.invoke(app, ["train", str(single), "--weights", "none"]), "at least 2 identities")
    _assert_one_line_usage_error(runner.invoke(app, ["train"]), "DATA_DIR")


USAGE_CASES = [
    ["train", "data", "--image-size", "abc"],
    ["train", "data", "--no-such-option"],
    ["evaluate", "--k", "0"],
    ["evaluate", "--k", "x"],
    ["bogus-command"],
    ["index", "gallery", "--index-type", "foo"],
    ["index", "gallery", "--batch-size", "0"],
    ["index", "missing_gallery"],
    ["query", "photo.png", "--k", "0"],
    ["query", "missing.png"],
    ["query", "photo.png", "--index", "."],
]


@pytest.mark.parametrize("argv", USAGE_CASES)
def test_usage_errors_from_the_real_entry_point_are_one_line(tmp_path, argv):
    proc = subprocess.run([sys.executable, "-m", "siamcli", *argv], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout == ""


def test_the_static_resnet50_layer_list_matches_keras():
    from siamcli.tf_runtime import import_tensorflow

    import_tensorflow()
    import keras

    from siamcli.models.resnet50 import layer_names

    model = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    assert [layer.name for layer in model.layers][1:] == layer_names()[1:]


@pytest.fixture
def download_host(monkeypatch):
    """Point the ImageNet download host at a port on this machine, so the probe's answer does not
    depend on the machine's network. Yields point(listening): a closed port (bound, never
    listening: the connection is refused at once) or a listening one (the connection succeeds)."""
    from siamcli.models import backbone_weights

    sockets = []

    def point(listening: bool):
        server = socket.socket()
        sockets.append(server)
        server.bind(("127.0.0.1", 0))
        if listening:
            server.listen(1)
        monkeypatch.setattr(backbone_weights, "_DOWNLOAD_HOST", server.getsockname())

    yield point
    for server in sockets:
        server.close()


def test_imagenet_weights_already_in_the_keras_cache_are_used_without_network(tmp_path, monkeypatch, download_host):
    from siamcli.models.backbone_weights import IMAGENET_NOTOP_FILE, resolve_weights

    cache = tmp_path / "keras" / "models"
    cache.mkdir(parents=True)
    (cache / IMAGENET_NOTOP_FILE).write_bytes(b"weights")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    download_host(listening=False)  # the host refuses: the cached file is taken without asking
    choice = resolve_weights("imagenet", probe_timeout=0.001)
    assert choice.kind == "imagenet" and choice.path == str(cache / IMAGENET_NOTOP_FILE)


def test_imagenet_weights_not_cached_are_left_to_keras_when_the_download_host_answers(tmp_path, monkeypatch, download_host):
    from siamcli.models.backbone_weights import resolve_weights

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty"))
    download_host(listening=True)
    choice = resolve_weights("imagenet", probe_timeout=5)
    assert choice.kind == "imagenet" and choice.path is None  # Keras downloads them


def test_imagenet_weights_neither_cached_nor_downloadable_are_one_line_exit_2_at_once(tmp_path, data, monkeypatch, download_host):
    from siamcli.models.backbone_weights import IMAGENET_NOTOP_FILE

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty"))
    download_host(listening=False)
    started = time.monotonic()
    # --weights imagenet is the default.
    result = runner.invoke(app, ["train", str(data), "--out", str(tmp_path / "run"), "--image-size", "32"])
    _assert_one_line_usage_error(
        result,
        "ImageNet weights are not cached and cannot be downloaded (offline)",
        f"put {IMAGENET_NOTOP_FILE} in {tmp_path / 'empty' / 'models'}",
        "pass --weights PATH to a ResNet50 weights file",
        "train from scratch with --weights none",
    )
    assert time.monotonic() - started < 30  # fails fast: before any model is built
    assert not (tmp_path / "run").exists()
    explicit = runner.invoke(app, ["train", str(data), "--out", str(tmp_path / "run"), "--weights", "imagenet"])
    _assert_one_line_usage_error(explicit, "cannot be downloaded", "--weights none")


# Should the check fail to refuse, training goes on: with these options, for seconds.
QUICK = ["--weights", "none", "--image-size", "32", "--embedding-dim", "8", "--batch-size", "4", "--images-per-identity", "2",
         "--steps-per-epoch", "1", "--frozen-epochs", "1", "--finetune-epochs", "0", "--patience", "0", "--views", "1"]


def test_train_on_a_folder_of_images_without_identity_folders_says_how_to_lay_them_out(tmp_path, image_folders):
    flat = tmp_path / "flat"
    for image in image_folders("sorted", identities=8, per_identity=5).rglob("*.png"):
        flat.mkdir(exist_ok=True)
        image.rename(flat / f"{image.parent.name}_{image.name}")
    _assert_one_line_usage_error(runner.invoke(app, ["train", str(flat), "--out", str(tmp_path / "run"), *QUICK]),
                                 f"40 images at the root of {flat} and no identity sub-folders",
                                 f"put each identity's images in a sub-folder {flat}/<identity>/")


def test_train_on_a_folder_of_splits_points_at_the_training_split(tmp_path):
    from conftest import write_identity_folders

    data = tmp_path / "data"
    write_identity_folders(data / "train", identities=4, per_identity=3, size=32)
    write_identity_folders(data / "test", identities=3, per_identity=3, size=32, seed=1)
    _assert_one_line_usage_error(runner.invoke(app, ["train", str(data), "--out", str(tmp_path / "run"), *QUICK]),
                                 f"{data}'s sub-folders look like a split (test/, train/)", f"point train at {data}/train")

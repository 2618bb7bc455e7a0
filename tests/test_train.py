"""Training end to end: phases, weights, the CLI, the run directory, reloading, strategies."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import write_identity_folders
from typer.testing import CliRunner

runner = CliRunner()


@pytest.fixture(scope="module")
def start_weights(resnet_weights):
    """(the session's ResNet50 weights file, {variable path: its value}) for the pretrained regime."""
    from siamcli.tf_runtime import import_tensorflow

    import_tensorflow()
    import keras

    resnet = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    resnet.load_weights(resnet_weights)
    return resnet_weights, {w.path: w.numpy().copy() for w in resnet.weights}


def _train(tmp_path, data, **options):
    from siamcli.training.config import TrainConfig
    from siamcli.training.trainer import train

    defaults = dict(data_dir=str(data), image_size=32, embedding_dim=8, batch_size=8, images_per_identity=2,
                    steps_per_epoch=2, val_fraction=0.25)
    defaults.update(options)
    return train(TrainConfig(**defaults), out=str(tmp_path / "run"), force=True)


def _resnet_weights(run_dir):
    from siamcli.models.embedding import load_embedding_model

    model = load_embedding_model(run_dir / "model.keras")
    resnet = model.get_layer("backbone").get_layer("resnet50")
    head = model.get_layer("head")
    return {w.path: w.numpy() for w in resnet.weights}, {w.path: w.numpy() for w in head.weights}


@pytest.mark.train
def test_frozen_phase_trains_the_head_only_and_loads_a_weights_file(tmp_path, image_folders, start_weights):
    data = image_folders(identities=4, per_identity=4, size=32)
    path, start = start_weights
    result = _train(tmp_path, data, weights=str(path), frozen_epochs=1, finetune_epochs=0, lr=1e-2, margin=2.0, patience=0)  # no folds
    backbone, head = _resnet_weights(result.run_dir)
    assert backbone.keys() == start.keys()
    assert all(np.array_equal(backbone[name], start[name]) for name in start)  # --weights PATH loaded, untouched
    # Both start at exactly zero; training the head moves them.
    assert np.abs(head["projection/bias"]).max() > 0
    assert np.abs(head["feature_norm/moving_mean"]).max() > 0
    assert list(result.history["phase"]) == ["frozen"]


@pytest.mark.train
def test_finetuning_pretrained_weights_trains_from_the_named_layer_with_batchnorm_frozen(tmp_path, image_folders, start_weights):
    data = image_folders(identities=4, per_identity=4, size=32)
    path, start = start_weights
    result = _train(tmp_path, data, weights=str(path), frozen_epochs=0, finetune_epochs=1,
                    finetune_from="conv5_block1_out", finetune_lr=1e-2, margin=2.0)
    backbone, _ = _resnet_weights(result.run_dir)
    changed = {name for name in start if not np.array_equal(backbone[name], start[name])}
    assert "conv5_block3_3_conv/kernel" in changed
    assert not any(name.startswith(("conv1_", "conv4_", "conv5_block1_")) for name in changed)
    assert not any("_bn/" in name for name in changed)  # BatchNorm stays in inference mode


@pytest.fixture(scope="module")
def scratch_run(tmp_path_factory):
    """(TrainResult, data): from scratch (--weights none), one frozen and one fine-tune epoch, in
    mixed_bfloat16. The from-scratch regime and mixed precision are both read from this run.

    Two identities: none can be held out, so model.keras is the last epoch's (not the best
    validation epoch's, which could be the frozen one)."""
    base = tmp_path_factory.mktemp("scratch")
    data = write_identity_folders(base / "data", identities=2, per_identity=4, size=32)
    result = _train(base, data, weights="none", frozen_epochs=1, finetune_epochs=1, precision="mixed_bfloat16",
                    images_per_identity=4)
    assert result.split.val == [] and result.best_epoch == 2
    return result, data


@pytest.mark.train
def test_from_scratch_regime_trains_the_whole_network_and_batchnorm(scratch_run):
    result, _ = scratch_run
    assert result.config.finetune_from == "all" and result.config.feature_layer == "conv3_block4_out"
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["finetune_from"] == "all" and "tensorflow" in config["versions"]
    backbone, _ = _resnet_weights(result.run_dir)
    # BatchNormalization starts at beta 0 and moving mean 0: in this regime every one of them,
    # from conv1 to the cut, is trained (beta) and runs in training mode (moving statistics).
    betas = [name for name in backbone if name.endswith("_bn/beta")]
    assert "conv1_bn/beta" in betas and "conv3_block4_3_bn/beta" in betas and not any(n.startswith("conv4_") for n in backbone)
    for name in betas:
        assert np.abs(backbone[name]).max() > 0, name
        assert np.abs(backbone[name.replace("/beta", "/moving_mean")]).max() > 0, name


@pytest.mark.train
def test_cli_train_writes_the_run_and_the_model_reloads_identically_in_a_new_process(tmp_path, image_folders):
    from siamcli.cli.app import app
    from siamcli.data.scan import scan_folder
    from siamcli.models.embed import embed
    from siamcli.models.embedding import load_embedding_model

    data = image_folders(identities=5, per_identity=4, size=40)
    run = tmp_path / "runs" / "first"
    result = runner.invoke(app, ["train", str(data), "--out", str(run), "--image-size", "32", "--weights", "none",
                                 "--frozen-epochs", "1", "--finetune-epochs", "1", "--embedding-dim", "8",
                                 "--batch-size", "8", "--images-per-identity", "2", "--steps-per-epoch", "2",
                                 "--patience", "0", "--json"])  # every epoch, no identity folds: not what is tested here
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["epochs"] == 2 and summary["val_identities"] == 1
    for name in ("model.keras", "start.keras", "config.json", "split.json", "history.csv", "loss.png", "checkpoints"):
        assert (run / name).exists(), name
    assert (tmp_path / "runs" / "latest").resolve() == run.resolve()
    history = pd.read_csv(run / "history.csv")
    assert list(history["phase"]) == ["frozen", "finetune"] and list(history["epoch"]) == [1, 2]
    assert {"loss", "seconds", "precision_at_1", "map_at_r", "active_fraction", "distance_gap"} <= set(history.columns)
    split = json.loads((run / "split.json").read_text())
    assert len(split["val"]) == 1 and not set(split["val"]) & set(split["train"])
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    paths = [item.path for item in scan_folder(data).items]
    here = embed(load_embedding_model(run / "model.keras"), paths, batch_size=8).vectors
    script = (
        "import sys, numpy as np\n"
        "from siamcli.models.embedding import load_embedding_model\n"
        "from siamcli.models.embed import embed\n"
        "paths = sys.argv[2:]\n"
        "e = embed(load_embedding_model(sys.argv[1]), paths, batch_size=8).vectors\n"
        "np.save(sys.stdout.buffer, e)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(run / "model.keras"), *paths], capture_output=True, check=True)
    import io

    there = np.load(io.BytesIO(out.stdout))
    assert np.allclose(np.linalg.norm(there, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(here, there, atol=1e-5)

    again = runner.invoke(app, ["train", str(data), "--out", str(run), "--weights", "none", "--image-size", "32"])
    assert again.exit_code == 2 and "--force" in again.stderr


def test_help_and_version_do_not_import_tensorflow():
    script = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from siamcli.cli.app import app\n"
        "r = CliRunner()\n"
        "assert r.invoke(app, ['--help']).exit_code == 0\n"
        "assert r.invoke(app, ['train', '--help']).exit_code == 0\n"
        "assert r.invoke(app, ['--version']).exit_code == 0\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


# `siamcli train` in a process whose one CPU is split into two logical devices (which must happen
# before TensorFlow runs anything), with the mirrored strategy over both.
MIRRORED_SCRIPT = r"""
import sys
from siamcli.tf_runtime import import_tensorflow
tf = import_tensorflow()
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from siamcli.cli.app import main
sys.argv = ["siamcli", "train", *sys.argv[1:]]
main()
"""


@pytest.mark.train
def test_mirrored_strategy_on_two_cpu_devices_matches_the_default_strategy(tmp_path, reference_run):
    # The default strategy's side is the session's single-process reference run (pretrained regime:
    # BatchNorm frozen in the backbone, 1 frozen + 3 fine-tune epochs); the mirrored run trains the
    # same 1 + 1 epochs, which must match its first two rows.
    data, options, reference = reference_run
    run = tmp_path / "mirrored"
    proc = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, str(data), "--out", str(run), *options,
                           "--finetune-epochs", "1", "--strategy", "mirrored"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["epochs"] == 2
    assert json.loads((reference / "config.json").read_text())["replicas"] == 1
    assert json.loads((run / "config.json").read_text())["replicas"] == 2
    # Same seed, same global batches: each replica mines against the gathered global batch, so
    # the losses and mean distances agree up to float summation order (the distances count: these
    # epochs' loss is 0, the start model already separating these identities by more than the margin).
    compared = ["loss", "positive_distance", "negative_distance"]
    mirrored, default = pd.read_csv(run / "history.csv"), pd.read_csv(reference / "history.csv")
    assert list(mirrored["phase"]) == ["frozen", "finetune"]
    np.testing.assert_allclose(mirrored[compared], default[compared][:2], rtol=2e-3, atol=1e-4)


@pytest.mark.train
def test_mixed_precision_trains_with_a_finite_float32_loss(scratch_run):
    import keras

    from siamcli.data.scan import scan_folder
    from siamcli.models.embed import embed
    from siamcli.models.embedding import load_embedding_model

    result, data = scratch_run
    assert json.loads((result.run_dir / "config.json").read_text())["precision"] == "mixed_bfloat16"
    assert list(result.history["phase"]) == ["frozen", "finetune"]
    assert np.isfinite(result.history["loss"]).all()
    assert keras.mixed_precision.dtype_policy().name == "float32"  # the global policy is restored
    model = load_embedding_model(result.run_dir / "model.keras")
    embeddings = embed(model, [item.path for item in scan_folder(data).items]).vectors
    assert embeddings.dtype == np.float32
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-3)

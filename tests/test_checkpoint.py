"""Checkpoints: variables stored and restored by name; the pointer always names a complete pair."""

import numpy as np
import pytest

from siamcli.errors import CorruptArtifactError, UserError
from siamcli.tf_runtime import import_tensorflow
from siamcli.training import checkpoint

tf = import_tensorflow()
import keras  # noqa: E402


def _model_and_optimizer(reverse=False, loss_scale=False):
    """A small model with BatchNorm (non-trainable variables), Dropout (a seed state) and a built Adam.

    `reverse` builds the optimiser over the variables in the opposite order, so its slot
    variables are created (and listed) in a different order.
    """
    features = keras.Input((4,))
    x = keras.layers.Dense(3, name="first")(features)
    x = keras.layers.BatchNormalization(name="norm")(x)
    x = keras.layers.Dropout(0.5, name="drop")(x)  # a random-seed state, auto-named per process
    model = keras.Model(features, keras.layers.Dense(2, name="projection")(x))
    optimizer = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(1e-3, decay_steps=10, alpha=0.1))
    if loss_scale:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    variables = model.trainable_variables
    optimizer.build(variables[::-1] if reverse else variables)
    return model, optimizer


def _fill(model, optimizer, seed):
    rng = np.random.default_rng(seed)
    for variable in [*model.variables, *optimizer.variables]:
        value = rng.integers(1, 1000, size=tuple(variable.shape)) if "int" in str(variable.dtype) else rng.random(tuple(variable.shape))
        variable.assign(np.asarray(value).astype(str(variable.dtype)))


def _values(model, optimizer):
    return {name: np.asarray(variable) for name, variable in checkpoint.named_variables(model, optimizer).items()}


@pytest.mark.parametrize("loss_scale", [False, True])
def test_restore_is_by_name_into_an_optimizer_built_in_another_order(tmp_path, loss_scale):
    model, optimizer = _model_and_optimizer(loss_scale=loss_scale)
    _fill(model, optimizer, seed=1)
    saved = checkpoint.save(tmp_path, model, optimizer, checkpoint.TrainerState(epoch=3))

    # Another process would auto-name its optimiser differently (adam_1, ...) and here builds it
    # over the variables in reverse order: position-based restore would swap the moments.
    restored_model, restored_optimizer = _model_and_optimizer(reverse=True, loss_scale=loss_scale)
    assert restored_optimizer.name != optimizer.name
    assert [v.shape for v in restored_optimizer.variables] != [v.shape for v in optimizer.variables]
    checkpoint.restore(checkpoint.latest(tmp_path), restored_model, restored_optimizer)

    expected, got = _values(model, optimizer), _values(restored_model, restored_optimizer)
    assert expected.keys() == got.keys()
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)

    keys = {key for key, _ in tf.train.list_variables(str(saved))}
    assert "model/projection/kernel/.ATTRIBUTES/VARIABLE_VALUE" in keys
    assert "model/norm/moving_mean/.ATTRIBUTES/VARIABLE_VALUE" in keys
    assert "model/drop/seed_generator_state/.ATTRIBUTES/VARIABLE_VALUE" in keys
    inner = "inner/" if loss_scale else ""
    assert f"optimizer/{inner}projection_kernel_momentum/.ATTRIBUTES/VARIABLE_VALUE" in keys
    assert f"optimizer/{inner}iteration/.ATTRIBUTES/VARIABLE_VALUE" in keys
    assert not any("_variables/" in key or "_operations/" in key for key in keys)  # no positional keys


def test_weights_alone_restore_without_the_optimizer(tmp_path):
    model, optimizer = _model_and_optimizer()
    _fill(model, optimizer, seed=2)
    checkpoint.save(tmp_path, model, optimizer, checkpoint.TrainerState(epoch=1))
    fresh, _ = _model_and_optimizer()
    checkpoint.restore(checkpoint.latest(tmp_path), fresh)
    for a, b in zip(model.variables, fresh.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_each_save_keeps_one_pair_and_the_pointer_names_it(tmp_path):
    model, optimizer = _model_and_optimizer()
    for epoch in (1, 2):
        checkpoint.save(tmp_path, model, optimizer, checkpoint.TrainerState(epoch=epoch, rows=[{"epoch": epoch}]))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index", "ckpt-2.state.json",
    ]
    assert checkpoint.latest_epoch(tmp_path) == 2
    state = checkpoint.load_state(checkpoint.latest(tmp_path))
    assert state.epoch == 2 and state.rows == [{"epoch": 2}]


def test_a_save_killed_before_the_pointer_moved_leaves_the_previous_pair(tmp_path):
    model, optimizer = _model_and_optimizer()
    _fill(model, optimizer, seed=3)
    checkpoint.save(tmp_path, model, optimizer, checkpoint.TrainerState(epoch=1))
    before = _values(model, optimizer)
    # What a kill during epoch 2's save leaves: its state file, TensorFlow's temporary shards,
    # a half-written temporary state file; the pointer still names ckpt-1.
    (tmp_path / "ckpt-2.state.json").write_text('{"epoch": 2}')
    (tmp_path / "ckpt-2_temp").mkdir()
    (tmp_path / "ckpt-2_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"\0" * 10)
    (tmp_path / ".ckpt-2.state.json.x1y2.tmp").write_text("{")

    saved = checkpoint.latest(tmp_path)
    assert saved.name == "ckpt-1" and checkpoint.load_state(saved).epoch == 1
    _fill(model, optimizer, seed=4)
    checkpoint.restore(saved, model, optimizer)
    for name, value in _values(model, optimizer).items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)

    checkpoint.save(tmp_path, model, optimizer, checkpoint.TrainerState(epoch=2))  # the resumed run's epoch 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index", "ckpt-2.state.json",
    ]


def test_no_checkpoint_is_a_user_error_and_damage_is_a_corrupt_artifact(tmp_path):
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    with pytest.raises(UserError, match="no complete checkpoint"):
        checkpoint.latest(checkpoints)

    (checkpoints / "last.json").write_text('{"checkpoint": "epoch-0001"}')  # an older siamcli's layout
    with pytest.raises(UserError, match="older siamcli"):
        checkpoint.latest(checkpoints)
    (checkpoints / "last.json").unlink()

    model, optimizer = _model_and_optimizer()
    checkpoint.save(checkpoints, model, optimizer, checkpoint.TrainerState(epoch=1))
    data = next(checkpoints.glob("ckpt-1.data-*"))
    data.write_bytes(data.read_bytes()[:16])  # truncated
    with pytest.raises(CorruptArtifactError, match="damaged"):
        checkpoint.restore(checkpoint.latest(checkpoints), model, optimizer)

    (checkpoints / "ckpt-1.index").unlink()
    with pytest.raises(CorruptArtifactError, match="missing checkpoint"):
        checkpoint.latest(checkpoints)


def test_a_state_file_of_another_epoch_is_damage(tmp_path):
    model, optimizer = _model_and_optimizer()
    checkpoint.save(tmp_path, model, optimizer, checkpoint.TrainerState(epoch=1))
    (tmp_path / "ckpt-1.state.json").write_text('{"epoch": 5}')
    with pytest.raises(CorruptArtifactError, match="epoch 5"):
        checkpoint.load_state(checkpoint.latest(tmp_path))


def test_a_checkpoint_of_another_model_is_refused_by_name(tmp_path):
    model, optimizer = _model_and_optimizer()
    checkpoint.save(tmp_path, model, optimizer, checkpoint.TrainerState(epoch=1))
    features = keras.Input((4,))
    other = keras.Model(features, keras.layers.Dense(2, name="elsewhere")(features))
    with pytest.raises(CorruptArtifactError, match="elsewhere"):
        checkpoint.restore(checkpoint.latest(tmp_path), other)

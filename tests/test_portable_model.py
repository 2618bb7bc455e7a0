"""model.keras is portable: plain Keras loads it (safe_mode=True) in a process that cannot import
siamcli and computes the same embeddings; and models written by siamcli 0.1.0, whose
preprocessing was the custom `ResNetPreprocess` layer, still load in siamcli and embed the same.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np

# Run in a fresh interpreter: siamcli is made unimportable, so only Keras's own layers can load.
NO_SIAMCLI = textwrap.dedent(
    """
    import importlib.abc, sys
    class _NoSiamcli(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "siamcli" or name.startswith("siamcli."):
                raise ImportError("siamcli is not installed in this process")
    sys.meta_path.insert(0, _NoSiamcli())
    """
)


def _pixels(n: int = 4, size: int = 45, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3)).astype(np.float32)


def _embed(model, pixels: np.ndarray) -> np.ndarray:
    from siamcli.models.embed import embed

    return embed(model, pixels, batch_size=8).vectors


def test_plain_keras_loads_model_keras_without_siamcli_and_embeds_the_same(tiny_run, tmp_path):
    from siamcli.models.embedding import load_embedding_model

    pixels = _pixels()
    np.save(tmp_path / "pixels.npy", pixels)
    script = NO_SIAMCLI + textwrap.dedent(
        """
        import os
        os.environ["KERAS_BACKEND"] = "tensorflow"
        import numpy as np, keras
        model = keras.saving.load_model(sys.argv[1], safe_mode=True, compile=False)
        np.save(sys.argv[3], model.predict(np.load(sys.argv[2]), verbose=0))
        assert not any(name.startswith("siamcli") for name in sys.modules)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tiny_run / "model.keras"), str(tmp_path / "pixels.npy"), str(tmp_path / "out.npy")],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = np.load(tmp_path / "out.npy")
    ours = _embed(load_embedding_model(tiny_run / "model.keras"), pixels)
    assert theirs.shape == ours.shape == (4, 16)
    np.testing.assert_allclose(np.linalg.norm(theirs, axis=1), 1.0, atol=1e-5)
    assert np.max(np.abs(theirs - ours)) < 1e-5


def test_every_layer_of_a_saved_model_is_a_keras_builtin(tiny_run):
    from siamcli.models.embedding import load_embedding_model

    def walk(layer):
        yield layer
        for child in getattr(layer, "layers", []):
            yield from walk(child)

    model = load_embedding_model(tiny_run / "model.keras")
    foreign = {type(layer).__module__ + "." + type(layer).__name__ for layer in walk(model) if not type(layer).__module__.startswith("keras.")}
    assert not foreign, f"not Keras built-ins: {sorted(foreign)}"
    preprocess = model.get_layer("backbone").get_layer("resnet_preprocess")
    assert not preprocess.trainable and not preprocess.trainable_weights


def test_the_fixed_preprocessing_is_resnet50s_caffe_preprocessing():
    from siamcli.models.layers import resnet_preprocess, set_preprocess_weights
    from siamcli.tf_runtime import import_tensorflow

    import_tensorflow()
    import keras

    pixels = _pixels(size=9)
    layer = resnet_preprocess()
    layer.build((None, 9, 9, 3))
    set_preprocess_weights(layer)
    expected = keras.applications.resnet50.preprocess_input(pixels.copy())
    np.testing.assert_array_equal(np.asarray(layer(pixels)), expected)


def test_fine_tuning_leaves_the_preprocessing_frozen():
    from siamcli.models import embedding as nets
    from siamcli.models.backbone_weights import WeightsChoice

    backbone = nets.build_backbone(32, WeightsChoice("none", None), "conv2_block1_out", "grid2")
    nets.set_backbone_trainable(backbone, "all", train_batchnorm=True)
    assert all("resnet_preprocess" not in variable.path for variable in backbone.trainable_variables)
    assert backbone.trainable_variables


def _old_release_model(new_model):
    """The same network as siamcli 0.1.0 built it: the custom ResNetPreprocess layer in front of
    ResNet50 (sharing the new model's ResNet50 and head, so both compute one function)."""
    from siamcli.models import embedding as nets
    from siamcli.models.layers import ResNetPreprocess
    from siamcli.tf_runtime import import_tensorflow

    import_tensorflow()
    import keras

    backbone = new_model.get_layer("backbone")
    pixels = keras.Input(backbone.input_shape[1:], name="pixels")
    features = backbone.get_layer("resnet50")(ResNetPreprocess(name="resnet_preprocess")(pixels))
    for name in ("pool", "flatten"):
        if any(layer.name == name for layer in backbone.layers):
            features = backbone.get_layer(name)(features)
    thumbnail = backbone.get_layer("thumbnail_flatten")(backbone.get_layer("thumbnail")(pixels))
    features = backbone.get_layer("features_and_thumbnail")([features, thumbnail])
    old_backbone = keras.Model(pixels, features, name="backbone")
    return nets.assemble(old_backbone, new_model.get_layer("head"), int(backbone.input_shape[1]))


def test_a_model_saved_by_the_previous_release_still_loads_and_embeds_the_same(tiny_run, tmp_path):
    from siamcli.models.embedding import load_embedding_model

    new_model = load_embedding_model(tiny_run / "model.keras")
    _old_release_model(new_model).save(tmp_path / "old.keras")
    old_model = load_embedding_model(tmp_path / "old.keras")
    assert type(old_model.get_layer("backbone").get_layer("resnet_preprocess")).__name__ == "ResNetPreprocess"
    pixels = _pixels()
    np.testing.assert_allclose(_embed(old_model, pixels), _embed(new_model, pixels), atol=1e-6)


def test_the_old_release_model_needs_siamcli(tiny_run, tmp_path):
    """Why the change: without siamcli, plain Keras cannot load a 0.1.0 model (issue 16)."""
    from siamcli.models.embedding import load_embedding_model

    _old_release_model(load_embedding_model(tiny_run / "model.keras")).save(tmp_path / "old.keras")
    script = NO_SIAMCLI + "import keras\nkeras.saving.load_model(sys.argv[1], safe_mode=True)\n"
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "old.keras")], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "ResNetPreprocess" in done.stderr

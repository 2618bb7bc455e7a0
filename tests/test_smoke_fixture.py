import json

import numpy as np


def test_tiny_run_has_the_files_train_writes(tiny_run):
    for name in ("model.keras", "config.json", "split.json"):
        assert (tiny_run / name).is_file()
    assert json.loads((tiny_run / "split.json").read_text())["val"] == ["id_4", "id_5"]


def test_tiny_run_model_embeds_to_unit_vectors(tiny_run):
    from siamcli.data.scan import scan_folder
    from siamcli.models.embed import embed
    from siamcli.models.embedding import load_embedding_model

    config = json.loads((tiny_run / "config.json").read_text())
    scan = scan_folder(config["data_dir"])
    model = load_embedding_model(tiny_run / "model.keras")
    result = embed(model, [item.path for item in scan.items], batch_size=8)
    assert result.vectors.shape == (30, 16)
    assert np.allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-5)
    assert result.failures == []

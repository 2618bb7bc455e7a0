"""The notebook API (`import siamcli`): every docstring example runs, and importing it stays light.

The examples run as doctests from a scratch folder that holds the repository's sample_data/ and
a tiny run `runs/notebook` (32 px, from scratch, one frozen epoch, half the people held out)
with its index over the 108 gallery photos, made once here through the API itself.
"""

from __future__ import annotations

import doctest
import os
import subprocess
import sys

import pytest
from conftest import SAMPLE_DATA

import siamcli
import siamcli.api

EXAMPLES = [test for test in doctest.DocTestFinder().find(siamcli.api, "siamcli.api") if test.examples]
PUBLIC = [name for name in siamcli.api.__all__ if name not in {"TrainConfig", "EvaluateOptions", "IndexOptions", "UserError"}]


@pytest.fixture(scope="module")
def notebook_folder(tmp_path_factory):
    """A folder with sample_data/ and runs/notebook (trained and indexed); the examples' cwd."""
    folder = tmp_path_factory.mktemp("notebook")
    os.symlink(SAMPLE_DATA, folder / "sample_data")
    before = os.getcwd()
    os.chdir(folder)
    try:
        siamcli.train("sample_data/gallery", out="runs/notebook", weights="none", image_size=32, embedding_dim=16,
                      frozen_epochs=1, finetune_epochs=0, steps_per_epoch=2, val_fraction=0.5)
        siamcli.build_index("sample_data/gallery", run="runs/notebook")
    finally:
        os.chdir(before)
    return folder


def test_every_public_function_and_class_has_a_runnable_example():
    documented = {test.name.split(".")[2] for test in EXAMPLES}
    assert set(PUBLIC) <= documented, f"no example in: {sorted(set(PUBLIC) - documented)}"


@pytest.mark.train  # notebook_folder trains a run
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda test: test.name)
def test_docstring_example_runs(example, notebook_folder, monkeypatch):
    monkeypatch.chdir(notebook_folder)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    output: list[str] = []
    runner.run(example, out=output.append)
    assert runner.failures == 0, "".join(output)


def test_import_siamcli_loads_no_tensorflow_and_the_api_resolves_lazily():
    script = (
        "import sys, siamcli\n"
        "assert 'tensorflow' not in sys.modules and 'siamcli.api' not in sys.modules\n"
        "siamcli.load_run, siamcli.embed, siamcli.open_index, siamcli.TrainConfig\n"
        "assert 'tensorflow' not in sys.modules and 'pandas' not in sys.modules, sorted(sys.modules)\n"
        "assert siamcli.EvaluateOptions().ks == (1, 5, 10)\n"
        "assert set(siamcli.__all__) <= set(dir(siamcli))\n"
        "try:\n    siamcli.nope\nexcept AttributeError:\n    pass\nelse:\n    raise SystemExit('no AttributeError')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_options_are_checked_with_the_cli_s_messages(tmp_path):
    with pytest.raises(siamcli.UserError, match="unknown option imagesize"):
        siamcli.train(tmp_path, imagesize=32)
    with pytest.raises(siamcli.UserError, match="--image-size must be at least 32"):
        siamcli.train(tmp_path, image_size=8)
    with pytest.raises(siamcli.UserError, match="either config"):
        siamcli.train(tmp_path, config=siamcli.TrainConfig(data_dir=str(tmp_path)))

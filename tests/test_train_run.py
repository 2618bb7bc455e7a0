"""One short real training run, recorded, and what it leaves and tells (issue 21): start.keras,
loss.png, the summary's labels, and its real event sequence on an 80-column terminal.

The run: 8 identities × 4 images at 32 px, each image half its identity's pattern and half a
random one (hard enough that no score saturates), 2 identities held out, so identity folds
choose the pixel weight and the frozen length (patience 1: they stop early and choose fewer
epochs than --frozen-epochs); the epoch they choose scores below the start model on validation.
"""

import io
import json
import re

import numpy as np
import pytest
from conftest import identity_pattern
from PIL import Image
from rich.console import Console
from test_progress import final_screen

from siamcli.events import Events

FROZEN_EPOCHS = 4


class Recorder(Events):
    """The engine's events, in order, as (method, arguments)."""

    def __init__(self):
        self.calls = []

    def message(self, text):
        self.calls.append(("message", text))

    def stage(self, name, total=None):
        self.calls.append(("stage", name, total))

    def advance(self, count=1, status=""):
        self.calls.append(("advance", count, status))

    def result(self, text):
        self.calls.append(("result", text))


def _half_pattern_identities(root, identities=8, per_identity=4, seed=0):
    rng = np.random.default_rng(seed)
    for identity in range(identities):
        folder = root / f"id_{identity}"
        folder.mkdir(parents=True)
        for j in range(per_identity):
            blend = 0.5 * identity_pattern(identity, 32) + 0.5 * identity_pattern(500 + int(rng.integers(10**6)), 32)
            noisy = np.clip(blend + rng.normal(0, 8, blend.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(folder / f"img_{j}.png")
    return root


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """(TrainResult, the recorded event calls)."""
    from siamcli.training import trainer
    from siamcli.training.config import TrainConfig

    base = tmp_path_factory.mktemp("short_run")
    data = _half_pattern_identities(base / "data")
    config = TrainConfig(data_dir=str(data), image_size=32, embedding_dim=8, weights="none", batch_size=8,
                         images_per_identity=2, steps_per_epoch=3, frozen_epochs=FROZEN_EPOCHS, finetune_epochs=0,
                         val_fraction=0.25, views=2, patience=1)
    recorder = Recorder()
    result = trainer.train(config, out=str(base / "run"), force=True, events=recorder)
    return result, recorder.calls


def _validation_map_at_r(model_path, run_dir):
    """MAP@R of `model_path` on the run's validation set, rebuilt from split.json and config.json:
    the held-out identities' images are the queries, every validation image the gallery."""
    from siamcli.data.scan import scan_folder
    from siamcli.evaluation.metrics import evaluate_retrieval
    from siamcli.models.embed import embed
    from siamcli.models.embedding import load_embedding_model

    config = json.loads((run_dir / "config.json").read_text())
    held_out = set(json.loads((run_dir / "split.json").read_text())["val"])
    extra = set(config["val_images_of_train_identities"])
    items = [item for item in scan_folder(config["data_dir"]).items
             if item.label in held_out or str(item.path)[len(config["data_dir"]) + 1:] in extra]
    assert len(items) == config["images"]["val"]
    vectors = embed(load_embedding_model(model_path), [item.path for item in items]).vectors
    found = evaluate_retrieval(vectors, [item.label for item in items], ks=(1,))
    queries = found.is_query & np.array([item.label in held_out for item in items])
    return float(np.mean(found.average_precision[queries]))


@pytest.mark.train
def test_the_run_keeps_its_start_model_as_start_keras_scored_as_epoch_0(short_run):
    from siamcli import rundir
    from siamcli.models.embedding import load_embedding_model

    result, _ = short_run
    paths = rundir.RunPaths(result.run_dir, result.run_dir / rundir.MODEL_FILE)
    assert result.summary()["start_model"] == str(paths.start_model)
    start, trained = load_embedding_model(paths.start_model), load_embedding_model(paths.model)
    assert start.input_shape == trained.input_shape and start.output_shape == trained.output_shape
    assert result.best_epoch == 2  # a trained epoch is kept: the two files must differ
    # The rebuilt validation scores model.keras as the trainer scored its kept epoch ...
    assert _validation_map_at_r(paths.model, result.run_dir) == pytest.approx(result.best_metrics["map_at_r"], abs=1e-6)
    # ... and start.keras as the trainer scored epoch 0, the start model.
    start_score = _validation_map_at_r(paths.start_model, result.run_dir)
    assert start_score == pytest.approx(result.start_metrics["map_at_r"], abs=1e-6)
    selection = json.loads((result.run_dir / "config.json").read_text())["selection"]
    assert selection["start"]["map_at_r"] == pytest.approx(start_score, abs=1e-6)
    assert start_score != pytest.approx(result.best_metrics["map_at_r"], abs=1e-3)


@pytest.mark.train
def test_loss_png_draws_epoch_0_and_has_integer_epoch_ticks(short_run):
    from siamcli.training.plots import history_figure

    result, _ = short_run
    figure = history_figure(result.history, result.start_metrics)
    loss_axis, metric_axis = figure.axes
    curves = {line.get_label(): line for line in metric_axis.get_lines()}
    map_line = curves["MAP@R (val)"]
    assert list(map_line.get_xdata()) == [0, 1, 2]
    np.testing.assert_allclose(map_line.get_ydata(), [result.start_metrics["map_at_r"], *result.history["map_at_r"]])
    assert list(curves["precision@1 (val)"].get_xdata()) == [0, 1, 2]
    assert list(loss_axis.get_lines()[0].get_xdata()) == [1, 2]  # no loss before the first step
    for axis in (loss_axis, metric_axis):
        low, high = axis.get_xlim()
        visible = [tick for tick in axis.get_xticks() if low <= tick <= high]
        assert visible == [0, 1, 2], visible  # whole epochs only, epoch 0 included


@pytest.mark.train
def test_the_summary_says_kept_epoch_and_that_it_is_below_the_start(short_run):
    from siamcli.cli.train_cmd import summary_rows

    result, _ = short_run
    rows = dict(summary_rows(result.summary()))
    assert "best epoch" not in rows
    assert rows["kept epoch"] == "2 (frozen)"
    assert result.best_metrics["map_at_r"] < result.start_metrics["map_at_r"]  # what this run is built to show
    assert "below the start" in rows["kept vs start"] and rows["kept vs start"] == result.selection


def _replay(calls, console, live):
    from siamcli.cli.progress import ProgressDisplay

    with ProgressDisplay(console, live=live) as display:
        for method, *arguments in calls:
            getattr(display, method)(*arguments)
    return console.file.getvalue()


def _words(lines):
    """The lines' text as one string of words: wrapping moves line breaks, never words; the
    display's own stage timings (N.N s) differ from one replay to the next."""
    return re.sub(r"\b\d+\.\d s\b", "T s", " ".join(" ".join(lines).split()))


@pytest.mark.train
def test_the_real_event_sequence_fits_80_columns_and_every_decision_stays_on_screen(short_run):
    result, calls = short_run
    stages = [call[1] for call in calls if call[0] == "stage"]
    chosen = json.loads((result.run_dir / "config.json").read_text())["selection"]["kept_epoch"]
    assert chosen < FROZEN_EPOCHS
    # The epochs count to the length the folds chose, not to --frozen-epochs.
    assert [name for name in stages if name.startswith("epoch ") and "frozen" in name] == [
        f"epoch {epoch} (frozen {epoch}/{chosen})" for epoch in range(1, chosen + 1)]

    plain = _replay(calls, Console(file=io.StringIO(), width=1000), live=False).splitlines()
    raw = _replay(calls, Console(file=io.StringIO(), width=80, force_terminal=True), live=True)
    screen = final_screen(raw, width=80)  # fails on any write past column 80
    assert _words(screen) == _words(plain)  # the terminal keeps what a log keeps, the bar gone

    decisions = {name: calls[i + 1][1] for i, (method, name, *_) in enumerate(calls)
                 if method == "stage" and name in ("start model's pixel weight", "frozen phase length", "model selection")}
    assert len(decisions) == 3
    for name, text in decisions.items():
        start = next(i for i, line in enumerate(screen) if line.startswith(f"{name}: "))
        assert _words(screen[start:]).startswith(_words([f"{name}: {text}"])), name  # complete, on its own line(s)

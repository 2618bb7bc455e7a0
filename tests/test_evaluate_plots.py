"""Evaluation figures: each is written atomically and is a valid PNG (no TensorFlow needed)."""

import numpy as np
from conftest import write_identity_folders
from PIL import Image

from siamcli.evaluation import plots
from siamcli.evaluation.classification import classify
from siamcli.evaluation.verification import verification_metrics

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return image.size


def _predictions(identities, seed=0):
    rng = np.random.default_rng(seed)
    names = [f"person_{i:03d}" for i in range(identities)]
    truth = rng.choice(names, size=identities * 4)
    predicted = np.where(rng.random(len(truth)) < 0.7, truth, rng.choice(names, size=len(truth)))
    return classify(truth, predicted)


def test_confusion_heatmap_scales_with_identities_and_stays_a_png(tmp_path):
    small = tmp_path / "small.png"
    plots.confusion_heatmap(_predictions(5), small)
    large = tmp_path / "large.png"
    plots.confusion_heatmap(_predictions(45), large, normalize=True)
    huge = tmp_path / "huge.png"
    plots.confusion_heatmap(_predictions(200), huge)  # only the worst identities are drawn
    small_size, large_size, huge_size = assert_png(small), assert_png(large), assert_png(huge)
    assert large_size[0] > 1.5 * small_size[0]  # the figure grows with the identities
    # 200 identities draw only the worst HEATMAP_WORST (60): a little larger than 45, far from 200's size.
    assert large_size[0] < huge_size[0] < 2 * large_size[0]
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left behind


def test_roc_projection_and_errors_are_pngs(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat([f"id_{i}" for i in range(6)], 5)
    x = rng.normal(size=(30, 8)) + 2 * rng.normal(size=(6, 8))[np.repeat(np.arange(6), 5)]
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    plots.roc_plot(verification_metrics(x, labels), tmp_path / "roc.png")
    assert plots.projection_plot(x, labels, tmp_path / "tsne.png", "tsne") == "t-SNE"
    assert plots.projection_plot(x, labels, tmp_path / "pca.png", "pca") == "PCA"
    # "auto": t-SNE up to TSNE_LIMIT images, PCA past it.
    points, used = plots.project(x, "auto", 0)
    assert used == "t-SNE" and points.shape == (30, 2)
    many = np.repeat(x, plots.TSNE_LIMIT // len(x) + 1, axis=0)
    assert len(many) > plots.TSNE_LIMIT
    points, used = plots.project(many, "auto", 0)
    assert used == "PCA" and points.shape == (len(many), 2)
    images = write_identity_folders(tmp_path / "imgs", identities=2, per_identity=2, size=24)
    a, b = sorted(images.glob("id_0/*.png")), sorted(images.glob("id_1/*.png"))
    cases = [
        plots.ErrorCase(str(a[0]), "id_0", str(b[0]), "id_1", 0.1, str(a[1]), 0.2, 3),
        plots.ErrorCase(str(a[1]), "id_0", str(b[1]), "id_1", 0.1, None, None),
    ]
    plots.errors_plot(cases, tmp_path / "errors.png")
    plots.errors_plot([], tmp_path / "no_errors.png")
    for name in ("roc.png", "tsne.png", "pca.png", "errors.png", "no_errors.png"):
        assert_png(tmp_path / name)


def test_numeric_labels_are_the_heatmaps_tick_labels_in_numeric_order():
    """Digits as identities: each tick is the label itself, in numeric order (never the string
    order 0, 1, 10, 11, 2 … that reads like a broken axis), and the label thinning says so."""
    names = [str(i) for i in range(12)]
    rng = np.random.default_rng(0)
    truth = np.repeat(names, 4)
    figure = plots.confusion_figure(classify(truth, rng.permutation(truth)))
    axis = figure.axes[0]
    assert [t.get_text() for t in axis.get_xticklabels()] == names
    assert [t.get_text() for t in axis.get_yticklabels()] == names
    plots.plt.close(figure)
    many = [str(i) for i in range(0, 300, 2)]  # 150 identities: every 3rd label is drawn
    figure = plots.confusion_figure(classify(np.repeat(many, 2), np.repeat(many, 2)))
    axis = figure.axes[0]
    ticks = [int(t.get_text()) for t in axis.get_xticklabels()]
    assert ticks == sorted(ticks) and ticks[:3] == [0, 6, 12]
    assert "1 label in 3" in axis.get_xlabel()
    plots.plt.close(figure)


def test_the_confusion_tables_columns_are_the_numeric_labels_themselves():
    """`siamcli evaluate`'s confusion table: with labels 0–9 the columns were numbered 1–10 and the
    rows "1 0", "2 1" …; short labels now head the columns and rows themselves."""
    from siamcli.cli.evaluate_cmd import _confusion_table

    names = [str(i) for i in range(10)]
    table = _confusion_table(classify(np.repeat(names, 3), np.repeat(names, 3)))
    assert [column.header for column in table.columns[1:]] == names
    assert list(table.columns[0].cells) == names
    long = [f"person_{i:02d}" for i in range(12)]  # 12 columns this wide pass 80: keyed by letters beside the name
    table = _confusion_table(classify(np.repeat(long, 2), np.repeat(long, 2)))
    assert [column.header for column in table.columns[1:]] == list("ABCDEFGHIJKL")
    assert list(table.columns[0].cells)[:2] == ["A person_00", "B person_01"]

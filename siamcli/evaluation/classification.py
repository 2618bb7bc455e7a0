"""Nearest-neighbour classification: per-class precision, recall, F1, support and the confusion matrix.

Each query image (its identity has another image) is predicted to have the identity of its
nearest other image. The classes are the sorted union of true and predicted identities, so an
identity that is only ever predicted (a single-image identity, say) appears with support 0.
Every figure follows scikit-learn's definitions with `zero_division=0`:
precision = tp / predicted, recall = tp / support, F1 = 2·tp / (2·tp + fp + fn) (0 when
undefined), accuracy = share of correct predictions, macro F1 = unweighted mean of the classes'
F1. The confusion matrix has true identities as rows and predicted ones as columns.

Per-class figures come from scikit-learn's `precision_recall_fscore_support` (on integer codes
of the sorted classes, so in label order). The confusion matrix is kept here as its non-zero
cells: scikit-learn's is dense, classes², which thousands of identities cannot afford.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_fscore_support

PER_CLASS_COLUMNS = ["label", "precision", "recall", "f1", "support"]
DENSE_CONFUSION_LIMIT = 1000  # identities; past this confusion.csv lists non-zero cells instead


@dataclass(frozen=True)
class ClassificationResult:
    labels: list[str]  # the classes, sorted
    per_class: pd.DataFrame  # PER_CLASS_COLUMNS, one row per class, in label order
    confusion_cells: pd.DataFrame  # true, predicted, count: the non-zero cells of the confusion matrix
    accuracy: float
    macro_f1: float
    predictions: int  # queries classified

    def confusion_matrix(self, labels: list[str] | None = None) -> np.ndarray:
        """(classes, classes) int64 counts, rows true, columns predicted, in `labels` order; or
        only the given labels, in their order (dense for those alone)."""
        labels = self.labels if labels is None else list(labels)
        position = {label: i for i, label in enumerate(labels)}
        cells = self.confusion_cells
        if len(labels) < len(self.labels):
            cells = cells[cells["true"].isin(set(position)) & cells["predicted"].isin(set(position))]
        matrix = np.zeros((len(labels), len(labels)), np.int64)
        matrix[cells["true"].map(position).to_numpy(), cells["predicted"].map(position).to_numpy()] = cells["count"].to_numpy()
        return matrix

    def confusion_frame(self) -> pd.DataFrame:
        """confusion.csv: a square matrix (first column `label` = true identity, one column per
        predicted identity) up to DENSE_CONFUSION_LIMIT identities, else the non-zero cells as
        true, predicted, count rows."""
        if len(self.labels) > DENSE_CONFUSION_LIMIT:
            return self.confusion_cells
        frame = pd.DataFrame(self.confusion_matrix(), columns=self.labels)
        frame.insert(0, "label", self.labels)
        return frame

    def display_order(self, labels: list[str] | None = None) -> list[str]:
        """`labels` (default: all) in the order to show them: numerically when every one is a
        number (digits: 2 before 10), else in label order (the files' order)."""
        labels = sorted(self.labels if labels is None else labels)
        try:
            values = {label: float(label) for label in labels}
        except ValueError:
            return labels
        return sorted(labels, key=lambda label: (values[label], label))

    def worst_first(self, rows: int | None = None) -> pd.DataFrame:
        """Classes by F1 ascending (then larger support first, then label)."""
        ordered = self.per_class.assign(_negative_support=-self.per_class["support"]).sort_values(
            ["f1", "_negative_support", "label"], kind="stable"
        ).drop(columns="_negative_support")
        return ordered if rows is None else ordered.head(rows)


def classify(true_labels, predicted_labels) -> ClassificationResult:
    """Per-class metrics and confusion cells of predictions against the truth (same length)."""
    true_labels = np.asarray(true_labels).astype(str)
    predicted_labels = np.asarray(predicted_labels).astype(str)
    if true_labels.shape != predicted_labels.shape or true_labels.ndim != 1:
        raise ValueError("true and predicted labels must be 1-D and of the same length")
    labels, codes = np.unique(np.concatenate([true_labels, predicted_labels]), return_inverse=True)
    codes = codes.reshape(-1)
    count = len(true_labels)
    true_codes, predicted_codes = codes[:count], codes[count:]
    classes = len(labels)
    correct = true_codes == predicted_codes
    if count:
        precision, recall, f1, support = precision_recall_fscore_support(
            true_codes, predicted_codes, labels=np.arange(classes), average=None, zero_division=0
        )
    else:
        precision = recall = f1 = np.zeros(0)
        support = np.zeros(0, np.int64)
    per_class = pd.DataFrame(
        {"label": labels, "precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64)}
    )
    cell, cell_counts = np.unique(true_codes * classes + predicted_codes, return_counts=True)
    confusion_cells = pd.DataFrame(
        {"true": labels[cell // classes], "predicted": labels[cell % classes], "count": cell_counts.astype(np.int64)}
    )
    return ClassificationResult(
        labels=labels.tolist(),
        per_class=per_class,
        confusion_cells=confusion_cells,
        accuracy=float(correct.mean()) if count else float("nan"),
        macro_f1=float(f1.mean()) if classes else float("nan"),
        predictions=count,
    )

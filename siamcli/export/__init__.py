"""Exporting a trained run for runtimes without siamcli: TensorFlow SavedModel (TF Serving), LiteRT
(TFLite) and ONNX, one module per format (savedmodel.py, litert.py, onnx.py). Each artifact is
checked against `model.keras` when it is written (`siamcli.export.artifacts.export_run`;
reference: docs/export.md)."""

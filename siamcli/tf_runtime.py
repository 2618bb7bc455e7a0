"""Import TensorFlow late and quietly.

TensorFlow's C++ runtime prints start-up chatter (oneDNN, CUDA, CPU features) straight to file
descriptor 2 before Python can configure anything. We raise its log threshold and, during the
import only, point fd 2 at a temporary file; the text is replayed if the import fails.
"""

from __future__ import annotations

import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

_tf = None


def import_tensorflow():
    """Return the `tensorflow` module, imported with its start-up noise silenced."""
    global _tf
    if _tf is not None:
        return _tf
    if "tensorflow" in sys.modules:
        _tf = sys.modules["tensorflow"]
        return _tf
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import keras  # noqa: F401  (first import also prints)
            import tensorflow as tf

            tf.get_logger().setLevel("ERROR")
        except Exception:  # a failed import: its messages explain why (Ctrl-C shows none of them)
            os.dup2(saved, 2)
            capture.seek(0)
            sys.stderr.write(capture.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass
    _tf = tf
    return tf

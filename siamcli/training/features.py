"""The frozen-phase feature cache: the frozen backbone's features of every image, computed once.

In the frozen phase the backbone runs in inference mode and nothing random acts before it, so
it is a fixed function of the image: each training image's features, and those of `views` − 1
augmented copies of it (augment_images, seeded), are computed once and the head trains on
them. The start model is fitted on the same features.
"""

from __future__ import annotations

import time

import numpy as np

from siamcli.data.pipeline import augment_images
from siamcli.events import Events
from siamcli.tf_runtime import import_tensorflow

tf = import_tensorflow()

from siamcli.models.embed import embed  # noqa: E402

CHUNK = 256  # images augmented at a time


class FeatureCache:
    """(train features (views, n, d), validation features (val_views, n_val, d) or None), on first use.

    View 0 is the image itself; the others are augmented copies. `seconds` is what computing
    them took (0 until then): the first frozen epoch's time includes it.
    """

    def __init__(self, backbone, train_images: np.ndarray, val_images: np.ndarray, views: int, val_views: int,
                 seed: int, events: Events):
        self.backbone = backbone
        self.train_images, self.val_images = train_images, val_images
        self.views, self.val_views = views, val_views
        self.seed = seed
        self.events = events
        self.seconds = 0.0
        self._features: tuple[np.ndarray, np.ndarray | None] | None = None

    def get(self) -> tuple[np.ndarray, np.ndarray | None]:
        if self._features is None:
            started = time.perf_counter()
            self.events.stage("caching backbone features", len(self.train_images) * self.views + len(self.val_images) * self.val_views)
            train = self._view_features(self.train_images, self.views)
            val = self._view_features(self.val_images, self.val_views) if len(self.val_images) else None
            self._features = (train, val)
            self.seconds = time.perf_counter() - started
        return self._features

    def _view_features(self, images: np.ndarray, views: int) -> np.ndarray:
        """(views, n, d): the backbone features of the images, then of `views - 1` augmented copies."""
        out = [self._features_of(images)]
        for view in range(1, views):
            chunks = []
            for start in range(0, len(images), CHUNK):
                augmented = augment_images(tf, images[start:start + CHUNK], self.seed, view * 100_003 + start)
                chunks.append(self._features_of(np.asarray(augmented.numpy(), np.float32)))
            out.append(np.concatenate(chunks))
        return np.stack(out)

    def _features_of(self, images: np.ndarray) -> np.ndarray:
        return embed(self.backbone, images, batch_size=64, on_progress=self.events.advance).vectors

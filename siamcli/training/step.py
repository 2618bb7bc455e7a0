"""The train step and its optimiser: how a network is trained on P×K batches, under the run's
tf.distribute strategy (the global batch is split across replicas).

Both phases of the trainer and the identity folds (folds.py) train through `TrainStep`: it
builds the optimiser (Adam or AdamW on kernels, a constant or cosine rate, loss scaling under
mixed_float16) and one compiled step that embeds a batch on every replica, mines triplets over
the whole gathered batch and applies the gradients. `run` steps through a dataset and yields
each step's statistics; `EpochTotals` sums them into the epoch's history row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from siamcli.tf_runtime import import_tensorflow
from siamcli.training.config import COSINE_FLOOR, TrainConfig

tf = import_tensorflow()
import keras  # noqa: E402

from siamcli.models.triplet_loss import TripletStats, triplet_loss  # noqa: E402


def make_optimizer(config: TrainConfig, lr: float, variables, total_steps: int):
    """The optimiser for `variables`, built: AdamW with `config.weight_decay` (kernels only), else Adam."""
    schedule = lr
    if config.lr_schedule == "cosine":
        # Decays over the phase; the step counter lives in the optimiser, so a resumed run
        # continues the same curve.
        schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, total_steps), alpha=COSINE_FLOOR)
    if config.weight_decay:
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay)
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])  # kernels only
    else:
        optimizer = keras.optimizers.Adam(schedule)
    if config.precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(variables)
    return optimizer


def make_train_step(net, optimizer, strategy, margin: float, mining: str):
    """A compiled step: embed a P×K batch on every replica, mine, apply gradients, return stats."""

    def replica_step(inputs, labels, image_ids, seed):
        with tf.GradientTape() as tape:
            embeddings = net(inputs, training=True)
            loss, stats = triplet_loss(embeddings, labels, image_ids, margin, mining, seed)
            scaled = optimizer.scale_loss(loss) if hasattr(optimizer, "scale_loss") else loss
        variables = net.trainable_variables
        gradients = tape.gradient(scaled, variables)
        optimizer.apply_gradients(zip(gradients, variables))
        return stats

    @tf.function
    def step(batch, seed):
        inputs, labels, image_ids = batch
        stats = strategy.run(replica_step, args=(inputs, labels, image_ids, seed))
        # Stats are already global sums on every replica; read replica 0's copy.
        return tf.nest.map_structure(lambda value: strategy.experimental_local_results(value)[0], stats)

    return step


@dataclass(frozen=True)
class StepPlan:
    """How this run trains a network: its options, strategy, epoch length and P."""

    config: TrainConfig
    strategy: object
    steps_per_epoch: int
    identities_per_batch: int  # P: fewer than the options' when there are fewer training identities

    def train_step(self, net, lr: float, epochs: int) -> TrainStep:
        return TrainStep(net, self, lr, epochs)


class TrainStep:
    """One network's optimiser and its compiled step, for a phase of `epochs` epochs at rate `lr`."""

    def __init__(self, net, plan: StepPlan, lr: float, epochs: int):
        self.strategy = plan.strategy
        with plan.strategy.scope():
            self.optimizer = make_optimizer(plan.config, lr, net.trainable_variables, epochs * plan.steps_per_epoch)
        self._step = make_train_step(net, self.optimizer, plan.strategy, plan.config.margin, plan.config.mining)

    @property
    def learning_rate(self) -> float:
        """The rate the last step used (a schedule's current value)."""
        rate = self.optimizer.learning_rate
        return float(rate.numpy() if hasattr(rate, "numpy") else rate)

    def run(self, dataset, seed: int, epoch: int) -> Iterator[TripletStats]:
        """Train on every batch of `dataset`, yielding each step's stats (global sums).

        The step's random seed is (seed, epoch × 100003 + batch index): a run, or a resumed one,
        draws the same negatives in the same step.
        """
        options = tf.data.Options()
        # Every worker generates the same global batches; each keeps its replicas' slices.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        for index, batch in enumerate(self.strategy.experimental_distribute_dataset(dataset.with_options(options))):
            yield self._step(batch, tf.constant([seed, epoch * 100_003 + index], tf.int32))


class EpochTotals:
    """The sums of one epoch's step statistics, and what the history row makes of them."""

    def __init__(self):
        self.sums = dict.fromkeys(TripletStats._fields, 0.0)

    def add(self, stats: TripletStats) -> float:
        """Add one step's stats; returns that batch's mean loss."""
        values = {key: float(getattr(stats, key)) for key in self.sums}
        for key, value in values.items():
            self.sums[key] += value
        return values["loss_sum"] / max(values["loss_count"], 1.0)

    def row(self, images: int, seconds: float) -> dict:
        sums = self.sums
        return {
            "loss": sums["loss_sum"] / max(sums["loss_count"], 1.0),
            "active_fraction": sums["active_triplets"] / max(sums["valid_triplets"], 1.0),
            "positive_distance": sums["positive_distance_sum"] / max(sums["positive_pairs"], 1.0),
            "negative_distance": sums["negative_distance_sum"] / max(sums["negative_pairs"], 1.0),
            "images_per_second": images / max(seconds, 1e-9),
            "seconds": seconds,
        }

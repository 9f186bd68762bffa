"""Maximum-loss miner: of a few random subsets of the batch, the one with the largest loss.

Reference: pytorch-metric-learning 1.7.3 ``MaximumLossMiner`` (``miners/maximum_loss_miner.py``,
a ``BaseSubsetBatchMiner``; in PML 0.9.x to 1.7.3, removed in 2.0). ``num_trials`` times (default 5)
a subset of ``output_batch_size`` samples of the batch is drawn uniformly without replacement
and ``loss`` is evaluated on it (with ``miner``'s tuples of the subset, when given); the subset
of the largest loss wins (the first of equal ones, ``np.argmax``).

PML returns the winning subset's sample indices, for its trainer to embed again and to pass
to a tuple miner and the loss. A dmltf miner selects pairs for the loss it is attached to, so
here the miner returns the winner's tuples: ``loss``'s own miner (``miner`` when given) run on
the pairs of the winning subset, or all of its pairs when ``loss`` has no miner; the loss the
miner is attached to then computes on the winning subset only, which is PML's trainer step.
``loss`` is evaluated with its miner replaced by ``miner`` when given (PML's loss gets the
inner miner's ``indices_tuple``; without one, PML's loss uses all tuples, dmltf's its own
miner, ``"all"`` by default). A subset's loss is ``loss(labels, x, sample_weight=subset)``
(0/1 sample weights are the loss of the subset, the loss contract), on the embeddings with a
stopped gradient; the labels are rebuilt from the miner's label masks (a sample's label is the
index of the first sample of its class), so ``loss`` may be any loss on labels and embeddings.

The subsets are drawn with ``keras.random.uniform`` from a ``SeedGenerator(seed)`` (the rank of
each sample's draw, below ``output_batch_size``): the same seed gives the same subsets; the
generator's state is checkpointed with the loss that holds the miner (see ``distance_weighted``),
so a resumed run continues the draws. PML draws with numpy's global generator: the subsets
differ, the loss of given subsets and the choice among them are PML's. Like PML's subset
miners it takes the batch only (references raise a ValueError); ``output_batch_size`` larger
than a batch of static size raises too. Cost: ``num_trials`` evaluations of ``loss`` on the
whole batch's shapes (the subset is a weight), plus the tuple miner's once.

Example:
    >>> import numpy as np
    >>> from dmltf import losses, miners
    >>> m = miners.get("maximum_loss", loss="triplet", output_batch_size=4, num_trials=3, seed=0)
    >>> p = m(np.array([0, 0, 1, 1, 2, 2]), np.random.default_rng(0).normal(size=(6, 2)).astype("float32"))
    >>> int(np.asarray(p.pos).sum() + np.asarray(p.neg).sum())  # the 4 x 3 ordered pairs of one subset
    12
"""
import keras
from keras import ops

from dmltf import miners
from dmltf.miners.base import Miner, Pairs


def labels_from_masks(pos):
    """[B] int32 labels with the classes of the positive mask ``pos`` [B, B] (the batch against
    itself, a sample never its own positive): the index of the first sample of each class."""
    same = ops.logical_or(pos, ops.cast(ops.eye(ops.shape(pos)[0]), "bool"))
    return ops.cast(ops.argmax(ops.cast(same, "int32"), axis=1), "int32")


@miners.register
class MaximumLossMiner(Miner):
    registry_name = "maximum_loss"

    def __init__(self, loss, output_batch_size, miner=None, num_trials=5, seed=None, distance=None, **kwargs):
        super().__init__(distance, **kwargs)
        from dmltf import losses as losses_lib  # noqa: PLC0415 (dmltf.losses imports the miners)

        for name, value in (("output_batch_size", output_batch_size), ("num_trials", num_trials)):
            if int(value) != value or value < 1:
                raise ValueError(f"maximum_loss: {name} must be an integer >= 1, got {value!r}")
        self.output_batch_size, self.num_trials = int(output_batch_size), int(num_trials)
        self.loss = losses_lib.get(loss)
        if miner is not None:
            if not isinstance(self.loss, losses_lib.PairLoss):
                raise ValueError(f"maximum_loss: miner={miner!r} given, but {type(self.loss).__name__} takes no miner")
            config = {**self.loss.get_config(), "miner": miners.serialize(miners.get(miner))}
            self.loss = type(self.loss).from_config(config)
        self.tuple_miner = getattr(self.loss, "miner", None)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, labels, embeddings, ref_labels=None, ref_embeddings=None):
        if ref_embeddings is not None:
            raise ValueError("maximum_loss: the miner draws subsets of the batch and takes no references")
        return super().call(labels, embeddings)

    def mine_for_loss(self, mat, pos, neg, distance, embeddings, ref_embeddings):
        if ref_embeddings is not embeddings:
            raise ValueError("maximum_loss: the miner draws subsets of the batch; the loss was given references")
        return super().mine_for_loss(mat, pos, neg, distance, embeddings, ref_embeddings)

    def draw_subsets(self, batch_size):
        """[num_trials, B] bool: ``output_batch_size`` samples drawn without replacement, per trial."""
        if isinstance(batch_size, int) and self.output_batch_size > batch_size:
            raise ValueError(f"maximum_loss: output_batch_size={self.output_batch_size} is larger than the batch "
                             f"({batch_size} samples)")
        draws = keras.random.uniform((self.num_trials, batch_size), seed=self.seed_generator)
        rank = ops.argsort(ops.argsort(draws, axis=1), axis=1)
        return rank < self.output_batch_size

    def select(self, mat, pos, neg, distance, embeddings):
        return self.select_from(self.draw_subsets(ops.shape(mat)[0]), mat, pos, neg, distance, embeddings)[0]

    def select_from(self, subsets, mat, pos, neg, distance, embeddings):
        """(the tuples of the subset of largest loss among ``subsets`` [T, B] bool, [T] their losses)."""
        labels = labels_from_masks(pos)
        in_a_pair = ops.any(ops.logical_or(pos, neg), axis=1)  # a zero-weight sample is in none
        fixed = ops.stop_gradient(embeddings)
        trial_losses = ops.stack([
            self.loss(labels, fixed, sample_weight=ops.cast(ops.logical_and(subsets[t], in_a_pair), "float32"))
            for t in range(self.num_trials)])
        chosen = ops.take(subsets, ops.argmax(trial_losses), axis=0)
        both = ops.logical_and(ops.expand_dims(chosen, 1), ops.expand_dims(chosen, 0))
        pos, neg = ops.logical_and(pos, both), ops.logical_and(neg, both)
        if self.tuple_miner is None:
            return Pairs(ops.cast(pos, "float32"), ops.cast(neg, "float32")), trial_losses
        return self.tuple_miner.mine_for_loss(mat, pos, neg, distance, embeddings, embeddings), trial_losses

    def get_config(self):
        return {
            **super().get_config(),
            "loss": keras.saving.serialize_keras_object(self.loss),
            "output_batch_size": self.output_batch_size,
            "miner": miners.serialize(self.tuple_miner),
            "num_trials": self.num_trials,
            "seed": self.seed,
        }

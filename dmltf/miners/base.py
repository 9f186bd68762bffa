"""What miners return, the label masks they start from, and the miner base class.

A miner looks at a batch and says which tuples a loss should use. Pair miners return
:class:`Pairs` (two [B, R] 0/1 masks); triplet miners return :class:`Triplets` (index
vectors of a fixed length T with a 0/1 weight each, so memory stays O(T): O(B * R) for the
semi-hard and batch-hard miners, never the O(B^3) tiling of tensorflow-addons). Any pair-based
loss accepts any miner: :func:`to_pairs` and :func:`to_triplets` convert between the two.

Mining runs on a stopped gradient: it selects, the loss differentiates.
"""
from typing import NamedTuple

from keras import ops

from dmltf import distances as distances_lib
from dmltf.layers import SeededLayer

BIG = 1e30  # stands for +inf in masked minima; finite so that 0 * BIG stays 0


class Pairs(NamedTuple):
    """pos[i, j] / neg[i, j] are 1.0 where (query i, reference j) is a used positive / negative pair."""

    pos: object
    neg: object


class Triplets(NamedTuple):
    """Triplet t is (anchor[t], positive[t], negative[t]); weight[t] is 0.0 for padding."""

    anchor: object
    positive: object
    negative: object
    weight: object


def label_masks(labels, ref_labels, same_source):
    """Boolean [B, R] masks of positive and negative pairs; a sample is never its own positive."""
    same = ops.equal(ops.expand_dims(labels, 1), ops.expand_dims(ref_labels, 0))
    pos = same
    if same_source:
        n = ops.shape(labels)[0]
        pos = ops.logical_and(same, ops.logical_not(ops.cast(ops.eye(n), "bool")))
    return pos, ops.logical_not(same)


def as_distance(mat, distance):
    """The matrix with 'smaller is closer' semantics (similarities are negated)."""
    return -mat if distance.is_inverted else mat


def to_pairs(mined, num_queries, num_refs):
    """Pairs used by a miner's output: triplets contribute their (a, p) and (a, n) pairs."""
    if isinstance(mined, Pairs):
        return mined
    shape = (num_queries * num_refs,)
    pos_idx = mined.anchor * num_refs + mined.positive
    neg_idx = mined.anchor * num_refs + mined.negative
    w = mined.weight
    pos = ops.minimum(ops.scatter(ops.expand_dims(pos_idx, 1), w, shape), 1.0)
    neg = ops.minimum(ops.scatter(ops.expand_dims(neg_idx, 1), w, shape), 1.0)
    return Pairs(ops.reshape(pos, (num_queries, num_refs)), ops.reshape(neg, (num_queries, num_refs)))


def pair_masks(mined, mat):
    """Boolean [B, R] masks of the positive and negative pairs a miner's output uses."""
    pairs = to_pairs(mined, ops.shape(mat)[0], ops.shape(mat)[1])
    return pairs.pos > 0, pairs.neg > 0


def to_triplets(mined):
    """Triplets of a miner's output: pairs give every (a, p, n) with (a, p) and (a, n) used.

    From pairs this is O(B * R^2) memory, as any all-triplets formulation is.
    """
    if isinstance(mined, Triplets):
        return mined
    pos, neg = mined
    b, r = ops.shape(pos)[0], ops.shape(pos)[1]
    w = ops.expand_dims(pos, 2) * ops.expand_dims(neg, 1)  # [B, R(p), R(n)]
    a_idx, p_idx, n_idx = ops.meshgrid(ops.arange(b), ops.arange(r), ops.arange(r), indexing="ij")
    flat = lambda t: ops.reshape(t, (-1,))
    return Triplets(flat(a_idx), flat(p_idx), flat(n_idx), flat(w))


def pair_lists(mat, mined):
    """The used positive and negative pairs as flat lists ``(values, weights, rows)`` each.

    A triplet miner's output gives one positive and one negative pair per triplet (a pair
    used by several triplets counts as often); a pair miner's output gives each pair once.
    ``rows`` are the query indices, e.g. to look up a per-class parameter of the anchor.
    """
    if isinstance(mined, Triplets):
        a = mined.anchor
        ap, an = gather_pairs(mat, a, mined.positive), gather_pairs(mat, a, mined.negative)
        return (ap, mined.weight, a), (an, mined.weight, a)
    b, r = ops.shape(mat)[0], ops.shape(mat)[1]
    rows = ops.repeat(ops.arange(b), r)
    flat = ops.reshape(mat, (-1,))
    return (flat, ops.reshape(mined.pos, (-1,)), rows), (flat, ops.reshape(mined.neg, (-1,)), rows)


def gather_pairs(mat, rows, cols):
    """mat[rows[t], cols[t]] for index vectors rows, cols."""
    r = ops.shape(mat)[1]
    return ops.take(ops.reshape(mat, (-1,)), rows * r + cols)


class Miner(SeededLayer):
    """Base class. Subclasses implement :meth:`mine` on a distance matrix and label masks.

    ``distance=None`` means "the distance of the loss I am attached to" (squared euclidean
    when called on its own).

    A miner is a Keras layer so that its state is the model's: a loss holding it as
    ``self.miner`` tracks it, and a ``keras.random.SeedGenerator`` attribute's state is
    checkpointed with it (``tf.train.Checkpoint``), so a resumed run continues its draws.
    Subclasses set ``registry_name`` (a layer's ``name`` is its instance name).
    """

    registry_name = None
    default_distance = "squared_euclidean"

    def __init__(self, distance=None, **kwargs):
        kwargs.setdefault("dtype", "float32")  # mining runs in float32 under mixed precision too
        super().__init__(**kwargs)
        self.distance = None if distance is None else distances_lib.get(distance)
        self.built = True  # no weights to build: all state exists after __init__

    def call(self, labels, embeddings, ref_labels=None, ref_embeddings=None):
        from dmltf.losses.base import prepare_inputs  # shared input handling

        labels, embeddings, ref_labels, ref_embeddings, same_source = prepare_inputs(
            labels, embeddings, ref_labels, ref_embeddings
        )
        distance = self.distance or distances_lib.get(self.default_distance)
        mat = distance.pairwise(embeddings, ref_embeddings)
        pos, neg = label_masks(labels, ref_labels, same_source)
        return self.select(mat, pos, neg, distance, embeddings)

    def mine_for_loss(self, mat, pos, neg, distance, embeddings, ref_embeddings):
        """Mine with the loss's matrix, or with this miner's own distance if it has one."""
        if self.distance is not None and type(self.distance) is not type(distance):
            distance = self.distance
            mat = distance.pairwise(embeddings, ref_embeddings)
        return self.select(ops.stop_gradient(mat), pos, neg, distance, embeddings)

    def select(self, mat, pos, neg, distance, embeddings):
        """What the miner picks; most miners need only the matrix and the masks (``mine``)."""
        return self.mine(mat, pos, neg, distance)

    def mine(self, mat, pos, neg, distance):
        raise NotImplementedError

    def get_config(self):
        """The miner's hyper-parameters: what ``dmltf.miners.get`` takes with the registry name
        (the layer's own name and dtype are not part of a miner's identity)."""
        return {"distance": None if self.distance is None else self.distance.name}

    def __repr__(self):
        return f"{type(self).__name__}({self.get_config()})"

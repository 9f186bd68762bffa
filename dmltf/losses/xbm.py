"""Cross-batch memory (XBM): compare each batch with the embeddings of past batches too.

Reference: Wang, Zhang, Huang & Scott 2020, "Cross-Batch Memory for Embedding Learning"
(official ``msight-tech/research-xbm``: ``ret_benchmark/modeling/xbm.py``,
``ret_benchmark/engine/trainer.py``; defaults SIZE 8192, START_ITERATION 2000, WEIGHT 1.0,
loss ms_loss). The memory is a FIFO ring buffer of non-trainable variables:
``memory_embeddings`` [memory_size, D] (detached float32 embeddings), ``memory_labels``
[memory_size], ``memory_filled`` (valid rows) and ``memory_pointer`` (next row to write),
plus ``step``, the number of calls so far. Each call returns

    loss(batch, batch) + memory_weight * loss(batch, memory)      (second term once step >= warmup_steps)

and, once ``step >= warmup_steps``, enqueues the batch (the oldest rows are overwritten).
While the memory is empty, or during the warm-up, only the first term is used.

Difference from the official order: the official trainer enqueues the batch *before* the
memory loss, so the memory holds the batch itself, and relies on the loss dropping a sample's
pair with itself (its ``s < 1 - 1e-5`` filter). Here the memory loss sees the memory of past
batches only and the batch is enqueued afterwards: the batch-with-batch pairs are exactly the
first term and no self-pair can occur. (pytorch-metric-learning's ``CrossBatchMemory``
instead computes a single loss of the batch against memory + batch, without warm-up.)
When references are given (a gathered global batch under a distribution strategy), the
first term compares the batch with them and they are what is enqueued.

Sample weights weigh the queries in both terms (passed on to the wrapped loss); the memory's
rows weigh 1. Without references the batch's zero-weight samples are not enqueued, so with
0/1 weights the memory, like the loss, is that of the kept samples; with references those
are what is enqueued, all of them but those of ``ref_sample_weight`` 0.

Works inside ``tf.function`` and ``jax.jit``: the memory loss sees every row, the rows not filled
yet with ``ref_sample_weight`` 0.
The variables are created on the first call, from the embedding dimension.

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> xbm = get("xbm", loss="contrastive", memory_size=8, warmup_steps=0)
    >>> x = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    >>> first = float(xbm(np.array([0, 0, 1, 1]), x))  # memory empty: the batch loss only
    >>> int(xbm.memory_filled.numpy()), float(xbm(np.array([0, 0, 1, 1]), x)) >= first
    (4, True)
"""
import keras
from keras import ops

from dmltf import losses as losses_lib
from dmltf.losses import register
from dmltf.losses.base import MetricLoss, ProxyLoss, prepare_inputs, prepare_weights


@register("xbm")
class CrossBatchMemory(MetricLoss):
    def __init__(self, loss="multi_similarity", memory_size=8192, warmup_steps=2000, memory_weight=1.0,
                 embedding_dim=None, **kwargs):
        wrapped = losses_lib.get(loss)
        if isinstance(wrapped, ProxyLoss):
            raise ValueError(f"xbm wraps a pair-based loss; {type(wrapped).__name__} ignores references")
        kwargs.setdefault("lr_multiplier", wrapped.lr_multiplier)  # the wrapped loss's own weights
        super().__init__(**kwargs)
        self.loss = wrapped  # after Layer.__init__: on PyTorch a layer is a torch Module
        self.memory_size = int(memory_size)
        self.warmup_steps = int(warmup_steps)
        self.memory_weight = float(memory_weight)
        if self.memory_size < 1:
            raise ValueError(f"xbm: memory_size must be >= 1, got {memory_size}")
        state = lambda name, shape, dtype: self.add_weight(
            name=name, shape=shape, dtype=dtype, initializer="zeros", trainable=False,
            aggregation="only_first_replica",
        )
        self._state = state
        self.step = state("step", (), "int64")
        self.memory_labels = state("memory_labels", (self.memory_size,), "int32")
        self.memory_filled = state("memory_filled", (), "int32")
        self.memory_pointer = state("memory_pointer", (), "int32")
        self.embedding_dim = embedding_dim
        if embedding_dim is not None:  # known up front (the trainer passes it): no variable creation in a step
            self.build((None,), (None, int(embedding_dim)))

    def build(self, labels_shape, embeddings_shape):
        self.memory_embeddings = self._state("memory_embeddings", (self.memory_size, embeddings_shape[-1]), "float32")
        self.built = True

    def call(self, labels, embeddings, ref_labels=None, ref_embeddings=None, sample_weight=None,
             ref_sample_weight=None):
        labels, embeddings, ref_labels, ref_embeddings, same_source = prepare_inputs(
            labels, embeddings, ref_labels, ref_embeddings
        )
        weights = prepare_weights(sample_weight, labels, ref_labels, same_source, ref_sample_weight)
        if same_source:
            batch_loss = self.loss(labels, embeddings, sample_weight=sample_weight)
        else:
            batch_loss = self.loss(labels, embeddings, ref_labels, ref_embeddings, sample_weight=sample_weight,
                                   ref_sample_weight=ref_sample_weight)
        use_memory = self.step.value >= self.warmup_steps

        def memory_loss():
            # Every row, the empty ones weighing 0: no data-dependent shape (jax.jit compiles it).
            filled = ops.cast(ops.arange(self.memory_size) < self.memory_filled.value, "float32")
            memory = ops.stop_gradient(self.memory_embeddings.value)
            return self.loss(labels, embeddings, self.memory_labels.value, memory, sample_weight=sample_weight,
                             ref_sample_weight=filled)

        memory_term = ops.cond(
            ops.logical_and(use_memory, self.memory_filled.value > 0), memory_loss, lambda: ops.zeros(())
        )
        # Enqueue only after the memory term has read the memory (program order inside tf.function).
        self._enqueue(ref_labels, ops.stop_gradient(ref_embeddings), weights.ref > 0, use_memory)
        self.step.assign_add(ops.ones((), "int64"))
        return batch_loss + self.memory_weight * memory_term

    def _enqueue(self, labels, embeddings, kept, active):
        """Write the ``kept`` rows of the batch into the queue in order (of more than it holds,
        the last ones) where ``active``. The assignments themselves are unconditional, since
        under a tf.distribute strategy they synchronise replicas, which cannot happen inside a
        cond; rows not written go to a scratch row past the end that is dropped, since how many
        rows are kept is only known at run time."""
        size = self.memory_size
        kept = ops.cast(kept, "int32")
        count = ops.sum(kept)
        skipped = ops.maximum(count - size, 0)
        position = ops.cumsum(kept) - kept - skipped  # among the rows written
        written = ops.logical_and(kept > 0, position >= 0)
        pointer, filled = self.memory_pointer.value, self.memory_filled.value
        rows = ops.expand_dims(ops.where(written, (pointer + position) % size, size), 1)
        stored = count - skipped
        keep = lambda new, old: ops.where(active, new, old)  # noqa: E731

        def write(memory, values):
            with_scratch = ops.concatenate([memory, ops.zeros_like(memory[:1])])
            return keep(ops.scatter_update(with_scratch, rows, values)[:size], memory)

        self.memory_embeddings.assign(write(self.memory_embeddings.value, embeddings))
        self.memory_labels.assign(write(self.memory_labels.value, labels))
        self.memory_pointer.assign(keep((pointer + stored) % size, pointer))
        self.memory_filled.assign(keep(ops.minimum(filled + stored, size), filled))

    def get_config(self):
        return {
            **super().get_config(),
            "loss": keras.saving.serialize_keras_object(self.loss),
            "memory_size": self.memory_size,
            "warmup_steps": self.warmup_steps,
            "memory_weight": self.memory_weight,
            "embedding_dim": self.embedding_dim,
        }

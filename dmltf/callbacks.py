"""Keras callbacks for ``model.fit``: retrieval metrics of a held-out set at epoch ends.

:class:`RetrievalEvaluation` is TensorFlow Similarity's ``EvalCallback``
(``tensorflow_similarity/callbacks.py``) for dmltf: at the end of an epoch it embeds the
queries (and the references, if given) with the model being fitted and writes
:func:`dmltf.evaluation.evaluate`'s figures into the epoch's ``logs``, so that ``History``
and any callback after it (``keras.callbacks.TensorBoard``, ``EarlyStopping``,
``ModelCheckpoint(monitor="val_recall@1")``) see them. Deviations from TFSim: the metrics are
:func:`dmltf.evaluation.metric_names` (exact kNN retrieval, not an index's matcher and
threshold classification metrics), and nothing is written by the callback itself (no
``tb_logdir``): a TensorBoard callback placed after it records the figures.

Example:
    >>> import numpy as np, keras
    >>> from dmltf import losses
    >>> from dmltf.callbacks import RetrievalEvaluation
    >>> from dmltf.methods import MetricLearner
    >>> from dmltf.models import build_embedding_model
    >>> x = np.random.default_rng(0).random((12, 8, 8, 1), "float32")
    >>> y = np.arange(12) % 3
    >>> learner = MetricLearner(build_embedding_model("small_cnn", (8, 8, 1), embedding_dim=4),
    ...                         losses.get("contrastive"))
    >>> learner.compile(optimizer=keras.optimizers.SGD(0.01))
    >>> history = learner.fit(x, y, batch_size=6, verbose=0, callbacks=[RetrievalEvaluation(x, y)])
    >>> sorted(k for k in history.history if k.startswith("val_"))
    ['val_map@r', 'val_recall@1']
"""
import numbers
import warnings

import keras
import numpy as np
import tensorflow as tf

from dmltf.evaluation import check_metrics, evaluate
from dmltf.evaluation.search import DISTANCES
from dmltf.losses import MetricLoss


class RetrievalEvaluation(keras.callbacks.Callback):
    """Writes ``logs[prefix + metric]`` for each metric at the end of every ``every_n_epochs``-th epoch.

    Args:
        queries: images [N, ...] (numpy or tensor) with ``query_labels`` [N], or a
            ``tf.data.Dataset`` of batched ``(images, labels)`` (``query_labels`` then None).
        references, reference_labels: the gallery searched, given like the queries; without
            it the queries are searched among themselves, each query's own entry excluded.
        metrics: names of :func:`dmltf.evaluation.metric_names` (``recall@K`` for any K).
        prefix: of the keys written into ``logs``.
        batch_size: images embedded at once (numpy inputs).
        every_n_epochs: evaluate after epochs n, 2n, ... (1-based), as Keras' ``validation_freq``.
        distance: of the search, ``"euclidean"``, ``"cosine"`` or ``"dot"``.
        verbose: print the figures of each evaluation.

    The model's ``embed`` gives the embeddings when it has one (a dmltf ``Method``), traced
    once; otherwise its ``predict_on_batch`` (any Keras model whose output is the embedding).
    ``self.results`` holds the last evaluation's whole result (with ``num_queries``). At the
    start of training it warns when the model was compiled with ``loss=`` a loss whose own
    weights (proxies) that model does not train (use ``MetricLearner``).
    """

    def __init__(self, queries, query_labels=None, references=None, reference_labels=None,
                 metrics=("recall@1", "map@r"), prefix="val_", batch_size=256, every_n_epochs=1,
                 distance="euclidean", verbose=0):
        super().__init__()
        self.metrics = tuple(check_metrics(metrics))
        if distance not in DISTANCES:
            raise ValueError(f"RetrievalEvaluation: unknown distance {distance!r}; valid: {', '.join(DISTANCES)}")
        for name, value in (("every_n_epochs", every_n_epochs), ("batch_size", batch_size)):
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"RetrievalEvaluation: {name} must be an integer >= 1, got {value!r}")
        self.queries = _checked_set(queries, query_labels, "queries", "query_labels")
        self.references = None
        if references is not None or reference_labels is not None:
            self.references = _checked_set(references, reference_labels, "references", "reference_labels")
        self.prefix, self.batch_size, self.every_n_epochs = str(prefix), int(batch_size), int(every_n_epochs)
        self.distance, self.verbose = distance, verbose
        self.results = None
        self._embed = None

    def set_model(self, model):
        super().set_model(model)
        embed = getattr(model, "embed", None)
        self._embed = tf.function(embed, reduce_retracing=True) if callable(embed) else model.predict_on_batch

    def on_train_begin(self, logs=None):
        # model.compile(loss=proxy_loss) trains only the model's own variables: the proxies stay put.
        loss = getattr(self.model, "loss", None)
        trained = {id(v) for v in self.model.trainable_variables}
        if isinstance(loss, MetricLoss) and any(id(v) not in trained for v in loss.trainable_variables):
            warnings.warn(f"{type(loss).__name__}'s own weights (proxies) are not among the variables that "
                          f"model.compile(loss=...) trains: they stay at their initial values. Train "
                          f"dmltf.methods.MetricLearner(embedding_model, loss) instead (compiled without loss=), "
                          f"which trains them at the loss's lr_multiplier", stacklevel=2)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs:
            return
        queries, query_labels = self._embedded(self.queries, "queries")
        refs, ref_labels = self._embedded(self.references, "references") if self.references is not None else (None, None)
        self.results = evaluate(queries, query_labels, refs, ref_labels, metrics=self.metrics,
                                distance=self.distance)
        figures = {self.prefix + name: float(self.results[name]) for name in self.metrics}
        if logs is not None:
            logs.update(figures)
        if self.verbose:
            print(f"epoch {epoch + 1}: " + ", ".join(f"{k}={v:.4f}" for k, v in figures.items()))

    def _embedded(self, images_and_labels, name):
        """(float32 embeddings [N, D], labels [N]) of a checked set."""
        images, labels = images_and_labels
        batches = images if labels is None else (
            (images[i:i + self.batch_size], labels[i:i + self.batch_size]) for i in range(0, len(images), self.batch_size))
        embeddings, all_labels = [], []
        for batch_images, batch_labels in batches:
            batch_labels = np.asarray(batch_labels)
            if batch_labels.ndim == 0:
                raise ValueError(f"RetrievalEvaluation: {name} dataset gives one label per element, not a batch of "
                                 f"them: batch it (dataset.batch(n))")
            embeddings.append(np.asarray(keras.ops.convert_to_numpy(self._embed(batch_images)), np.float32))
            all_labels.append(batch_labels)
        if not embeddings:
            raise ValueError(f"RetrievalEvaluation: {name} dataset is empty")
        return np.concatenate(embeddings), np.concatenate(all_labels)


def _checked_set(images, labels, name, labels_name):
    """(images, labels) as given (numpy: checked lengths), or (dataset, None)."""
    if isinstance(images, tf.data.Dataset):
        if labels is not None:
            raise ValueError(f"RetrievalEvaluation: {name} is a tf.data.Dataset of (images, labels); "
                             f"{labels_name} must not be given too")
        spec = images.element_spec
        if not isinstance(spec, tuple) or len(spec) != 2:
            raise ValueError(f"RetrievalEvaluation: the {name} dataset must give (images, labels) pairs, got {spec}")
        return images, None
    if images is None or labels is None:
        raise ValueError(f"RetrievalEvaluation: give {name} and {labels_name} together (or {name} as a "
                         f"tf.data.Dataset of (images, labels))")
    labels = np.asarray(labels)
    if labels.ndim not in (1, 2) or (labels.ndim == 2 and labels.shape[1] != 1):
        raise ValueError(f"RetrievalEvaluation: {labels_name} must be 1-D [N], got shape {labels.shape}")
    if len(labels) != len(images):
        raise ValueError(f"RetrievalEvaluation: {labels_name} has {len(labels)} entries but {name} has "
                         f"{len(images)} images")
    if not len(labels):
        raise ValueError(f"RetrievalEvaluation: {name} is empty")
    return np.asarray(images), labels

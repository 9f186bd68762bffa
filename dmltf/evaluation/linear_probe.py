"""Linear evaluation (``linear_accuracy``): a softmax classifier trained on frozen embeddings.

Reference: shi510/dml-tf ``evalutate/linear.py`` (commit a18af8d, run at the end of
``train/main.py`` in 1df42c0 / 639c5e9; METHODS.md 4.1 "Linear eval accuracy"): the trained
network frozen, one ``Dense(classes)`` on its output trained with softmax cross-entropy, Adam
1e-4, batches of 64 (the run's batch size), up to 100 epochs, ``EarlyStopping(patience=3)`` on
``val_loss``; the accuracy reported is the last epoch's on the test split.

Two protocols, named in ``evaluate``'s ``linear_probe_protocol`` entry:

* ``"probe_split"``: the probe is fit on given probe embeddings (a training run passes its train
  split's) and scores every evaluated embedding: the seed's protocol, meaningful when the two
  share classes (every evaluated label must be among the probe's).
* ``"eval_halves"`` (zero-shot splits, whose test classes were never trained on): the evaluated
  split alone, each class's images in a fixed seeded order, the first ceil(n / 2) fit the probe
  and the other floor(n / 2) score it (a class of one image is only fitted).

Training, as Keras ``fit`` with the seed's settings: glorot-uniform kernel and zero bias; each
epoch reshuffles the fitting set and takes batches of ``batch_size`` (the last one partial); Adam
(beta 0.9 / 0.999, epsilon 1e-7, Keras' bias correction); after each epoch the mean cross-entropy
on the held-out set decides the early stop (stop once it has not decreased for ``patience``
epochs; the weights are those of the last epoch, as ``restore_best_weights=False``). Everything
runs in one ``tf.function`` (no Python per step): fitting 8,000 x 64 embeddings of 100 classes for
100 epochs takes about 2 s on two CPU cores.

Deviations: (1) the seed's ``validation_data`` is the *test* split, so it stops on test loss; here
a seeded per-class ``validation_fraction`` (10%, floor of each class's count) of the fitting set
is held out instead, and with none held out all ``max_epochs`` run. (2) The embeddings are computed
once (the eval transform, no dropout) where the seed's frozen network ran its train pipeline's
random crops, and Dropout(0.5) stayed active, at every probe epoch. (3) The probe sees the
embeddings it is given: a training run passes them L2-normalised when ``--eval_l2_normalize``
(the seed's were raw).

Example:
    >>> import numpy as np
    >>> x = np.repeat(np.eye(3, dtype="float32") * 10, 20, axis=0)
    >>> y = np.repeat([0, 1, 2], 20)
    >>> linear_accuracy(x, y, learning_rate=0.1, max_epochs=5)
    (1.0, 'eval_halves')
"""
import numpy as np
import tensorflow as tf

from dmltf.evaluation.metrics import LINEAR_ACCURACY as METRIC
from dmltf.evaluation.metrics import LINEAR_PROBE_PROTOCOL as PROTOCOL_KEY
from dmltf.evaluation.search import prepare_embeddings, to_numpy

PROTOCOLS = ("probe_split", "eval_halves")
_BETA_1, _BETA_2, _EPSILON = 0.9, 0.999, 1e-7  # Keras Adam's defaults


def eval_halves(labels, seed=0):
    """(fit, score) index arrays: per class a fixed seeded half, ceil(n / 2) to fit the probe."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    fit, score = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        half = (len(members) + 1) // 2
        fit.append(members[:half])
        score.append(members[half:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(score))


def _held_out(codes, fraction, seed):
    """Boolean mask of a seeded floor(fraction * count) of each class, for the early stop."""
    rng = np.random.default_rng([seed, 1])
    mask = np.zeros(len(codes), bool)
    for code in np.unique(codes):
        members = rng.permutation(np.flatnonzero(codes == code))
        mask[members[: int(fraction * len(members))]] = True
    return mask


def _labels(labels, num, name):
    labels = to_numpy(labels, name)
    if labels.shape != (num,):
        raise ValueError(f"{name} must be 1-D with one entry per embedding ({num}), got shape {labels.shape}")
    return labels


def _cross_entropy(x, y, kernel, bias):
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, tf.matmul(x, kernel) + bias))


@tf.function(reduce_retracing=True)
def _fit(x, y, x_val, y_val, kernel, bias, seed, learning_rate, max_epochs, patience, batch_size):
    """Adam on softmax cross-entropy with early stopping; returns (kernel, bias, epochs run)."""
    n, num_classes = tf.shape(x)[0], tf.shape(kernel)[1]
    steps = (n + batch_size - 1) // batch_size
    moments = [tf.zeros_like(kernel), tf.zeros_like(bias), tf.zeros_like(kernel), tf.zeros_like(bias)]
    iterations = tf.constant(0.0)
    best, wait, epochs = tf.constant(np.inf, tf.float32), tf.constant(0), tf.constant(0)
    for epoch in tf.range(max_epochs):
        order = tf.argsort(tf.random.stateless_uniform([n], tf.random.experimental.stateless_fold_in(seed, epoch)))
        for step in tf.range(steps):
            batch = order[step * batch_size: (step + 1) * batch_size]
            xb = tf.gather(x, batch)
            logits = tf.matmul(xb, kernel) + bias
            # d(mean cross-entropy)/d(logits), then the two parameters' gradients
            g = (tf.nn.softmax(logits) - tf.one_hot(tf.gather(y, batch), num_classes)) / tf.cast(tf.size(batch),
                                                                                                   tf.float32)
            grads = [tf.matmul(xb, g, transpose_a=True), tf.reduce_sum(g, axis=0)]
            iterations += 1.0
            alpha = learning_rate * tf.sqrt(1.0 - _BETA_2 ** iterations) / (1.0 - _BETA_1 ** iterations)
            m = [_BETA_1 * mi + (1.0 - _BETA_1) * gi for mi, gi in zip(moments[:2], grads)]
            v = [_BETA_2 * vi + (1.0 - _BETA_2) * gi * gi for vi, gi in zip(moments[2:], grads)]
            moments = m + v
            kernel = kernel - alpha * m[0] / (tf.sqrt(v[0]) + _EPSILON)
            bias = bias - alpha * m[1] / (tf.sqrt(v[1]) + _EPSILON)
        epochs += 1
        if tf.shape(x_val)[0] > 0:
            loss = _cross_entropy(x_val, y_val, kernel, bias)
            if loss < best:
                best, wait = loss, 0
            else:
                wait += 1
            if wait >= patience:
                break
    return kernel, bias, epochs


def train_probe(x, y, num_classes, *, seed=0, learning_rate=1e-4, max_epochs=100, patience=3, batch_size=64,
                validation_fraction=0.1):
    """Fit the linear probe on float32 ``x`` [N, D] and int codes ``y`` [N] in [0, num_classes);
    returns (kernel [D, C], bias [C], epochs run) as numpy."""
    held_out = _held_out(y, validation_fraction, seed)
    limit = np.sqrt(6.0 / (x.shape[1] + num_classes))  # Keras' glorot_uniform
    kernel = tf.random.stateless_uniform([x.shape[1], num_classes], [seed, 2], -limit, limit)
    outputs = _fit(tf.constant(x[~held_out]), tf.constant(y[~held_out], tf.int32), tf.constant(x[held_out]),
                   tf.constant(y[held_out], tf.int32), kernel, tf.zeros([num_classes]),
                   tf.constant([seed, 3], tf.int64), tf.constant(learning_rate, tf.float32),
                   tf.constant(max_epochs), tf.constant(patience), tf.constant(batch_size))
    return tuple(t.numpy() for t in outputs)


def linear_accuracy(embeddings, labels, probe_embeddings=None, probe_labels=None, *, seed=0, **training):
    """(accuracy, protocol) of a linear probe (see the module docstring); ``training``: the
    keyword arguments of :func:`train_probe` (learning_rate, max_epochs, patience, batch_size,
    validation_fraction)."""
    x = prepare_embeddings(embeddings, "euclidean", "embeddings")
    labels = _labels(labels, len(x), "labels")
    if (probe_embeddings is None) != (probe_labels is None):
        raise ValueError("give both probe_embeddings and probe_labels, or neither")
    if probe_embeddings is None:
        protocol = "eval_halves"
        fit, score = eval_halves(labels, seed)
        if not len(score):
            raise ValueError("linear_accuracy: no class of the evaluated split has two images, so none can be "
                             "scored on its other half")
        fit_x, fit_labels, x, labels = x[fit], labels[fit], x[score], labels[score]
    else:
        protocol = "probe_split"
        fit_x = prepare_embeddings(probe_embeddings, "euclidean", "probe_embeddings")
        if not len(fit_x):
            raise ValueError("probe_embeddings is empty")
        fit_labels = _labels(probe_labels, len(fit_x), "probe_labels")
        if fit_x.shape[1] != x.shape[1]:
            raise ValueError(f"probe_embeddings have dimension {fit_x.shape[1]} but embeddings {x.shape[1]}")
    classes = np.unique(fit_labels)
    unseen = np.setdiff1d(labels, classes)
    if len(unseen):
        raise ValueError(f"linear_accuracy: {len(unseen)} evaluated classes (e.g. {unseen[0]!r}) are not among the "
                         f"probe's labels; without probe data the zero-shot protocol fits on the evaluated split")
    kernel, bias, _ = train_probe(fit_x, np.searchsorted(classes, fit_labels), len(classes), seed=seed, **training)
    predicted = classes[np.argmax(x @ kernel + bias, axis=1)]
    return float(np.mean(predicted == labels)), protocol

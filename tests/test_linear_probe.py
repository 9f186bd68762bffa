"""linear_accuracy (dmltf.evaluation.linear_probe): its training loop against a float64 numpy Adam
with Keras' early stopping written here, both protocols, and the wiring into evaluate, the
trainer's evaluation and --eval_metrics."""
import numpy as np
import pytest
import tensorflow as tf

import config
from dmltf import data, evaluation
from dmltf.evaluation import linear_probe
from dmltf.training import trainer, validation


def numpy_probe(x, y, x_val, y_val, kernel, bias, orders, lr, patience):
    """Softmax regression by Adam (Keras' update and bias correction, epsilon 1e-7) over the given
    per-epoch sample orders in batches, EarlyStopping(patience) on the held-out mean cross-entropy."""
    x, x_val, w, b = (np.asarray(a, np.float64) for a in (x, x_val, kernel, bias))
    m, v, t = [np.zeros_like(w), np.zeros_like(b)], [np.zeros_like(w), np.zeros_like(b)], 0

    def loss_and_grads(xb, yb, w, b):
        z = xb @ w + b
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        loss = -np.log(p[np.arange(len(yb)), yb]).mean()
        p[np.arange(len(yb)), yb] -= 1.0
        return loss, [xb.T @ p / len(yb), p.sum(axis=0) / len(yb)]

    best, wait, epochs = np.inf, 0, 0
    for batches in orders:
        for batch in batches:
            _, grads = loss_and_grads(x[batch], y[batch], w, b)
            t += 1
            params = []
            for i, (param, g) in enumerate(zip((w, b), grads)):
                m[i] = 0.9 * m[i] + 0.1 * g
                v[i] = 0.999 * v[i] + 0.001 * g * g
                step = lr * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
                params.append(param - step * m[i] / (np.sqrt(v[i]) + 1e-7))
            w, b = params
        epochs += 1
        val_loss, _ = loss_and_grads(x_val, y_val, w, b)
        if val_loss < best:
            best, wait = val_loss, 0
        else:
            wait += 1
        if wait >= patience:
            break
    return w, b, epochs


def run_fit(x, y, x_val, y_val, kernel, bias, seed, lr, max_epochs, patience, batch_size):
    out = linear_probe._fit(*(tf.constant(a) for a in (x, y, x_val, y_val, kernel, bias)), tf.constant(seed, tf.int64),
                            tf.constant(lr, tf.float32), tf.constant(max_epochs), tf.constant(patience),
                            tf.constant(batch_size))
    return [o.numpy() for o in out]


def problem(seed, n=48, dim=5, classes=3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n).astype("int32")
    x = (rng.normal(size=(classes, dim))[y] + rng.normal(size=(n, dim))).astype("float32")
    return x, y, (0.3 * rng.normal(size=(dim, classes))).astype("float32"), np.zeros(classes, "float32")


def test_full_batch_training_and_the_early_stop_match_numpy():
    x, y, kernel, bias = problem(0)
    # Held-out labels that contradict the training labels: the held-out loss rises from the second
    # epoch, so training stops after 1 + patience epochs.
    x_val, y_val = x[:12], ((y[:12] + 1) % 3).astype("int32")
    got = run_fit(x, y, x_val, y_val, kernel, bias, [0, 1], 0.05, 50, 3, 1000)  # one batch: order is moot
    want = numpy_probe(x, y, x_val, y_val, kernel, bias, [[np.arange(len(y))]] * 50, 0.05, 3)
    assert got[2] == want[2] == 4
    np.testing.assert_allclose(got[0], want[0], atol=1e-5)
    np.testing.assert_allclose(got[1], want[1], atol=1e-5)
    # Without a held-out set every epoch runs.
    got = run_fit(x, y, x_val[:0], y_val[:0], kernel, bias, [0, 1], 0.05, 7, 3, 1000)
    assert got[2] == 7


def test_mini_batches_follow_each_epochs_shuffle():
    x, y, kernel, bias = problem(1, n=30)
    x_val, y_val = x[:6], y[:6]
    seed = tf.constant([4, 5], tf.int64)
    orders = []
    for epoch in range(6):  # the documented draw: a permutation per epoch, then batches of 8, the last of 6
        order = np.argsort(tf.random.stateless_uniform([30], tf.random.experimental.stateless_fold_in(seed, epoch)))
        orders.append([order[i:i + 8] for i in range(0, 30, 8)])
    got = run_fit(x, y, x_val, y_val, kernel, bias, [4, 5], 1e-2, 6, 100, 8)
    want = numpy_probe(x, y, x_val, y_val, kernel, bias, orders, 1e-2, 100)
    assert got[2] == want[2] == 6
    np.testing.assert_allclose(got[0], want[0], atol=1e-5)


def test_eval_halves_are_fixed_per_class_halves():
    labels = np.array([3] * 7 + [1] * 4 + [9])
    fit, score = linear_probe.eval_halves(labels, seed=2)
    assert sorted(np.concatenate([fit, score]).tolist()) == list(range(12))
    assert [(labels[fit] == c).sum() for c in (3, 1, 9)] == [4, 2, 1]  # ceil(n / 2); a singleton only fits
    assert [(labels[score] == c).sum() for c in (3, 1, 9)] == [3, 2, 0]
    again = linear_probe.eval_halves(labels, seed=2)
    assert np.array_equal(fit, again[0]) and not np.array_equal(fit, linear_probe.eval_halves(labels, seed=3)[0])


def test_separable_reaches_one_and_random_is_chance_under_both_protocols():
    rng = np.random.default_rng(5)
    y = np.repeat(np.arange(4), 40)
    separable = (rng.normal(size=(4, 16))[y] * 5 + 0.1 * rng.normal(size=(160, 16))).astype("float32")
    assert linear_probe.linear_accuracy(separable, y, learning_rate=1e-2) == (1.0, "eval_halves")
    assert linear_probe.linear_accuracy(separable[::2], y[::2], separable[1::2], y[1::2],
                                        learning_rate=1e-2) == (1.0, "probe_split")
    y = rng.integers(0, 10, 3000)
    noise = rng.normal(size=(3000, 16)).astype("float32")
    for accuracy, _ in (linear_probe.linear_accuracy(noise, y, max_epochs=20),
                        linear_probe.linear_accuracy(noise[:1000], y[:1000], noise[1000:], y[1000:], max_epochs=20)):
        assert abs(accuracy - 0.1) < 0.04  # chance, 1,000 or more scored


def test_evaluate_reports_the_protocol_and_checks_probe_data():
    rng = np.random.default_rng(6)
    y = np.repeat([2, 5, 7], 20)
    x = (rng.normal(size=(8, 8))[y] + 0.5 * rng.normal(size=(60, 8))).astype("float32")
    got = evaluation.evaluate(x, y, metrics=("recall@1", "linear_accuracy"), seed=3)
    assert got["linear_probe_protocol"] == "eval_halves"
    assert got["linear_accuracy"] == linear_probe.linear_accuracy(x, y, seed=3)[0]
    got = evaluation.evaluate(x, y, metrics=("linear_accuracy",), probe_embeddings=x[::-1], probe_labels=y[::-1])
    assert got["linear_probe_protocol"] == "probe_split"
    assert "linear_probe_protocol" not in evaluation.evaluate(x, y, metrics=("recall@1",))
    with pytest.raises(ValueError, match="both probe_embeddings and probe_labels"):
        evaluation.evaluate(x, y, metrics=("linear_accuracy",), probe_embeddings=x)
    with pytest.raises(ValueError, match="1 evaluated classes .* not among the probe's labels"):
        evaluation.evaluate(x, y, metrics=("linear_accuracy",), probe_embeddings=x[y != 7], probe_labels=y[y != 7])
    assert validation.check_metric_flag(["nmi", "linear_accuracy"], "--eval_metrics") == ("nmi", "linear_accuracy")


def test_the_trainer_fits_on_the_train_split_only_when_it_holds_the_eval_classes():
    images = np.zeros((6, 4, 4, 1), np.uint8)
    train = data.ArraySplit(images, np.array([0, 0, 1, 1, 2, 2]))
    shared, unseen = data.ArraySplit(images[:4], np.array([0, 1, 1, 2])), data.ArraySplit(images[:2], np.array([2, 3]))
    assert trainer.linear_probe_split(("nmi", "linear_accuracy"), train, shared) is train
    assert trainer.linear_probe_split(("nmi", "linear_accuracy"), train, unseen) is None
    assert trainer.linear_probe_split(("nmi",), train, shared) is None
    # evaluate_embeddings normalises the probe's embeddings as the evaluated ones.
    rng = np.random.default_rng(7)
    x, px, y = rng.normal(size=(30, 4)), rng.normal(size=(30, 4)) * 50, np.arange(30) % 3
    cfg = config.make(eval_metrics=["linear_accuracy"])
    unit = lambda a: (a / np.linalg.norm(a, axis=1, keepdims=True)).astype("float32")  # noqa: E731
    got = trainer.evaluate_embeddings(x, y, cfg, (px, y))
    want = evaluation.evaluate(unit(x), y, metrics=("linear_accuracy",), seed=cfg.seed, probe_embeddings=unit(px),
                               probe_labels=y)
    assert got["linear_accuracy"] == want["linear_accuracy"] and got["linear_probe_protocol"] == "probe_split"

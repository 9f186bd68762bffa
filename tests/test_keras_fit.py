"""The Keras path: ``MetricLearner.compile`` / ``fit`` (optimizer groups at their rates,
``validation_data``, the retrieval callback, TensorBoard, ``save`` / ``load_model``) and the
plain ``embedding_model.compile(loss=pair_loss)``.

All on small_cnn with 8x8x1 random images; references are computed here with a separate
GradientTape, the loss called directly, and numpy brute-force retrieval.
"""
import glob
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from dmltf import evaluation, losses
from dmltf.callbacks import RetrievalEvaluation
from dmltf.methods import MetricLearner
from dmltf.models import build_embedding_model

SHAPE, DIM, CLASSES = (8, 8, 1), 8, 4
LR, MULTIPLIER = 0.01, 100.0


def images_and_labels(seed, n):
    rng = np.random.default_rng(seed)
    return rng.random((n, *SHAPE), "float32"), np.arange(n) % CLASSES


def proxy_anchor_learner(seed=0):
    keras.utils.set_random_seed(seed)
    model = build_embedding_model("small_cnn", SHAPE, embedding_dim=DIM)
    learner = MetricLearner(model, losses.get("proxy_anchor", num_classes=CLASSES, embedding_dim=DIM,
                                              lr_multiplier=MULTIPLIER))
    learner.compile(optimizer=keras.optimizers.SGD(LR))  # no momentum: a step is -rate * grad
    return learner


def values(variables):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in variables]


@pytest.fixture(scope="module")
def one_step():
    """A MetricLearner fitted for exactly one SGD step, with a validation set of two batches,
    and what the test computed before the step."""
    learner = proxy_anchor_learner()
    x, y = images_and_labels(0, 16)
    x_val, y_val = images_and_labels(1, 12)
    model, loss = learner.embedding_model, learner.loss_fn
    variables = [*model.trainable_variables, loss.proxies]
    before = values(variables)
    with tf.GradientTape() as tape:
        loss_before = loss(y, model(x, training=True))
    grads = [g.numpy() for g in tape.gradient(loss_before, variables)]
    history = learner.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0,
                          validation_data=(x_val, y_val), validation_batch_size=8)
    return dict(learner=learner, x=x, y=y, x_val=x_val, y_val=y_val, before=before, grads=grads,
                loss_before=float(loss_before), history=history.history)


def test_fit_moves_the_proxies_at_their_multiplier_and_the_network_at_the_rate(one_step):
    learner, before, grads = one_step["learner"], one_step["before"], one_step["grads"]
    after = values([*learner.embedding_model.trainable_variables, learner.loss_fn.proxies])
    rates = [LR] * (len(after) - 1) + [LR * MULTIPLIER]
    assert int(learner.optimizer.iterations.numpy()) == 1
    for start, grad, end, rate in zip(before, grads, after, rates):
        np.testing.assert_allclose(end, start - rate * grad, rtol=1e-5, atol=1e-6)
    moved = np.abs(after[-1] - before[-1]).max()
    assert moved > 1e-3 and moved == pytest.approx(LR * MULTIPLIER * np.abs(grads[-1]).max(), rel=1e-4)
    assert one_step["history"]["loss"] == [pytest.approx(one_step["loss_before"], rel=1e-5)]


def test_validation_data_logs_the_loss_without_training(one_step):
    learner, x_val, y_val = one_step["learner"], one_step["x_val"], one_step["y_val"]
    model, loss = learner.embedding_model, learner.loss_fn
    # Two batches (8 and 4): Keras' batch-size-weighted mean, each batch's loss with training=False.
    parts = [float(loss(y_val[s], model(x_val[s], training=False))) for s in (slice(0, 8), slice(8, 12))]
    expected = (8 * parts[0] + 4 * parts[1]) / 12
    assert one_step["history"]["val_loss"] == [pytest.approx(expected, rel=1e-5)]
    assert learner.evaluate(x_val, y_val, batch_size=8, verbose=0, return_dict=True) == {
        "loss": pytest.approx(expected, rel=1e-5)}


def test_save_and_load_model_round_trips_the_trained_learner(one_step, tmp_path):
    learner, x, y = one_step["learner"], one_step["x"], one_step["y"]
    path = str(tmp_path / "learner.keras")
    learner.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, MetricLearner) and loaded.loss_fn.get_config() == learner.loss_fn.get_config()
    assert int(loaded.optimizer.iterations.numpy()) == 1
    np.testing.assert_allclose(loaded.embed(x).numpy(), learner.embed(x).numpy(), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(loaded.loss_fn.proxies.numpy(), learner.loss_fn.proxies.numpy())
    proxies = loaded.loss_fn.proxies.numpy()
    loaded.compile(optimizer=keras.optimizers.SGD(LR))
    history = loaded.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0]) and np.abs(loaded.loss_fn.proxies.numpy() - proxies).max() > 1e-3


def test_load_model_restores_the_compiled_optimizer_as_it_was_saved(tmp_path):
    """Its copies train the groups: the compiled Adam holds no slots, and loading builds none."""
    learner = proxy_anchor_learner()
    learner.compile(optimizer=keras.optimizers.Adam(1e-3))
    path = str(tmp_path / "adam.keras")
    learner.save(path)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*Skipping variable loading for optimizer")
        loaded = keras.models.load_model(path)
    assert isinstance(loaded.optimizer, keras.optimizers.Adam) and len(loaded.optimizer.variables) == 2


def brute_force_retrieval(embeddings, labels, ref_embeddings=None, ref_labels=None):
    """(recall@1, MAP@R) in float64 by full sorting; without references, each query's own entry excluded."""
    embeddings = np.asarray(embeddings, np.float64)
    own = ref_embeddings is None
    refs, ref_labels = (embeddings, labels) if own else (np.asarray(ref_embeddings, np.float64), ref_labels)
    dist = ((embeddings[:, None, :] - refs[None, :, :]) ** 2).sum(-1)
    recalls, maps = [], []
    for i, row in enumerate(dist):
        order = [j for j in np.argsort(row, kind="stable") if not (own and j == i)]
        match = ref_labels[order] == labels[i]
        r = int(match.sum())
        recalls.append(float(match[0]))
        hits = match[:r]
        maps.append(sum(np.cumsum(hits)[k] / (k + 1) for k in range(r) if hits[k]) / r)
    return np.mean(recalls), np.mean(maps)


def test_the_callback_logs_retrieval_metrics_into_history_and_tensorboard(tmp_path):
    learner = proxy_anchor_learner(seed=1)
    x, y = images_and_labels(2, 16)
    queries, query_labels = images_and_labels(3, 16)
    gallery, gallery_labels = images_and_labels(4, 12)
    gallery_batches = tf.data.Dataset.from_tensor_slices((gallery, gallery_labels)).batch(5)
    callbacks = [
        RetrievalEvaluation(queries, query_labels, batch_size=6),
        RetrievalEvaluation(queries, query_labels, gallery_batches, metrics=("recall@1",), prefix="gallery_"),
        keras.callbacks.TensorBoard(str(tmp_path / "tb")),
    ]
    history = learner.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=callbacks).history
    embedded = learner.embed(queries).numpy()
    expected = evaluation.evaluate(embedded, query_labels, metrics=("recall@1", "map@r"))
    recall, map_r = brute_force_retrieval(embedded, query_labels)
    assert len(history["val_recall@1"]) == len(history["val_map@r"]) == 2
    assert expected["recall@1"] == pytest.approx(recall) and expected["map@r"] == pytest.approx(map_r)
    assert history["val_recall@1"][-1] == pytest.approx(recall) and history["val_map@r"][-1] == pytest.approx(map_r)
    gallery_recall, _ = brute_force_retrieval(embedded, query_labels, learner.embed(gallery).numpy(), gallery_labels)
    assert history["gallery_recall@1"][-1] == pytest.approx(gallery_recall)
    assert "gallery_map@r" not in history

    written = {}  # Keras' TensorBoard writes the val_ keys to validation/ as epoch_<name>
    for path in glob.glob(str(tmp_path / "tb" / "validation" / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                written.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
    assert written["epoch_recall@1"] == {0: pytest.approx(history["val_recall@1"][0]),
                                         1: pytest.approx(history["val_recall@1"][1])}
    assert written["epoch_map@r"] == {0: pytest.approx(history["val_map@r"][0]),
                                      1: pytest.approx(history["val_map@r"][1])}


def test_the_callback_evaluates_every_n_epochs_and_on_any_keras_model():
    keras.utils.set_random_seed(2)
    model = build_embedding_model("small_cnn", SHAPE, embedding_dim=DIM)  # not a Method: predict_on_batch
    queries, labels = images_and_labels(5, 12)
    callback = RetrievalEvaluation(tf.data.Dataset.from_tensor_slices((queries, labels)).batch(5),
                                   every_n_epochs=2, metrics=("map@r",))
    callback.set_model(model)
    logs = {}
    callback.on_epoch_end(0, logs)
    assert logs == {}  # epoch 1 of every 2nd
    callback.on_epoch_end(1, logs)
    assert logs == {"val_map@r": pytest.approx(brute_force_retrieval(model.predict(queries, verbose=0), labels)[1])}
    assert callback.results["num_queries"] == 12


def test_the_callback_refuses_bad_input():
    x, y = images_and_labels(6, 6)
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    with pytest.raises(ValueError, match="query_labels has 5 entries but queries has 6"):
        RetrievalEvaluation(x, y[:5])
    with pytest.raises(ValueError, match="Unknown metric 'recall@one'"):
        RetrievalEvaluation(x, y, metrics=("recall@one",))
    with pytest.raises(ValueError, match="give references and reference_labels together"):
        RetrievalEvaluation(x, y, references=x)
    with pytest.raises(ValueError, match="query_labels must not be given too"):
        RetrievalEvaluation(dataset.batch(2), y)
    with pytest.raises(ValueError, match=r"must give \(images, labels\) pairs"):
        RetrievalEvaluation(dataset.map(lambda images, labels: images))
    with pytest.raises(ValueError, match="every_n_epochs must be an integer >= 1, got 0"):
        RetrievalEvaluation(x, y, every_n_epochs=0)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 2.5"):
        RetrievalEvaluation(x, y, batch_size=2.5)
    with pytest.raises(ValueError, match="unknown distance 'manhattan'"):
        RetrievalEvaluation(x, y, distance="manhattan")
    callback = RetrievalEvaluation(dataset)  # not batched: found at the first evaluation
    callback.set_model(build_embedding_model("small_cnn", SHAPE, embedding_dim=DIM))
    with pytest.raises(ValueError, match=r"one label per element.*dataset.batch"):
        callback.on_epoch_end(0, {})


def test_the_callback_warns_when_compile_loss_leaves_the_proxies_untrained():
    x, y = images_and_labels(8, 6)
    model = build_embedding_model("small_cnn", SHAPE, embedding_dim=DIM)
    callback = RetrievalEvaluation(x, y)
    callback.set_model(model)
    model.compile(optimizer="sgd", loss=losses.get("proxy_anchor", num_classes=CLASSES, embedding_dim=DIM))
    with pytest.warns(UserWarning, match=r"ProxyAnchorLoss's own weights \(proxies\) are not .*MetricLearner"):
        callback.on_train_begin()
    model.compile(optimizer="sgd", loss=losses.get("contrastive"))  # no weights of its own
    for trained in (model, proxy_anchor_learner()):
        callback.set_model(trained)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            callback.on_train_begin()


def semi_hard_triplet_loss(embeddings, labels, margin=0.1):
    """TF-contrib's semi-hard triplet loss in float64, Euclidean: for each positive pair (a, p) the
    closest negative farther than p, else the farthest one; the mean of the hinges over the pairs."""
    x = np.asarray(embeddings, np.float64)
    dist = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    hinges = []
    for a, p in zip(*np.nonzero(labels[:, None] == labels[None, :])):
        if a == p:
            continue
        negatives = dist[a, labels != labels[a]]
        farther = negatives[negatives > dist[a, p]]
        negative = farther.min() if len(farther) else negatives.max()
        hinges.append(max(0.0, dist[a, p] - negative + margin))
    return float(np.mean(hinges))


@pytest.mark.backend_neutral
def test_the_plain_compile_loss_path_trains_the_embedding_model():
    """Keras' own train_step with a dmltf pair loss as ``loss=``: any backend."""
    keras.utils.set_random_seed(3)
    # Frozen BN runs in inference mode: predict's embeddings are the ones the training step sees.
    model = build_embedding_model("small_cnn", SHAPE, embedding_dim=DIM, freeze_bn=True)
    x, y = images_and_labels(7, 16)
    expected = semi_hard_triplet_loss(model.predict_on_batch(x), y)
    before = values(model.trainable_variables)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=losses.get("triplet", miner="semi_hard"))
    history = model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0).history
    assert expected > 0 and history["loss"] == [pytest.approx(expected, rel=1e-4)]
    changed = [np.abs(a - b).max() > 0 for a, b in zip(values(model.trainable_variables), before)]
    assert len(changed) > 2 and all(changed)

"""Cross-batch memory: queue contents, warm-up, the loss it adds, tf.function and config."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from dmltf import losses
from recorded_losses import value_and_gradients

pytestmark = pytest.mark.backend_neutral

RNG = np.random.default_rng(1)


def batch(n=6, dim=4, classes=3):
    return RNG.integers(0, classes, size=n), RNG.normal(size=(n, dim)).astype("float32")


def test_memory_is_a_fifo_of_past_batches_and_the_loss_adds_the_memory_term():
    inner = losses.get("contrastive", neg_margin=2.0)
    xbm = losses.get("xbm", loss=inner, memory_size=10, warmup_steps=1, memory_weight=0.5)
    seen_labels, seen_x = [], []
    for step in range(5):
        labels, x = batch()
        # What the memory holds before this call: the last 10 rows enqueued since the warm-up ended.
        mem_labels = np.concatenate(seen_labels)[-10:] if seen_labels else np.zeros(0, int)
        mem_x = np.concatenate(seen_x)[-10:] if seen_x else np.zeros((0, 4), "float32")
        expected = float(inner(labels, x))
        if step >= 1 and len(mem_labels):
            expected += 0.5 * float(inner(labels, x, mem_labels, mem_x))
        got = float(xbm(labels, x))
        np.testing.assert_allclose(got, expected, rtol=1e-5, err_msg=f"step {step}")
        if step >= 1:  # warm-up: step 0 is not enqueued
            seen_labels.append(labels)
            seen_x.append(x)
        filled = int(xbm.memory_filled.numpy())
        assert filled == min(sum(len(v) for v in seen_labels), 10)
        # Ring buffer: row k holds the (k-th mod 10) enqueued sample, newest overwriting oldest.
        all_labels, all_x = np.concatenate(seen_labels) if seen_labels else [], np.concatenate(seen_x) if seen_x else []
        for row in range(filled):
            written = [i for i in range(len(all_labels)) if i % 10 == row][-1]
            assert int(xbm.memory_labels.numpy()[row]) == all_labels[written]
            np.testing.assert_array_equal(xbm.memory_embeddings.numpy()[row], all_x[written])
    assert int(xbm.step.numpy()) == 5


@pytest.mark.tensorflow_only
def test_inside_tf_function_with_gradients_and_no_gradient_into_memory():
    xbm = losses.get("xbm", loss="multi_similarity", memory_size=16, warmup_steps=0)
    x_var = tf.Variable(RNG.normal(size=(6, 4)).astype("float32"))
    labels = tf.constant([0, 0, 1, 1, 2, 2])

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            value = xbm(labels, x_var)
        return value, tape.gradient(value, x_var)

    values = [step() for _ in range(4)]  # one trace; the memory fill changes between calls
    assert int(xbm.memory_filled.numpy()) == 16 and int(xbm.step.numpy()) == 4
    for value, grad in values:
        assert np.isfinite(float(value)) and np.all(np.isfinite(grad.numpy()))
    # After the first call the memory holds copies of the batch: the memory term is positive.
    assert float(values[1][0]) > float(values[0][0])
    assert not xbm.memory_embeddings.trainable


def test_no_valid_pair_and_empty_memory_give_zero():
    xbm = losses.get("xbm", loss="multi_similarity", memory_size=8, warmup_steps=0, embedding_dim=4)  # built
    value, (grad,), _ = value_and_gradients(lambda x: xbm(np.array([0, 1, 2]), x), [RNG.normal(size=(3, 4))],
                                            state=xbm.non_trainable_variables)
    assert value == 0.0 and np.all(grad == 0.0)
    assert int(xbm.memory_filled.numpy()) == 3  # the batch was enqueued


def test_config_round_trip_with_nested_loss():
    xbm = losses.get("xbm", loss=losses.get("margin", miner="pair_margin", beta=1.0), memory_size=32,
                     warmup_steps=3, memory_weight=2.0)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(xbm))
    assert isinstance(again, type(xbm)) and again.get_config() == xbm.get_config()
    assert type(again.loss) is type(xbm.loss) and again.loss.get_config() == xbm.loss.get_config()
    assert again.lr_multiplier == xbm.loss.lr_multiplier
    labels, x = batch()
    assert float(again(labels, x)) == pytest.approx(float(xbm(labels, x)))


def test_rejects_proxy_losses_and_bad_sizes():
    with pytest.raises(ValueError, match="pair-based"):
        losses.get("xbm", loss=losses.get("proxy_anchor", num_classes=3, embedding_dim=4))
    with pytest.raises(ValueError, match="memory_size"):
        losses.get("xbm", memory_size=0)

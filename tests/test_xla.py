"""--jit_compile: the trainer's XLA-compiled steps compute what its plain steps do, a step XLA
cannot compile falls back once and loses nothing, and the embedding step agrees too.

Each case builds two trainers of one configuration (seeded alike), one with XLA and one
without, takes one step through the trainer's own path (``Trainer.train_epoch``) and compares
the losses it logged and every variable after it (the method's and the optimizers'), to float32
tolerance: XLA fuses and reorders the float32 arithmetic.

``build_trainer`` enables TensorFlow's op determinism (process-wide) for a trainer without XLA,
and under it XLA refuses max-pool gradients (``MaxPoolGrad``: "no deterministic XLA
implementation"; the small CNN pools): the tests of the compiled steps lift it once the trainers
are built (:func:`without_op_determinism`), and one test checks that the refusal is a fallback
with its reason.

DVML's reparameterisation noise is a stateless draw keyed on (seed, step); XLA's stateless
random kernels draw other numbers for the same key (an equally distributed draw), so the DVML
case feeds both trainers the same noise (:func:`fixed_noise`).
"""
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import config as tf_config

import config
from dmltf import data, losses
from dmltf.training import builders
from dmltf.training.experiment import build_trainer
from dmltf.training.trainer import _compiled_embed, embed_split, resolve_jit_compile
from test_dvml import small_cfg as dvml_cfg
from test_dvml import state  # every variable a step may change: the method's and the optimizers'
from test_trainer import small_cfg

RTOL, ATOL = 1e-4, 1e-5
ONE_STEP = dict(epochs=1, max_steps_per_epoch=1)


def assert_all_close(a, b, **tolerance):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, **tolerance)


@pytest.fixture
def without_op_determinism():
    """A function that lifts op determinism (call it after ``build_trainer``, which enables it);
    the setting is restored after the test."""
    enabled = tf_config.is_op_determinism_enabled()
    yield tf_config.disable_op_determinism
    if enabled:
        tf_config.enable_op_determinism()


# SGD: its update is linear in the gradient. Adam's first step, lr * g / (|g| + eps), turns the
# last-bit differences of near-zero gradient elements into differences of up to lr.
CASES = {
    # A pair loss with a miner (semi-hard triplets: a data-dependent selection).
    "triplet": lambda path, **kw: small_cfg(path, loss="triplet", miner="semi_hard", classes_per_batch=4,
                                            **ONE_STEP, **kw),
    # A proxy loss: its proxies are a second optimizer group (the loss's lr multiplier).
    "proxy_anchor": lambda path, **kw: small_cfg(path, loss="proxy_anchor", classes_per_batch=4, **ONE_STEP, **kw),
    # DVML's second phase: the decoder, the variational heads and their losses.
    "dvml": lambda path, **kw: dvml_cfg(path, dvml_phase1_steps=0, optimizer="sgd", lr=0.05, **ONE_STEP, **kw),
}


def fixed_noise(trainer):
    """Replaces DVML's noise draw by one fixed standard-normal draw (see the module docstring)."""
    method = trainer.method
    eps = np.random.default_rng(0).standard_normal((method.num_samples, 64, method.embedding_dim)).astype(np.float32)
    method._noise = lambda local_batch, step: tf.constant(eps[:, :local_batch])


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_step_with_and_without_xla_gives_the_same_losses_and_updates(tmp_path, case, capsys,
                                                                         without_op_determinism):
    plain = build_trainer(CASES[case](tmp_path / "plain", jit_compile=False))
    compiled = build_trainer(CASES[case](tmp_path / "xla", jit_compile=True))
    without_op_determinism()
    if case == "dvml":
        for trainer in (plain, compiled):
            fixed_noise(trainer)
    start = state(plain)
    assert_all_close(start, state(compiled), rtol=0, atol=0)  # the same seeded start
    plain_losses, compiled_losses = plain.train_epoch(0), compiled.train_epoch(0)
    assert [f.jit_compile for f in compiled._step_fns.values()] == [True]  # it ran compiled: no fallback
    assert "does not compile" not in capsys.readouterr().out
    assert set(plain_losses) == set(compiled_losses) and "loss" in plain_losses
    for key, value in plain_losses.items():
        assert compiled_losses[key] == pytest.approx(value, rel=RTOL, abs=ATOL), key
    after = state(plain)
    assert max(np.abs(a - b).max() for a, b in zip(after, start) if a.dtype.kind == "f") > 1e-3  # the step moved
    assert_all_close(state(compiled), after, rtol=RTOL, atol=ATOL)
    assert int(compiled.step.numpy()) == int(plain.step.numpy()) == 1


@pytest.mark.parametrize("case", ["triplet", "dvml"])
def test_embedding_step_with_and_without_xla_gives_the_same_embeddings(tmp_path, case, without_op_determinism):
    trainer = build_trainer(CASES[case](tmp_path, jit_compile=True, eval_batch_size=8))
    without_op_determinism()
    images = trainer.train_split.load().images[:12]
    # Batches of 8 and a last one of 4: XLA compiles each batch size.
    split = data.ArraySplit(images, np.arange(12) % 3)
    compiled, labels = embed_split(trainer.method, split, trainer.cfg, trainer.preprocessing)
    assert _compiled_embed(trainer.method, True).jit_compile  # compiled, not fallen back
    trainer.cfg.jit_compile = False
    plain, plain_labels = embed_split(trainer.method, split, trainer.cfg, trainer.preprocessing)
    np.testing.assert_array_equal(labels, plain_labels)
    assert compiled.shape == (12, trainer.cfg.embedding_dim)
    np.testing.assert_allclose(compiled, plain, rtol=RTOL, atol=ATOL)


def uncompilable(trainer, calls):
    """Makes ``trainer``'s method uncompilable by XLA (a py_function, which XLA has no kernel
    for) and stateful: each run of its losses counts in ``calls``."""
    compute_losses = trainer.method.compute_losses

    def with_py_function(batch, training=True):
        losses = compute_losses(batch, training=training)
        calls.assign_add(1)
        zero = tf.py_function(lambda: np.float32(0.0), [], tf.float32)
        return {**losses, "loss": losses["loss"] + zero}

    trainer.method.compute_losses = with_py_function


def test_a_step_xla_cannot_compile_warns_once_and_runs_without_it_losing_nothing(tmp_path, capsys):
    steps = dict(epochs=1, max_steps_per_epoch=2)
    plain = build_trainer(small_cfg(tmp_path / "plain", loss="triplet", miner="semi_hard", classes_per_batch=4,
                                    jit_compile=False, **steps))
    compiled = build_trainer(small_cfg(tmp_path / "xla", loss="triplet", miner="semi_hard", classes_per_batch=4,
                                       jit_compile=True, **steps))
    counts = {}
    for name, trainer in (("plain", plain), ("xla", compiled)):
        counts[name] = tf.Variable(0)
        uncompilable(trainer, counts[name])
    plain_losses = plain.train_epoch(0)
    capsys.readouterr()
    compiled_losses = compiled.train_epoch(0)
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if "does not compile with XLA" in line]
    assert len(warnings) == 1, out  # once, not at every step
    assert "training step" in warnings[0] and "EagerPyFunc" in warnings[0]
    assert not compiled._step_fns[(("backbone", "head"), False)].jit_compile
    # The failed compile ran nothing: no batch was dropped, no state or step counter advanced.
    assert int(counts["xla"].numpy()) == int(counts["plain"].numpy()) == 2
    assert int(compiled.step.numpy()) == 2
    assert compiled_losses == pytest.approx(plain_losses, rel=1e-6)
    assert_all_close(state(compiled), state(plain), rtol=0, atol=1e-6)


def test_under_op_determinism_max_pool_gradients_fall_back_with_the_reason(tmp_path, capsys):
    trainer = build_trainer(CASES["proxy_anchor"](tmp_path, jit_compile=True))  # enables op determinism
    assert tf_config.is_op_determinism_enabled()
    trainer.train_epoch(0)
    warnings = [line for line in capsys.readouterr().out.splitlines() if "does not compile with XLA" in line]
    assert len(warnings) == 1 and "deterministic XLA implementation" in warnings[0], warnings
    assert int(trainer.step.numpy()) == 1


def test_jit_compile_flag_values():
    assert resolve_jit_compile("true") is True and resolve_jit_compile(False) is False
    assert resolve_jit_compile("auto") is bool(tf.config.list_logical_devices("GPU"))
    with pytest.raises(ValueError, match="--jit_compile must be one of auto, true, false, got 'yes'"):
        resolve_jit_compile("yes")


# The losses compiled on every run, besides the trainer cases' (semi-hard triplets, a miner's
# selection; proxy_anchor): a listwise sigmoid ranking and a memory queue updated in the step.
# Each XLA compile costs seconds on 2 cores, so the registry's other losses are compiled with
# DMLTF_XLA_ALL_LOSSES=1 (all 45: about 1.5 minutes).
ALWAYS_COMPILED = ("smooth_ap", "xbm")
# Losses XLA cannot compile (they fall back in the trainer), with the reason: none today.
EXPECTED_FALLBACKS = {}


def loss_value_and_gradients(loss, labels, x):
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = loss(labels, x)
    return value, tape.gradient(value, [x, *loss.trainable_variables])


@pytest.mark.parametrize("name", losses.names() if os.environ.get("DMLTF_XLA_ALL_LOSSES") else ALWAYS_COMPILED)
def test_every_loss_compiles_with_xla_to_its_eager_value_and_gradients(name):
    loss = builders.build_loss(config.make(loss=name), name, num_classes=4, embedding_dim=8)
    rng = np.random.default_rng(0)
    labels = tf.constant(np.repeat(np.arange(4), 4))
    x = tf.constant(rng.standard_normal((16, 8)).astype(np.float32))
    loss_value_and_gradients(loss, labels, x)  # builds the loss's weights and fills a memory
    start = [v.numpy().copy() for v in loss.variables]
    eager_value, eager_grads = loss_value_and_gradients(loss, labels, x)
    eager_state = [v.numpy().copy() for v in loss.variables]
    for v, value in zip(loss.variables, start):  # the compiled call starts from the same state
        v.assign(value)
    compiled = tf.function(loss_value_and_gradients, jit_compile=True)
    if name in EXPECTED_FALLBACKS:
        with pytest.raises((tf.errors.InvalidArgumentError, tf.errors.UnimplementedError),
                           match=EXPECTED_FALLBACKS[name]):
            compiled(loss, labels, x)
        return
    value, grads = compiled(loss, labels, x)
    assert float(value) == pytest.approx(float(eager_value), rel=RTOL, abs=ATOL)
    assert np.isfinite(float(value))
    for g, eager in zip(grads, eager_grads):
        if eager is None:
            assert g is None
        else:
            np.testing.assert_allclose(tf.convert_to_tensor(g).numpy(), tf.convert_to_tensor(eager).numpy(),
                                       rtol=RTOL, atol=ATOL)
    assert_all_close([v.numpy() for v in loss.variables], eager_state, rtol=RTOL, atol=ATOL)


def test_a_single_replica_gets_its_batches_prefetched_to_its_device_in_order(monkeypatch):
    """The default strategy's input path on a GPU machine (``prefetch_device``: the first GPU),
    here with the second logical CPU standing in for the GPU."""
    from dmltf.training import trainer as trainer_module

    device = tf.config.list_logical_devices("CPU")[1].name
    monkeypatch.setattr(trainer_module, "prefetch_device", lambda: device)
    train, _ = builders.load_digits_splits("stratified")
    sampler = data.samplers.get("balanced", 4, 3)
    make = lambda shard: data.train_dataset(train, sampler, seed=1, epoch=0).take(3)  # noqa: E731
    fed = list(trainer_module.distribute_batches(tf.distribute.get_strategy(), make, 12))
    expected = list(make(None))
    assert len(fed) == len(expected) == 3
    for (images, labels), (want_images, want_labels) in zip(fed, expected):
        assert images.device == labels.device and images.device.endswith(device)
        np.testing.assert_array_equal(images.numpy(), want_images.numpy())
        np.testing.assert_array_equal(labels.numpy(), want_labels.numpy())

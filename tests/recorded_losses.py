"""Loss values recorded once from reference libraries (``tests/fixtures/pml/*.npz``, written by
the ``record_*.py`` scripts beside them in their own venvs) and dmltf's side of the comparison:
one reader of the recordings and one value-and-gradients helper for every test that uses them (and for
``bench/backend_parity.py``), on the TensorFlow, JAX and PyTorch backends."""
import os

import keras
import numpy as np

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


class Recording:
    """An .npz of recorded arrays: ``input__<kind>__<key>`` inputs, ``<case>__<kind>__<key>`` results."""

    def __init__(self, *path):
        self.arrays = np.load(os.path.join(FIXTURES, *path))
        self.files = self.arrays.files

    def __getitem__(self, key):
        return self.arrays[key]

    def __contains__(self, key):
        return key in self.arrays

    def batch(self, kind):
        """(labels, x, ref_labels, refs) of a batch kind; None where the kind has no such array."""
        get = lambda key: self.arrays[f"input__{kind}__{key}"] if f"input__{kind}__{key}" in self.arrays else None  # noqa: E731
        return get("labels"), get("x"), get("ref_labels"), get("refs")

    def recorded(self, case, kind):
        """{key: array} recorded for ``case`` on batch ``kind`` (empty if the reference refused it)."""
        prefix = f"{case}__{kind}__"
        return {key[len(prefix):]: self.arrays[key] for key in self.files if key.startswith(prefix)}


# The batch kinds a second backend's run checks: its operations are those of the edge cases
# (one class, all distinct, balanced), which the TensorFlow run checks; this keeps CI's JAX run short.
KINDS_OFF_TENSORFLOW = ("ragged", "refs")


def at_least_on_this_backend(count):
    """How many batch kinds a test must have compared: ``count`` under TensorFlow, 1 elsewhere."""
    return count if keras.backend.backend() == "tensorflow" else 1


def on_this_backend(kinds):
    """``kinds`` (batch kind names) under TensorFlow; only those of :data:`KINDS_OFF_TENSORFLOW` on
    another Keras backend."""
    kinds = list(kinds)
    return kinds if keras.backend.backend() == "tensorflow" else [k for k in kinds if k in KINDS_OFF_TENSORFLOW]


def value_and_grads(loss, labels, x, ref_labels=None, refs=None, sample_weight=None):
    """(value, gradient for x, for refs (None without), [gradient for each trainable weight]),
    float64 numpy; a missing gradient is zeros."""
    value, (grad_x, grad_refs), grad_w = value_and_gradients(
        lambda x, refs: loss(labels, x, ref_labels, refs, sample_weight=sample_weight), [x, refs],
        loss.trainable_variables, loss.non_trainable_variables)
    return value, grad_x, grad_refs, grad_w


def value_and_gradients(fn, arrays, variables=(), state=()):
    """(float value, [gradient for each of ``arrays``], [gradient for each of ``variables``]) of
    the scalar ``fn(*arrays)`` on the Keras backend the tests run under, as float64 numpy
    (a missing gradient is zeros, an array given as None stays None). ``state``: the variables
    ``fn`` may update (a miner's seed, a memory); on JAX ``fn`` runs stateless, as in Keras' JAX
    trainer, and their new values are assigned afterwards. The layers ``fn`` calls must be built
    (``xbm``: ``embedding_dim``): JAX creates no variable inside a traced function."""
    arrays = [None if a is None else np.asarray(a, np.float32) for a in arrays]
    value, grads, var_grads = GRADIENTS[keras.backend.backend()](fn, arrays, list(variables), list(state))
    dense = lambda g, like: np.zeros(tuple(like.shape)) if g is None else np.asarray(g, np.float64)  # noqa: E731
    return (float(value), [None if a is None else dense(g, a) for g, a in zip(grads, arrays)],
            [dense(g, v) for g, v in zip(var_grads, variables)])


def value_of(fn, arrays, state=()):
    """float ``fn(*arrays)`` (``arrays`` as float32, None kept) on the backend in use; on JAX
    compiled and stateless (``state`` as in :func:`value_and_gradients`)."""
    arrays = [None if a is None else np.asarray(a, np.float32) for a in arrays]
    if keras.backend.backend() != "jax":
        return float(fn(*arrays))
    import jax

    stateless, state = _jax_stateless(fn, [], state)
    value, updates = jax.jit(stateless)(arrays, [])
    for variable, update in zip(state, updates):
        variable.assign(update)
    return float(value)


def central_differences(f, x, step=1e-6):
    """The gradient of a scalar numpy function ``f`` at ``x`` (float64) by central differences:
    the independent side of the gradient checks."""
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        shift = np.zeros_like(x)
        shift[index] = step
        grad[index] = (f(x + shift) - f(x - shift)) / (2 * step)
    return grad


def compiled(fn):
    """``fn`` compiled the way the backend in use compiles a step: ``tf.function`` or ``jax.jit``."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(fn)
    import tensorflow as tf

    return tf.function(fn)


def _tensorflow_gradients(fn, arrays, variables, state):
    import tensorflow as tf

    tensors = [None if a is None else tf.constant(a) for a in arrays]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([t for t in tensors if t is not None])
        value = fn(*tensors)
    numpy = lambda g: None if g is None else tf.convert_to_tensor(g).numpy()  # noqa: E731
    return (value.numpy(), [None if t is None else numpy(tape.gradient(value, t)) for t in tensors],
            [numpy(tape.gradient(value, v)) for v in variables])


def _jax_stateless(fn, variables, state):
    """(``fn`` as a pure function of (arrays, the variables' values) -> (value, the state's new
    values), that state less the variables)."""
    state = [v for v in state if all(v is not w for w in variables)]

    def stateless(arrays, values):
        with keras.StatelessScope(state_mapping=[*zip(variables, values), *((v, v.value) for v in state)]) as scope:
            value = fn(*arrays)
        return value, [scope.get_current_value(v) for v in state]

    return stateless, state


def _jax_gradients(fn, arrays, variables, state):
    import jax

    stateless, state = _jax_stateless(fn, variables, state)
    # Compiled, as Keras' JAX trainer runs a loss (and much faster than op-by-op for one call).
    (value, updates), (grads, var_grads) = jax.jit(jax.value_and_grad(stateless, argnums=(0, 1), has_aux=True))(
        arrays, [v.value for v in variables])
    for variable, update in zip(state, updates):
        variable.assign(update)
    return value, grads, var_grads


def _torch_gradients(fn, arrays, variables, state):
    import torch

    tensors = [None if a is None else torch.tensor(a, requires_grad=True) for a in arrays]
    value = fn(*tensors)
    given = [t for t in tensors if t is not None]
    grads = torch.autograd.grad(value, [*given, *(v.value for v in variables)], allow_unused=True)
    by_input = iter(grads[:len(given)])
    return (value.detach(), [None if t is None else next(by_input) for t in tensors], list(grads[len(given):]))


GRADIENTS = {"tensorflow": _tensorflow_gradients, "jax": _jax_gradients, "torch": _torch_gradients}

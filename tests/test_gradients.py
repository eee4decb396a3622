"""Gradient checks: autodiff against central finite differences, in float64.

For every layer (``SimpleRNN``, ``LSTM`` with and without peepholes, ``GRU``
with ``reset_after`` True and False) and both time loops it can run (its own
loop, the one ``layer.loop_for()`` names: on TensorFlow the XLA-compiled
loop with its custom gradient, on JAX ``lax.scan`` with its custom VJP, on
PyTorch the fused kernel where there is one, elsewhere ``keras.ops.scan``;
and the unrolled loop), with and without
a mask, the gradient of the scalar loss ``sum(P * outputs)`` over the
output sequence and the final states, with respect to the inputs, the
initial states and every weight, agrees entry by entry with central finite
differences of the layer itself (step ``EPS = 1e-6``) to ``rtol=1e-6,
atol=1e-8``. Masked-out inputs must get a gradient of exactly zero.
"""

import keras
import numpy as np
import pytest
from helpers import LAYERS, gradients, num_states

pytestmark = pytest.mark.float64  # on JAX: with jax_enable_x64 (conftest.py)

EPS = 1e-6
RTOL, ATOL = 1e-6, 1e-8
B, T, F, H = 3, 4, 2, 3

# Holes, leading masked steps, and a row that never steps.
MASK = np.array([[1, 0, 1, 1], [0, 0, 1, 0], [0, 0, 0, 0]], bool)

# case -> (layer options, masked)
CASES = {
    "own": ({}, False),
    "own_masked_backwards": ({"go_backwards": True}, True),
    "unrolled": ({"unroll": True}, False),
    "unrolled_masked": ({"unroll": True}, True),
}


def _evaluator(loss, variables):
    """``loss`` as a function run many times at one shape, compiled once
    where the backend compiles: on TensorFlow a ``tf.function`` (which reads
    the variables at each run); on JAX a ``jax.jit`` that takes the
    variables' current values as arguments. Eager on JAX, every call of a
    layer traces and compiles its ``lax.scan`` anew (the step is a new
    closure each call): hundreds of compilations per test. Plain on PyTorch.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(loss)
    if backend == "jax":
        import jax

        @jax.jit
        def run(args, values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return loss(*args)

        return lambda *args: run(args, [v.value for v in variables])
    return loss


def numeric_gradients(loss, arrays, variables, eps=EPS):
    """Central differences of ``loss(*arrays)`` with respect to each of
    ``arrays`` and each variable, one entry at a time."""
    evaluate = _evaluator(loss, variables)

    def value(args):
        args = [keras.ops.convert_to_tensor(a) for a in args]
        return float(keras.ops.convert_to_numpy(evaluate(*args)))

    def differences(base, set_value):
        grad = np.empty_like(base)
        for index in np.ndindex(base.shape):
            results = []
            for sign in (1, -1):
                perturbed = base.copy()
                perturbed[index] += sign * eps
                results.append(set_value(perturbed))
            grad[index] = (results[0] - results[1]) / (2 * eps)
        return grad

    grads = []
    for i, base in enumerate(arrays):
        grads.append(
            differences(
                base,
                lambda p, i=i: value(
                    [p if j == i else a for j, a in enumerate(arrays)]
                ),
            )
        )
    for variable in variables:
        base = np.array(variable.numpy())

        def perturbed_value(p, variable=variable):
            variable.assign(p)
            return value(arrays)

        grads.append(differences(base, perturbed_value))
        variable.assign(base)
    return grads


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("name", list(LAYERS))
def test_gradients_match_finite_differences(name, case):
    options, masked = CASES[case]
    config = LAYERS[name]
    layer = config.layer(
        H,
        dtype="float64",
        return_sequences=True,
        return_state=True,
        **config.kwargs,
        **options,
    )
    layer.build((None, T, F))
    rng = np.random.default_rng(sorted(LAYERS).index(name))
    layer.set_weights(
        [rng.normal(scale=0.5, size=w.shape) for w in layer.get_weights()]
    )
    count = num_states(name)
    x = rng.normal(size=(B, T, F))
    states = [rng.normal(size=(B, H)) for _ in range(count)]
    projections = [rng.normal(size=(B, T, H))] + [
        rng.normal(size=(B, H)) for _ in range(count)
    ]
    mask = MASK if masked else None

    def loss(inputs, *rest):  # rest: the initial states (then the variables)
        initial_state = list(rest[:count])
        outputs = layer(inputs, initial_state=initial_state, mask=mask)
        # keras.ops.multiply: on PyTorch, `tensor * ndarray` hands the
        # tensor to NumPy, which refuses one that requires grad.
        return sum(
            keras.ops.sum(keras.ops.multiply(o, p))
            for o, p in zip(outputs, projections)
        )

    variables = layer.trainable_weights
    assert len(variables) == (6 if name == "lstm_peepholes" else 3)
    autodiff = gradients(loss, [x, *states, *variables])
    numeric = numeric_gradients(loss, [x, *states], variables)
    names = ["inputs", *[f"initial_state[{i}]" for i in range(count)]]
    names += [v.name for v in variables]
    for what, a, n in zip(names, autodiff, numeric):
        assert np.abs(n).max() > 1e-3, f"{what}: a vacuous check"
        np.testing.assert_allclose(a, n, rtol=RTOL, atol=ATOL, err_msg=what)
    if masked:
        # go_backwards reverses the order of the steps, not the mask.
        assert np.all(autodiff[0][~MASK] == 0.0), "masked inputs got a gradient"

"""Gradient-flow helpers: checked against closed forms and finite differences."""

import importlib.util
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_recurrent as kr
from keras_recurrent.diagnostics import gradient_norms, input_gradients, jacobian_norms

ROOT = Path(__file__).resolve().parents[1]

# Float64 throughout, so the checks can ask for 1e-6 against central
# differences; on JAX that needs jax_enable_x64 (tests/conftest.py).
pytestmark = pytest.mark.float64


def linear_rnn(units=3, features=2, seed=0):
    """A float64 SimpleRNN without activation, and its weights ``W, U``."""
    layer = kr.SimpleRNN(units, activation=None, dtype="float64")
    layer.build((None, None, features))
    rng = np.random.default_rng(seed)
    kernel = rng.normal(size=(features, units))
    recurrent_kernel = 0.6 * rng.normal(size=(units, units)) / np.sqrt(units)
    layer.set_weights([kernel, recurrent_kernel, rng.normal(size=units)])
    return layer, kernel, recurrent_kernel


def closed_form_jacobian_norms(kernel, recurrent_kernel, steps):
    # h_T = sum_t x_t W U^(T-1-t) + ..., so dh_T/dx_t = (W U^(T-1-t))^T.
    return np.array(
        [
            np.linalg.norm(kernel @ np.linalg.matrix_power(recurrent_kernel, k))
            for k in range(steps - 1, -1, -1)
        ]
    )


def finite_difference_jacobian(fn, x, eps=1e-6):
    """Central differences of ``fn`` (batch, units) w.r.t. ``x`` (batch, time, f)."""
    batch, steps, features = x.shape
    units = np.asarray(fn(x)).shape[1]
    jac = np.zeros((batch, units, steps, features))
    for t in range(steps):
        for f in range(features):
            step = np.zeros_like(x)
            step[:, t, f] = eps
            plus, minus = np.asarray(fn(x + step)), np.asarray(fn(x - step))
            jac[:, :, t, f] = (plus - minus) / (2 * eps)
    return jac


def test_jacobian_norms_of_a_linear_rnn_equal_the_closed_form():
    layer, kernel, recurrent_kernel = linear_rnn()
    x = np.random.default_rng(1).normal(size=(2, 9, 2))
    norms = jacobian_norms(layer, x)
    expected = closed_form_jacobian_norms(kernel, recurrent_kernel, 9)
    assert norms.shape == (2, 9)
    np.testing.assert_allclose(norms, np.stack([expected, expected]), rtol=1e-10)
    assert norms[0, 0] < norms[0, -1]  # the contraction makes it vanish


@pytest.mark.parametrize("use_peepholes", [True, False])
def test_jacobian_norms_of_an_lstm_equal_finite_differences(use_peepholes):
    layer = kr.LSTM(4, use_peepholes=use_peepholes, dtype="float64")
    layer.build((None, None, 3))
    rng = np.random.default_rng(2)
    layer.set_weights(
        [rng.normal(scale=0.5, size=w.shape) for w in layer.get_weights()]
    )
    x = rng.normal(size=(3, 6, 3))

    def forward(inputs):
        return keras.ops.convert_to_numpy(layer(inputs))

    jac = finite_difference_jacobian(forward, x)
    expected = np.sqrt(np.sum(jac**2, axis=(1, 3)))
    norms = jacobian_norms(layer, x)
    np.testing.assert_allclose(norms, expected, rtol=1e-6)
    # Different sequences have different Jacobians: no mixing across the batch.
    assert not np.allclose(norms[0], norms[1])


def test_jacobian_norms_take_any_output_shape_per_sequence():
    layer = kr.GRU(3, return_sequences=True, dtype="float64")
    x = np.random.default_rng(3).normal(size=(2, 5, 2))
    layer(x)

    def forward(inputs):
        return keras.ops.convert_to_numpy(layer(inputs)).reshape(len(inputs), -1)

    jac = finite_difference_jacobian(forward, x)
    expected = np.sqrt(np.sum(jac**2, axis=(1, 3)))
    np.testing.assert_allclose(jacobian_norms(layer, x), expected, rtol=1e-6)


def test_gradient_norms_of_a_loss_equal_finite_differences():
    # The layer alone, not in a keras.Sequential: a model with the default
    # float32 policy casts its float64 inputs to float32, too coarse for
    # finite differences with a step of 1e-6.
    layer = kr.GRU(4, dtype="float64")
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 7, 2))
    y = rng.normal(size=(3,))
    # A linear read-out of the last state, as elementwise ops: a float64
    # keras.layers.Dense computes its matmul in float32 on PyTorch (Keras
    # 3.15), too coarse for finite differences with a step of 1e-6.
    readout = rng.normal(size=(4,))

    # As float64 tensors: Keras 3.15 would promote a NumPy float64 operand
    # with a float64 tensor to float32 off TensorFlow.
    readout, y = (keras.ops.convert_to_tensor(a, "float64") for a in (readout, y))

    def loss(inputs):
        prediction = keras.ops.sum(keras.ops.multiply(layer(inputs), readout), -1)
        # A sum over the batch, not keras.ops.mean: on PyTorch and JAX, Keras
        # 3.15 computes the mean of float64 values in float32.
        return keras.ops.sum(keras.ops.subtract(prediction, y) ** 2)

    eps = 1e-6
    grads = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[index] = eps
        grads[index] = (
            float(keras.ops.convert_to_numpy(loss(x + step)))
            - float(keras.ops.convert_to_numpy(loss(x - step)))
        ) / (2 * eps)
    np.testing.assert_allclose(input_gradients(loss, x), grads, rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(
        gradient_norms(loss, x), np.linalg.norm(grads, axis=-1), rtol=1e-6, atol=1e-9
    )


def test_input_gradients_of_a_closed_form():
    x = np.random.default_rng(5).normal(size=(2, 4, 3))
    weights = np.arange(3.0)

    def fn(inputs):
        return keras.ops.sum(keras.ops.multiply(inputs**2, weights))

    np.testing.assert_allclose(input_gradients(fn, x), 2 * x * weights, rtol=1e-12)


def test_integer_inputs_are_differentiated_as_floats():
    layer, kernel, recurrent_kernel = linear_rnn(features=1)
    x = np.ones((1, 4, 1), dtype="int64")
    norms = jacobian_norms(lambda v: layer(keras.ops.cast(v, "float64")), x)
    expected = closed_form_jacobian_norms(kernel, recurrent_kernel, 4)
    np.testing.assert_allclose(norms[0], expected, rtol=1e-6)


def test_bad_arguments_are_named():
    layer, _, _ = linear_rnn()
    x = np.zeros((2, 3, 2))
    with pytest.raises(ValueError, match=r"Received: inputs.shape=\(3, 2\)"):
        jacobian_norms(layer, x[0])
    with pytest.raises(ValueError, match=r"must return a scalar.*\(2, 3\)"):
        input_gradients(layer, x)
    with pytest.raises(ValueError, match=r"one output per sequence.*\(\)"):
        jacobian_norms(lambda v: keras.ops.sum(layer(v)), x)


# The suite's own run on each backend checks the same closed form in-process;
# this one covers the other backends when the suite runs on one only.
@pytest.mark.one_backend
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_other_backends_give_the_closed_form(backend):
    # Imported here: the script imports this module as tests.test_diagnostics,
    # where tests/ is not on the path.
    from helpers import run_fresh

    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    script = textwrap.dedent(
        """
        import numpy as np
        import keras
        from tests.test_diagnostics import closed_form_jacobian_norms, linear_rnn
        from keras_recurrent.diagnostics import jacobian_norms, gradient_norms

        assert keras.config.backend() == BACKEND
        layer, kernel, recurrent_kernel = linear_rnn()
        x = np.random.default_rng(1).normal(size=(2, 9, 2))
        expected = closed_form_jacobian_norms(kernel, recurrent_kernel, 9)
        np.testing.assert_allclose(jacobian_norms(layer, x)[1], expected, rtol=RTOL)
        loss = lambda v: keras.ops.sum(layer(v)[:, 0])
        norms = gradient_norms(loss, x)[0]
        expected = [
            np.linalg.norm((kernel @ np.linalg.matrix_power(recurrent_kernel, k))[:, 0])
            for k in range(8, -1, -1)
        ]
        np.testing.assert_allclose(norms, expected, rtol=RTOL)
        print("ok")
        """
    ).replace("BACKEND", repr(backend))
    script = script.replace("RTOL", "1e-10")
    result = run_fresh(
        ["-c", script], env={"KERAS_BACKEND": backend, "JAX_ENABLE_X64": "1"}, cwd=ROOT
    )
    assert result.stdout.strip().endswith("ok"), result.stderr[-3000:]

"""keras_recurrent._ops: float64 stays float64, and the tanh is tanh."""

import keras
import numpy as np
import pytest
from helpers import gradients

from keras_recurrent import _ops

pytestmark = pytest.mark.float64  # on JAX: with jax_enable_x64 (conftest.py)

X = np.concatenate([np.linspace(-40, 40, 4001), [0.0, 1e-300, -1e-20, 1e-8]])


def test_float64_tanh_matches_numpy_to_the_last_bits():
    tanh = _ops.activation(keras.activations.tanh, "float64")
    y = tanh(keras.ops.convert_to_tensor(X, "float64"))
    assert keras.backend.standardize_dtype(y.dtype) == "float64"
    expected = np.tanh(X)
    relative = np.abs(keras.ops.convert_to_numpy(y) - expected) / np.maximum(
        np.abs(expected), 1e-300
    )
    assert relative.max() < 1e-15  # a few units in the last place


def test_float64_tanh_derivative_is_sech_squared():
    tanh = _ops.activation(keras.activations.tanh, "float64")
    x = X[::50]
    # Elementwise, so the gradient of the sum is the derivative.
    (derivative,) = gradients(lambda v: keras.ops.sum(tanh(v)), [x])
    # Absolutely to 1e-15, like tanh's own rule 1 - tanh(x)^2 (JAX and PyTorch
    # differentiate expm1 as expm1(x) + 1, which rounds to 0 for x < -19).
    np.testing.assert_allclose(derivative, 1 / np.cosh(x) ** 2, rtol=1e-13, atol=1e-15)


def test_float64_matmul_stays_float64():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 4, 5)), rng.normal(size=(5, 2))
    product = _ops.matmul(
        keras.ops.convert_to_tensor(a, "float64"),
        keras.ops.convert_to_tensor(b, "float64"),
    )
    assert keras.backend.standardize_dtype(product.dtype) == "float64"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(product), a @ b, rtol=1e-14)


def test_other_activations_and_dtypes_are_left_alone():
    assert _ops.activation(keras.activations.tanh, "float32") is keras.activations.tanh
    assert _ops.activation(keras.activations.relu, "float64") is keras.activations.relu


def test_split_gives_the_pieces_in_order():
    x = np.arange(24.0).reshape(2, 12)
    pieces = _ops.split(keras.ops.convert_to_tensor(x), [6, 3, 3])
    for piece, expected in zip(pieces, (x[:, :6], x[:, 6:9], x[:, 9:])):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(piece), expected)
    assert len(pieces) == 3


def test_cast_skips_a_cast_that_changes_nothing():
    x = keras.ops.convert_to_tensor(np.ones((2, 3)), "float32")
    assert _ops.cast(x, "float32") is x
    assert _ops.cast(x, x.dtype) is x
    half = _ops.cast(x, "float16")
    assert keras.backend.standardize_dtype(half.dtype) == "float16"

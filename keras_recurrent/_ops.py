"""Two ``keras.ops`` that keep float64 in float64 on every backend.

Keras 3.15's type promotion maps 64-bit dtypes to 32-bit on every backend but
TensorFlow, and two ops the cells use follow it: for float64 operands
``keras.ops.matmul`` computes and returns float32 on PyTorch, and
``keras.ops.tanh`` does on JAX (even with ``jax_enable_x64``). In float32 and
the mixed policies these are ``keras.ops.matmul`` and the cell's activation,
unchanged.
"""

import keras
from keras import ops


def _is_float64(x):
    return keras.backend.standardize_dtype(x.dtype) == "float64"


def matmul(a, b):
    """``a @ b`` for ``a (..., n)`` and ``b (n, m)``; float64 stays float64."""
    if _is_float64(a) and _is_float64(b):
        return ops.einsum("...i,ij->...j", a, b)  # float64 on every backend
    return ops.matmul(a, b)


def _tanh(x):
    """tanh from ``expm1``, which keeps float64: for ``a = -|x|``,
    ``tanh(a) = expm1(2a) / (expm1(2a) + 2)`` cannot overflow and keeps full
    relative precision near 0."""
    negative = x < 0
    a = ops.where(negative, x, -x)  # -|x|, with derivative -1 at x = 0
    e = ops.expm1(2 * a)
    t = e / (e + 2)
    return ops.where(negative, t, -t)


def activation(function, compute_dtype):
    """``function``, except that ``keras.activations.tanh`` in float64
    becomes a tanh that stays float64 on every backend."""
    if function is keras.activations.tanh and compute_dtype == "float64":
        return _tanh
    return function

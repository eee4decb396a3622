"""Ops the cells share: two that keep float64 in float64 on every backend,
a split and a cast that cost less per step, layer normalisation, and shape
helpers.

Keras 3.15's type promotion maps 64-bit dtypes to 32-bit on every backend but
TensorFlow, and two ops the cells use follow it: for float64 operands
``keras.ops.matmul`` computes and returns float32 on PyTorch, and
``keras.ops.tanh`` does on JAX (even with ``jax_enable_x64``). In float32 and
the mixed policies these are ``keras.ops.matmul`` and the cell's activation,
unchanged.
"""

import itertools

import keras
import numpy as np
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


def split(x, sizes):
    """``x`` cut along its last axis into pieces of the given ``sizes``.

    On TensorFlow and JAX this is one split, whose gradient is one
    concatenation; the gradient of slices is one zero-padded tensor per
    slice, summed, and XLA:CPU leaves that loop unvectorized (about 6 ms of
    an LSTM training step at batch 32, 100 steps). On PyTorch, slices: views,
    at a fraction of the per-call cost of ``keras.ops.split``.
    """
    ends = list(itertools.accumulate(sizes))
    if keras.config.backend() == "torch":
        return [x[..., end - size : end] for size, end in zip(sizes, ends)]
    return ops.split(x, ends[:-1], axis=-1)


def cast(x, dtype):
    """``keras.ops.cast``, or ``x`` itself when it has that dtype already.

    The cells cast at every step so that the mixed policies keep their states
    in float32; in float32 nothing changes, but on PyTorch each
    ``keras.ops.cast`` still costs several microseconds.
    """
    if x.dtype == dtype or keras.backend.standardize_dtype(
        x.dtype
    ) == keras.backend.standardize_dtype(dtype):
        return x
    return ops.cast(x, dtype)


def layer_norm(z, gamma, beta, epsilon):
    """``(z - mean(z)) / sqrt(var(z) + epsilon) * gamma + beta`` over the last
    axis, with the population variance (Ba, Kiros & Hinton, 2016).

    In float16 and bfloat16 the statistics are computed in float32 (a sum of
    squares over hundreds of features overflows float16 or loses most of its
    bits), and the result is cast back; float32 and float64 compute in their
    own dtype. The means are sums over the width: ``keras.ops.mean`` (and
    ``keras.ops.var``) compute float64 in float32 on JAX and PyTorch.
    """
    dtype = keras.backend.standardize_dtype(z.dtype)
    stats_dtype = dtype if dtype in ("float32", "float64") else "float32"
    normed, _ = normalise(cast(z, stats_dtype), epsilon)
    return cast(normed * cast(gamma, stats_dtype) + cast(beta, stats_dtype), dtype)


def normalise(z, epsilon):
    """``(z_hat, scale)`` over the last axis of ``z``, in its dtype:
    ``z_hat = (z - mean(z)) * scale`` and ``scale = 1 / sqrt(var(z) +
    epsilon)``, the part of :func:`layer_norm` before its gain and offset
    (which the JAX loop's LSTM step also keeps for its backward pass)."""
    width = z.shape[-1]
    centred = z - ops.sum(z, axis=-1, keepdims=True) / width
    variance = ops.sum(ops.square(centred), axis=-1, keepdims=True) / width
    # A Python float keeps the tensor's dtype; ops.cast(epsilon, "float64")
    # would round it to float32 first on some backends.
    scale = ops.rsqrt(variance + epsilon)
    return centred * scale, scale


def shape_of(value):
    """The shape of a tensor, array or nested list, as a tuple."""
    return tuple(value.shape) if hasattr(value, "shape") else np.shape(value)


def dims_differ(a, b):
    """Whether two dimensions are both known and differ."""
    return a is not None and b is not None and a != b

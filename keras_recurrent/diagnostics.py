"""Gradient flow through time: how much an output depends on each input step.

A recurrent layer that forgets cannot learn from what it forgot. These
helpers measure, for every time step ``t`` of an input sequence, how strongly
a model's output responds to the input ``x_t``:

- :func:`jacobian_norms`: the Frobenius norm of ``∂y/∂x_t`` for a model whose
  output ``y`` is a vector per sequence (for instance the last state
  ``h_T`` of a layer with ``return_sequences=False``). Since
  ``∂h_T/∂x_t = ∂h_T/∂h_t · ∂h_t/∂x_t``, its decay over ``T - t`` shows the
  vanishing of ``∂h_T/∂h_t`` (Hochreiter 1991; Bengio, Simard & Frasconi 1994)
  without reaching into the layer.
- :func:`gradient_norms`: the norm of ``∂loss/∂x_t`` for a scalar function,
  such as a training loss.
- :func:`input_gradients`: that gradient itself.

They use only public Keras API and the autodiff of the backend Keras runs on
(TensorFlow, JAX or PyTorch, chosen by ``keras.config.backend()``); the model
is called as given, so it should be in inference mode (no dropout).
"""

import keras
import numpy as np
from keras import ops


def _vjp(fn, inputs):
    """``fn(inputs)`` and its pullback ``cotangent -> cotangent · ∂fn/∂inputs``."""
    backend = keras.config.backend()
    dtype = inputs.dtype if np.issubdtype(inputs.dtype, np.floating) else None
    x = ops.convert_to_tensor(inputs, dtype=dtype or keras.config.floatx())
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            y = fn(x)

        def pullback(cotangent):
            return tape.gradient(
                y,
                x,
                output_gradients=ops.cast(cotangent, y.dtype),
                unconnected_gradients=tf.UnconnectedGradients.ZERO,
            )

        return y, pullback
    if backend == "jax":
        import jax

        fn(x)  # build outside the trace: a layer must not create variables inside it
        y, vjp = jax.vjp(fn, x)
        return y, lambda cotangent: vjp(ops.cast(cotangent, y.dtype))[0]
    if backend == "torch":
        import torch

        x = x.detach().requires_grad_(True)
        y = fn(x)

        def pullback(cotangent):
            cotangent = ops.cast(ops.convert_to_tensor(cotangent), y.dtype)
            (grad,) = torch.autograd.grad(
                y, x, grad_outputs=cotangent, retain_graph=True, allow_unused=True
            )
            return torch.zeros_like(x) if grad is None else grad

        return y, pullback
    raise NotImplementedError(
        "keras_recurrent.diagnostics supports the tensorflow, jax and torch "
        f"backends. Received: keras.config.backend()={backend!r}"
    )


def _as_sequences(inputs):
    inputs = np.asarray(inputs)
    if inputs.ndim < 3:
        raise ValueError(
            "Argument `inputs` must have shape (batch, time, features, ...). "
            f"Received: inputs.shape={inputs.shape}"
        )
    return inputs


def input_gradients(fn, inputs):
    """Gradient of a scalar function of a batch of sequences, with respect to it.

    Args:
        fn: callable taking a ``(batch, time, features)`` tensor and returning
            a scalar (a tensor of one element), e.g. ``lambda x:
            loss_fn(y, model(x))``.
        inputs: array of shape ``(batch, time, features)``.

    Returns:
        NumPy array shaped like ``inputs``: ``∂fn(inputs)/∂inputs``.
    """
    inputs = _as_sequences(inputs)
    y, pullback = _vjp(fn, inputs)
    if int(np.prod(ops.shape(y))) != 1:
        raise ValueError(
            "Argument `fn` must return a scalar; for a vector output per "
            "sequence use jacobian_norms. Received: an output of shape "
            f"{tuple(ops.shape(y))}"
        )
    return ops.convert_to_numpy(pullback(ops.ones_like(y)))


def gradient_norms(fn, inputs):
    """Norms of the gradient of a scalar function with respect to each input step.

    Args:
        fn: callable taking a ``(batch, time, features)`` tensor and returning
            a scalar, e.g. a loss.
        inputs: array of shape ``(batch, time, features)``.

    Returns:
        NumPy array of shape ``(batch, time)``: ``‖∂fn(inputs)/∂inputs[b, t]‖``,
        the Euclidean norm over the feature axes.
    """
    grads = input_gradients(fn, inputs)
    return np.sqrt(np.sum(np.square(grads), axis=tuple(range(2, grads.ndim))))


def jacobian_norms(fn, inputs):
    """Frobenius norms of ``∂fn(x)[b] / ∂x[b, t]`` for every sequence and step.

    With ``fn`` a recurrent layer or model returning its last output ``h_T``,
    ``result[b, t]`` measures how much ``h_T`` of sequence ``b`` still
    depends on its input at step ``t``. It takes one backward pass per
    output unit, each for the whole batch.

    Args:
        fn: callable, e.g. a layer or a model, taking a ``(batch, time,
            features)`` tensor and returning a ``(batch, ...)`` tensor. Its
            sequences must not interact (true of recurrent layers and models
            in inference; not of batch statistics in training).
        inputs: array of shape ``(batch, time, features)``.

    Returns:
        NumPy array of shape ``(batch, time)``.
    """
    inputs = _as_sequences(inputs)
    y, pullback = _vjp(fn, inputs)
    shape = tuple(ops.shape(y))
    if len(shape) < 1 or shape[0] != inputs.shape[0]:
        raise ValueError(
            "Argument `fn` must return one output per sequence, of shape "
            f"({inputs.shape[0]}, ...). Received: an output of shape {shape}"
        )
    units = int(np.prod(shape[1:]))
    squares = np.zeros(inputs.shape[:2])
    for unit in range(units):
        # Sequences are independent, so one pullback of the unit's one-hot
        # cotangent gives row `unit` of every sequence's Jacobian at once.
        one_hot = np.zeros((shape[0], units), dtype="float32")
        one_hot[:, unit] = 1.0
        grads = ops.convert_to_numpy(pullback(np.reshape(one_hot, shape)))
        squares += np.sum(
            np.square(grads.astype("float64")), axis=tuple(range(2, grads.ndim))
        )
    return np.sqrt(squares)

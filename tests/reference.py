"""Independent float64 NumPy references, written from the equations.

Nothing here calls keras_recurrent or Keras: each step function is the
textbook formula, and :func:`run` is Keras's time-loop semantics (masks,
``go_backwards``, initial state) written out as a plain Python loop.
"""

import numpy as np


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _f64(arrays):
    return [np.asarray(a, dtype="float64") for a in arrays]


def lstm_step(x_t, states, weights, use_peepholes=True):
    """One step of the (peephole) LSTM; ``weights`` in ``get_weights()`` order.

    Gate columns are ``i, f, c, o``; the output gate sees the new cell state.
    """
    h, c = states
    kernel, recurrent_kernel, bias = weights[:3]
    z_i, z_f, z_c, z_o = np.split(x_t @ kernel + h @ recurrent_kernel + bias, 4, -1)
    if use_peepholes:
        p_i, p_f, p_o = weights[3:]
        z_i = z_i + p_i * c
        z_f = z_f + p_f * c
    c_new = sigmoid(z_f) * c + sigmoid(z_i) * np.tanh(z_c)
    if use_peepholes:
        z_o = z_o + p_o * c_new
    h_new = sigmoid(z_o) * np.tanh(c_new)
    return [h_new, c_new]


def gru_step(x_t, states, weights, reset_after=True, recurrent_mask=None):
    """One GRU step, gates ``z, r, h``, as documented by keras_recurrent.

    ``recurrent_mask`` multiplies ``h_{t-1}`` where it enters the recurrent
    matmul only; the carried ``z * h_{t-1}`` term uses the undropped state.
    """
    (h,) = states
    kernel, recurrent_kernel = weights[:2]
    bias = weights[2] if len(weights) > 2 else np.zeros(kernel.shape[1])
    h_in = h if recurrent_mask is None else h * recurrent_mask
    u_z, u_r, u_h = np.split(recurrent_kernel, 3, -1)
    if reset_after:
        bias = bias if bias.ndim == 2 else np.stack([bias, np.zeros_like(bias)])
        x_z, x_r, x_h = np.split(x_t @ kernel + bias[0], 3, -1)
        b_z, b_r, b_h = np.split(bias[1], 3, -1)
        z = sigmoid(x_z + h_in @ u_z + b_z)
        r = sigmoid(x_r + h_in @ u_r + b_r)
        candidate = np.tanh(x_h + r * (h_in @ u_h + b_h))
    else:
        x_z, x_r, x_h = np.split(x_t @ kernel + bias, 3, -1)
        z = sigmoid(x_z + h_in @ u_z)
        r = sigmoid(x_r + h_in @ u_r)
        candidate = np.tanh(x_h + (r * h_in) @ u_h)
    return [z * h + (1 - z) * candidate]


def simple_rnn_step(x_t, states, weights, activation=np.tanh):
    (h,) = states
    kernel, recurrent_kernel = weights[:2]
    bias = weights[2] if len(weights) > 2 else 0.0
    return [activation(x_t @ kernel + h @ recurrent_kernel + bias)]


def run(step, x, initial_state, mask=None, go_backwards=False):
    """Keras's RNN loop in float64.

    Args:
        step: ``step(x_t, states) -> new_states``; the output is
            ``new_states[0]``.
        x: ``(batch, time, features)``.
        initial_state: list of ``(batch, units)`` arrays.
        mask: optional ``(batch, time)`` booleans. At a masked step the
            states carry over unchanged and the output repeats the previous
            output (zeros before the first unmasked step).
        go_backwards: process the time steps last to first; the outputs are
            returned in processing order.

    Returns:
        ``(outputs, final_states)``, ``outputs`` of shape ``(batch, time, units)``.
    """
    x = np.asarray(x, dtype="float64")
    states = _f64(initial_state)
    batch, time = x.shape[:2]
    mask = np.ones((batch, time), bool) if mask is None else np.asarray(mask, bool)
    order = range(time - 1, -1, -1) if go_backwards else range(time)
    output = np.zeros_like(states[0])
    outputs = []
    for t in order:
        keep = mask[:, t, None]
        new_states = step(x[:, t], states)
        states = [np.where(keep, new, old) for new, old in zip(new_states, states)]
        output = np.where(keep, new_states[0], output)
        outputs.append(output)
    return np.stack(outputs, axis=1), states


def lstm(
    x, weights, use_peepholes=True, mask=None, go_backwards=False, initial_state=None
):
    """The (peephole) LSTM over a sequence: ``(outputs (B, T, H), h, c)``."""
    weights = _f64(weights)
    units = weights[1].shape[0]
    if initial_state is None:
        initial_state = [np.zeros((len(x), units))] * 2
    outputs, (h, c) = run(
        lambda x_t, s: lstm_step(x_t, s, weights, use_peepholes),
        x,
        initial_state,
        mask=mask,
        go_backwards=go_backwards,
    )
    return outputs, h, c

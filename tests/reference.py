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


def layer_norm(z, gamma, beta, epsilon):
    """``(z - mean(z)) / sqrt(var(z) + epsilon) * gamma + beta`` over the
    last axis, with the population variance (Ba, Kiros & Hinton, 2016)."""
    mean = z.mean(axis=-1, keepdims=True)
    variance = ((z - mean) ** 2).mean(axis=-1, keepdims=True)
    return (z - mean) / np.sqrt(variance + epsilon) * gamma + beta


def _norms(weights, use_layer_norm, epsilon):
    """``(matmul_weights, LN_x, LN_h)``: the kernel, recurrent kernel and
    bias (if any), and the two normalisations as functions of ``z`` and an
    optional slice of the features (identities without layer norm).

    Layer norm's four vectors are the last four weights, after the bias, in
    ``get_weights()`` order.
    """
    if not use_layer_norm:
        return weights, _identity, _identity
    g_x, b_x, g_h, b_h = weights[-4:]

    def ln_x(z, part=slice(None)):
        return layer_norm(z, g_x[part], b_x[part], epsilon)

    def ln_h(z, part=slice(None)):
        return layer_norm(z, g_h[part], b_h[part], epsilon)

    return weights[:-4], ln_x, ln_h


def _identity(z, part=None):
    return z


def lstm_step(
    x_t,
    states,
    weights,
    use_peepholes=True,
    cell_clip=None,
    projection_units=None,
    projection_clip=None,
    use_layer_norm=False,
    layer_norm_epsilon=1e-3,
):
    """One step of the LSTM; ``weights`` in ``get_weights()`` order: kernel,
    recurrent kernel, bias, then the peepholes, the projection kernel and
    the layer norms' gains and offsets (kernel, recurrent, cell), each when
    its option is on.

    Gate columns are ``i, f, c, o``; the output gate sees the new cell state,
    after ``cell_clip``. With layer norm, ``LN_x(x_t W)`` and
    ``LN_h(h_{t-1} U)`` replace the two matmuls (before the bias), and
    ``h_t = o_t * tanh(LN_c(c_t))``; the carried ``c_t`` is not normalised.
    With a projection, ``h_t`` is then multiplied by the projection kernel
    and clipped to ``projection_clip``.
    """
    h, c = states
    weights = list(weights)
    kernel, recurrent_kernel, bias = weights[:3]
    rest = weights[3:]
    if use_peepholes:
        (p_i, p_f, p_o), rest = rest[:3], rest[3:]
    if projection_units is not None:
        projection, rest = rest[0], rest[1:]
    z_x, z_h = x_t @ kernel, h @ recurrent_kernel
    if use_layer_norm:
        g_x, b_x, g_h, b_h, g_c, b_c = rest
        z_x = layer_norm(z_x, g_x, b_x, layer_norm_epsilon)
        z_h = layer_norm(z_h, g_h, b_h, layer_norm_epsilon)
    z_i, z_f, z_c, z_o = np.split(z_x + z_h + bias, 4, -1)
    if use_peepholes:
        z_i = z_i + p_i * c
        z_f = z_f + p_f * c
    c_new = sigmoid(z_f) * c + sigmoid(z_i) * np.tanh(z_c)
    if cell_clip is not None:
        c_new = np.clip(c_new, -cell_clip, cell_clip)
    if use_peepholes:
        z_o = z_o + p_o * c_new
    c_read = c_new
    if use_layer_norm:
        c_read = layer_norm(c_new, g_c, b_c, layer_norm_epsilon)
    h_new = sigmoid(z_o) * np.tanh(c_read)
    if projection_units is not None:
        h_new = h_new @ projection
    if projection_clip is not None:
        h_new = np.clip(h_new, -projection_clip, projection_clip)
    return [h_new, c_new]


def gru_step(
    x_t,
    states,
    weights,
    reset_after=True,
    recurrent_mask=None,
    use_layer_norm=False,
    layer_norm_epsilon=1e-3,
):
    """One GRU step, gates ``z, r, h``, as documented by keras_recurrent.

    ``recurrent_mask`` multiplies ``h_{t-1}`` where it enters the recurrent
    matmul only; the carried ``z * h_{t-1}`` term uses the undropped state.

    With ``use_layer_norm``, ``LN_x(x_t W)`` replaces ``x_t W`` (before the
    input bias). With ``reset_after``, ``LN_h(h_{t-1} U)`` over all three
    gates replaces ``h_{t-1} U`` (before the recurrent bias); without it,
    ``h_{t-1} U_zr`` and ``(r * h_{t-1}) U_h`` are normalised each on its
    own, with the first ``2 * units`` and the last ``units`` entries of the
    recurrent gain and offset.
    """
    (h,) = states
    weights, ln_x, ln_h = _norms(weights, use_layer_norm, layer_norm_epsilon)
    kernel, recurrent_kernel = weights[:2]
    bias = weights[2] if len(weights) > 2 else np.zeros(kernel.shape[1])
    units = recurrent_kernel.shape[0]
    h_in = h if recurrent_mask is None else h * recurrent_mask
    u_zr, u_h = recurrent_kernel[:, : 2 * units], recurrent_kernel[:, 2 * units :]
    if reset_after:
        bias = bias if bias.ndim == 2 else np.stack([bias, np.zeros_like(bias)])
        x_z, x_r, x_h = np.split(ln_x(x_t @ kernel) + bias[0], 3, -1)
        h_z, h_r, h_h = np.split(ln_h(h_in @ recurrent_kernel) + bias[1], 3, -1)
        z = sigmoid(x_z + h_z)
        r = sigmoid(x_r + h_r)
        candidate = np.tanh(x_h + r * h_h)
    else:
        x_z, x_r, x_h = np.split(ln_x(x_t @ kernel) + bias, 3, -1)
        h_z, h_r = np.split(ln_h(h_in @ u_zr, slice(0, 2 * units)), 2, -1)
        z = sigmoid(x_z + h_z)
        r = sigmoid(x_r + h_r)
        candidate = np.tanh(x_h + ln_h((r * h_in) @ u_h, slice(2 * units, None)))
    return [z * h + (1 - z) * candidate]


def simple_rnn_step(
    x_t,
    states,
    weights,
    activation=np.tanh,
    recurrent_mask=None,
    use_layer_norm=False,
    layer_norm_epsilon=1e-3,
):
    """One SimpleRNN step, ``h_t = phi(x_t W + b + h_{t-1} U)``; with
    ``use_layer_norm``, ``phi(LN_x(x_t W) + b + LN_h(h_{t-1} U))``.

    ``recurrent_mask`` multiplies ``h_{t-1}`` where it enters the recurrent
    matmul.
    """
    (h,) = states
    weights, ln_x, ln_h = _norms(weights, use_layer_norm, layer_norm_epsilon)
    kernel, recurrent_kernel = weights[:2]
    bias = weights[2] if len(weights) > 2 else 0.0
    h_in = h if recurrent_mask is None else h * recurrent_mask
    return [activation(ln_x(x_t @ kernel) + bias + ln_h(h_in @ recurrent_kernel))]


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

"""PyTorch only: the whole sequence in one call to a fused recurrence.

On PyTorch every Keras op is a Python call, and a gated step takes a dozen of
them, so the portable loop pays their overhead at every time step. PyTorch has
the three recurrences built in (``torch.rnn_tanh``, ``torch.rnn_relu``,
``torch.lstm``, ``torch.gru``, what ``torch.nn.RNN``, ``LSTM`` and ``GRU``
run): one call for the whole sequence, forward and backward, with oneDNN
kernels on a CPU; Keras's own PyTorch backend uses the same functions for its
cuDNN path on a GPU. They run a cell only where the cell claims that kernel
for its equations (``fused_kernel``, see ``keras_recurrent._cell``), in
float32 or float64, for a call without recurrent dropout, and without a mask
or with a right-padded one (every sequence a run of steps from the first, at
least one long; not with ``go_backwards``): that runs over the padding, whose
results it then replaces (``_masked_results``), or for an LSTM that returns
or keeps its states as a packed sequence
(``torch.nn.utils.rnn.pack_padded_sequence``).

PyTorch has no LSTM with peepholes, and its kernels take no recurrent
dropout and no other mask. :class:`LSTMSequence`, an ``autograd.Function`` of
raw torch ops with its own backward pass, runs those: every call of a cell
that claims ``"lstm_peephole"``, and the calls of one that claims ``"lstm"``
that PyTorch's kernels do not serve.

Everything else runs the portable loop.
"""

import torch
from torch.nn.utils import rnn

from keras_recurrent._cell import claimed_kernel
from keras_recurrent.loops import portable

NAME = "torch-fused"

_FUNCTIONS = {
    "rnn_tanh": torch.rnn_tanh,
    "rnn_relu": torch.rnn_relu,
    "lstm": torch.lstm,
    "lstm_projected": torch.lstm,
    "gru": torch.gru,
}

#: The kernels :class:`LSTMSequence` computes, for every call.
_OWN = ("lstm", "lstm_peephole")


def serves(layer, mask, recurrent_dropout_mask):
    """Whether this module computes this call of ``layer``: PyTorch runs
    eagerly, so this reads the mask's values."""
    cell = layer.cell
    if layer.unroll or cell.compute_dtype not in ("float32", "float64"):
        return False
    claim = claimed_kernel(cell)
    if claim is None:
        return False
    return (
        claim.name in _OWN
        or _builtin_serves(layer, claim, mask, recurrent_dropout_mask)[0]
    )


def _builtin_serves(layer, claim, mask, recurrent_dropout_mask):
    """``(serves, lengths)``: whether PyTorch's own function computes this
    call, and the mask's ``_lengths`` where it does (None without a mask).
    The mask's values are read only once the other options allow it."""
    if claim.name not in _FUNCTIONS or recurrent_dropout_mask is not None:
        return False, None
    if mask is None:
        lengths = None
    elif layer.go_backwards:
        return False, None
    else:
        lengths = _lengths(mask)
        if lengths is None:
            return False, None
    if claim.name == "lstm_projected":
        # torch.lstm tells a projection by h and c differing in size, and
        # torch.nn.LSTM takes proj_size < hidden_size only.
        h_size, c_size = layer.cell.state_size
        return h_size < c_size, lengths
    return True, lengths


def _lengths(mask):
    """The length of each sequence of a right-padded ``(batch, time)`` mask,
    as a CPU tensor, or None for any other mask, for an empty one, for one
    without values, and for ``True``, which stands for any mask (see
    ``loops.choose``)."""
    if isinstance(mask, bool):
        return None
    mask = torch.as_tensor(mask)
    if mask.is_meta or mask.numel() == 0:  # output shapes, or nothing to pack
        return None
    mask = mask.to(torch.bool)
    lengths = mask.sum(dim=1)
    steps = torch.arange(mask.shape[1], device=mask.device)
    if (lengths == 0).any() or not torch.equal(mask, steps < lengths[:, None]):
        return None
    return lengths.cpu()


def recurrence(
    layer, sequences, initial_state, mask, recurrent_dropout_mask, training=False
):
    """``(last_output, outputs, states)`` for batch-major ``sequences``, as
    :func:`keras_recurrent.loops.portable.recurrence` returns them;
    differentiable by PyTorch's autograd."""
    claim = claimed_kernel(layer.cell)
    # The mask's values, read once for this call (serves reads them too
    # for a cell that only PyTorch's own function may compute).
    serves_builtin, lengths = _builtin_serves(
        layer, claim, mask, recurrent_dropout_mask
    )
    if not serves_builtin:
        # An LSTM that PyTorch's function cannot run (see serves).
        return _own(
            layer, claim, sequences, initial_state, mask, recurrent_dropout_mask
        )
    kernel, recurrent_kernel, bias, *projection = claim.weights()
    # The compute dtype (float32 or float64, see serves): Keras leaves
    # integer and boolean inputs as they are.
    dtype = kernel.dtype
    sequences = sequences.to(dtype)
    if layer.go_backwards:
        sequences = torch.flip(sequences, dims=[1])
    # (layers=1, batch, size): h of projection_units entries with a
    # projection, which is how torch.lstm tells it is there.
    hx = [s.to(dtype)[None] for s in initial_state]
    is_gru = claim.name == "gru"
    if is_gru:
        kernel, recurrent_kernel = _gru_order(kernel), _gru_order(recurrent_kernel)
    params = [kernel.T, recurrent_kernel.T]
    if bias is not None:
        # PyTorch adds an input bias and a recurrent bias; only Keras's GRU
        # (reset_after) has the second.
        if is_gru:
            params += [_gru_order(bias[0]), _gru_order(bias[1])]
        else:
            params += [bias, torch.zeros_like(bias)]
    has_biases = bias is not None
    # torch's weight_hr, (projection_units, units), after the biases.
    params += [p.T for p in projection]
    params = [p.contiguous() for p in params]
    if mask is not None and _needs_packing(layer, claim.name):
        return _packed(layer, claim.name, sequences, hx, params, has_biases, lengths)
    # (input, hx, params, has_biases, num_layers, dropout, train,
    # bidirectional, batch_first)
    options = (has_biases, 1, 0.0, False, False, True)
    if claim.name in ("lstm", "lstm_projected"):
        outputs, h, c = torch.lstm(sequences, hx, params, *options)
        states = [h[0], c[0]]
    else:
        outputs, h = _FUNCTIONS[claim.name](sequences, hx[0], params, *options)
        states = [h[0]]
    if mask is not None:
        # Run over the padding: a step after a sequence's end changes
        # nothing before it, and an LSTM's c, the one after the padding, is
        # neither returned nor kept (see _needs_packing).
        return _masked_results(layer, outputs, states, lengths)
    return outputs[:, -1], outputs, states


def _needs_packing(layer, name):
    """Whether a right-padded call must run packed: an LSTM's final cell
    state is not among the outputs, so an LSTM that returns or keeps its
    states does. Any other call runs over the padding, which is several
    times faster on a CPU: PyTorch's packed kernels do not use oneDNN."""
    return name in ("lstm", "lstm_projected") and (layer.return_state or layer.stateful)


def _masked_results(layer, outputs, states, lengths):
    """``(last_output, outputs, states)`` for a right-padded mask, from
    ``outputs`` exact up to each sequence's ``length``: Keras's outputs at
    the masked steps after it (see ``keras_recurrent.loops.portable.finish``),
    and its final h read at its end, so that no gradient flows from the
    steps after it. The other states are kept as they are."""
    lengths = lengths.to(outputs.device)
    batch, steps = outputs.shape[:2]
    last = outputs[torch.arange(batch, device=outputs.device), lengths - 1]
    valid = torch.arange(steps, device=outputs.device) < lengths[:, None]
    # At a masked step Keras outputs zeros, or the sequence's last output.
    fill = torch.zeros_like(last) if layer.zero_output_for_mask else last
    outputs = torch.where(valid[..., None], outputs, fill[:, None])
    return outputs[:, -1], outputs, [last, *states[1:]]


def _packed(layer, name, sequences, hx, params, has_biases, lengths):
    """The recurrence over the first ``length`` steps of each sequence only,
    as a packed sequence (see :func:`_masked_results`)."""
    packed = rnn.pack_padded_sequence(
        sequences, lengths, batch_first=True, enforce_sorted=False
    )
    # The packed batch is sorted by length: so are the states, in and out.
    hx = [h.index_select(1, packed.sorted_indices) for h in hx]
    # (data, batch_sizes, hx, params, has_biases, num_layers, dropout, train,
    # bidirectional)
    options = (has_biases, 1, 0.0, False, False)
    if name in ("lstm", "lstm_projected"):
        data, *states = torch.lstm(
            packed.data, packed.batch_sizes, hx, params, *options
        )
    else:
        function = _FUNCTIONS[name]
        data, *states = function(
            packed.data, packed.batch_sizes, hx[0], params, *options
        )
    states = [s.index_select(1, packed.unsorted_indices)[0] for s in states]
    outputs, _ = rnn.pad_packed_sequence(
        packed._replace(data=data), batch_first=True, total_length=sequences.shape[1]
    )
    return _masked_results(layer, outputs, states, lengths)


def _gru_order(weight):
    """A GRU weight with its gate blocks reordered from z, r, h to r, z, h."""
    z, r, h = torch.chunk(weight, 3, dim=-1)
    return torch.cat([r, z, h], dim=-1)


def _own(layer, claim, sequences, initial_state, mask, recurrent_dropout_mask):
    """:func:`recurrence` by :class:`LSTMSequence`, for a cell that claims
    ``"lstm"`` or ``"lstm_peephole"``."""
    kernel, recurrent_kernel, bias, *peepholes = claim.weights()
    peepholes = peepholes[0] if peepholes else None
    dtype = kernel.dtype
    xs, masks = portable.time_major(layer, sequences.to(dtype), mask)
    h0, c0 = (s.to(dtype) for s in initial_state)
    weights = (kernel, bias, recurrent_kernel, peepholes)
    hs, c = LSTMSequence.apply(xs, h0, c0, *weights, masks, recurrent_dropout_mask)
    return portable.finish(layer, hs, [hs[-1], c], masks)


class LSTMSequence(torch.autograd.Function):
    """The LSTM, with peepholes or without, over a whole sequence, with its
    own backward pass.

    ``apply(xs, h0, c0, kernel, bias, recurrent_kernel, peepholes, masks,
    recurrent_dropout_mask) -> (hs, c)``:

    - ``xs``: ``(time, batch, features)``; ``h0``, ``c0``: ``(batch,
      units)``;
    - ``kernel``, ``bias`` (or None), ``recurrent_kernel``: the LSTM's
      weights in Keras's layout, gates ``i, f, c, o``; ``peepholes``: ``(3,
      units)``, ``p_i, p_f, p_o``, or None for the LSTM without them;
    - ``masks``: None or ``(time, batch, 1)`` booleans: at a masked step
      both states are carried over unchanged (``portable.keep_masked``);
    - ``recurrent_dropout_mask``: None or ``(batch, units)``, on ``h_{t-1}``
      where it enters the recurrent matmul;
    - ``hs``: ``(time, batch, units)``, ``h_t`` after each step; ``c``: the
      final cell state.

    The forward pass projects all inputs in one matmul, then keeps each
    step's gates and cell state. The backward pass works out from them, for
    all steps at once, what each step's gradients are multiplied by, so that
    the loop back through time does one matmul and five elementwise ops per
    step; the weights' gradients are then one matmul or sum each over all
    steps. First derivatives only.
    """

    @staticmethod
    def forward(
        ctx, xs, h0, c0, kernel, bias, recurrent_kernel, peepholes, masks, dropout
    ):
        steps, batch, features = xs.shape
        units = recurrent_kernel.shape[0]
        flat = xs.reshape(steps * batch, features)
        # Each step's gate inputs, to which its recurrent matmul is added in
        # place (addmm into a new tensor would copy them first).
        if bias is None:
            z_all = flat @ kernel
        else:
            z_all = torch.addmm(bias, flat, kernel)
        z_all = z_all.view(steps, batch, 4, units)
        # Every result is written into a buffer of its own.
        i_f = xs.new_empty((steps, batch, 2, units))  # after sigmoid
        g = xs.new_empty((steps, batch, units))  # after tanh
        o = torch.empty_like(g)
        cs = xs.new_empty((steps + 1, batch, units))  # c_{t-1}, carried
        c_new = cs[1:] if masks is None else torch.empty_like(g)
        hs = torch.empty_like(g)
        cs[0] = c0
        if peepholes is not None:
            p_if, p_o = peepholes[:2], peepholes[2]
        # Each step's views, made once: indexing in the loop costs as much.
        per_step = zip(
            z_all.unbind(0),
            i_f.unbind(0),
            i_f[:, :, 0].unbind(0),
            i_f[:, :, 1].unbind(0),
            g.unbind(0),
            o.unbind(0),
            cs.unbind(0),
            cs[1:].unbind(0),
            c_new.unbind(0),
            hs.unbind(0),
            (None,) * steps if masks is None else masks.unbind(0),
        )
        h = h0
        for z, i_f_t, i_t, f_t, g_t, o_t, c, c_out, c_t, h_out, m in per_step:
            h_in = h if dropout is None else h * dropout
            z.view(batch, 4 * units).addmm_(h_in, recurrent_kernel)
            z_if, z_o = z[:, :2], z[:, 3]
            if peepholes is not None:
                z_if = torch.addcmul(z_if, p_if, c[:, None])
            torch.sigmoid(z_if, out=i_f_t)
            torch.tanh(z[:, 2], out=g_t)
            torch.addcmul(f_t * c, i_t, g_t, out=c_t)
            if peepholes is not None:
                z_o = torch.addcmul(z_o, p_o, c_t)
            torch.sigmoid(z_o, out=o_t)
            if m is None:
                h = torch.mul(o_t, torch.tanh(c_t), out=h_out)
            else:
                h = torch.where(m, o_t * torch.tanh(c_t), h, out=h_out)
                torch.where(m, c_t, c, out=c_out)
        ctx.save_for_backward(
            xs,
            kernel,
            recurrent_kernel,
            peepholes,
            masks,
            dropout,
            i_f,
            g,
            o,
            cs,
            c_new,
            hs,
            h0,
        )
        return hs, cs[steps].clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_hs, d_c):
        (
            xs,
            kernel,
            recurrent_kernel,
            peepholes,
            masks,
            dropout,
            i_f,
            g,
            o,
            cs,
            c_new,
            hs,
            h0,
        ) = ctx.saved_tensors
        steps, batch, units = g.shape
        i, f = i_f.unbind(2)
        c_prev = cs[:-1]
        # Per step, from dh and the incoming dc: dz_o = dh * to_o,
        # dc += dh * to_c, (dz_i, dz_f, dz_g) = dc * to_ifg, and
        # dc_{t-1} = dc * to_c_prev. The four factors to_ifg, to_o are
        # kept where the loop turns them into d_z, in place: no buffer
        # of that size more.
        d_z = g.new_empty((steps, batch, 4, units))
        tanh_c = torch.tanh(c_new)
        to_o = torch.mul(tanh_c * o, 1 - o, out=d_z[:, :, 3])
        to_c = o * (1 - tanh_c * tanh_c)
        del tanh_c
        torch.mul(g * i, 1 - i, out=d_z[:, :, 0])
        torch.mul(c_prev * f, 1 - f, out=d_z[:, :, 1])
        torch.mul(i, 1 - g * g, out=d_z[:, :, 2])
        to_c_prev = f
        if peepholes is not None:
            p_i, p_f, p_o = peepholes
            to_c.addcmul_(to_o, p_o)
            to_c_prev = f + d_z[:, :, 0] * p_i + d_z[:, :, 1] * p_f
        kernel_t = recurrent_kernel.t()
        dh_next = torch.zeros_like(h0)
        dc_next = d_c
        for t in range(steps - 1, -1, -1):
            dh = d_hs[t] + dh_next
            dc = dc_next
            if masks is not None:
                # A masked step passes both gradients straight through.
                kept_h, kept_c = dh, dc
                dh = torch.where(masks[t], dh, 0)
                dc = torch.where(masks[t], dc, 0)
            d_z_t = d_z[t]
            d_z_t[:, 3].mul_(dh)
            dc = torch.addcmul(dc, dh, to_c[t])
            d_z_t[:, :3].mul_(dc[:, None])
            dc_next = dc * to_c_prev[t]
            dh_next = d_z_t.view(batch, 4 * units) @ kernel_t
            if dropout is not None:
                dh_next = dh_next * dropout
            if masks is not None:
                dc_next = torch.where(masks[t], dc_next, kept_c)
                dh_next = torch.where(masks[t], dh_next, kept_h)
        flat_d_z = d_z.view(steps * batch, 4 * units)
        needs = ctx.needs_input_grad
        d_xs = d_kernel = d_bias = None
        if needs[0]:
            d_xs = (flat_d_z @ kernel.t()).view(xs.shape)
        if needs[3]:
            d_kernel = xs.reshape(steps * batch, xs.shape[2]).t() @ flat_d_z
        if needs[4]:
            d_bias = flat_d_z.sum(0)
        # sum_t h_in_t^T dz_t, h_in_t the h each step started from: h0, then
        # every step's output but the last (not copied into one tensor).
        h_ins = hs[:-1].reshape((steps - 1) * batch, units)
        if dropout is None:
            d_recurrent = torch.addmm(
                h0.t() @ d_z[0].view(batch, 4 * units), h_ins.t(), flat_d_z[batch:]
            )
        else:
            h_ins = torch.cat([h0, h_ins]) * dropout.repeat(steps, 1)
            d_recurrent = h_ins.t() @ flat_d_z
        d_peepholes = None
        if peepholes is not None:
            d_peepholes = torch.stack(
                [
                    (d_z[:, :, 0] * c_prev).sum((0, 1)),
                    (d_z[:, :, 1] * c_prev).sum((0, 1)),
                    (d_z[:, :, 3] * c_new).sum((0, 1)),
                ]
            )
        return (
            d_xs,
            dh_next,
            dc_next,
            d_kernel,
            d_bias,
            d_recurrent,
            d_peepholes,
            None,
            None,
        )

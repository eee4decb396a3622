"""PyTorch only: the whole sequence in one call to PyTorch's fused recurrence.

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
(``torch.nn.utils.rnn.pack_padded_sequence``). Everything else runs the
portable loop.
"""

import torch
from torch.nn.utils import rnn

from keras_recurrent._cell import claimed_kernel

NAME = "torch-fused"

_FUNCTIONS = {
    "rnn_tanh": torch.rnn_tanh,
    "rnn_relu": torch.rnn_relu,
    "lstm": torch.lstm,
    "lstm_projected": torch.lstm,
    "gru": torch.gru,
}


def serves(layer, mask, recurrent_dropout_mask):
    """Whether PyTorch's fused recurrence computes this call of ``layer``:
    PyTorch runs eagerly, so this reads the mask's values."""
    if recurrent_dropout_mask is not None or layer.unroll:
        return False
    if mask is not None and (layer.go_backwards or _lengths(mask) is None):
        return False
    cell = layer.cell
    if cell.compute_dtype not in ("float32", "float64"):
        return False
    claim = claimed_kernel(cell)
    if claim is None or claim.name not in _FUNCTIONS:
        return False
    if claim.name == "lstm_projected":
        # torch.lstm tells a projection by h and c differing in size, and
        # torch.nn.LSTM takes proj_size < hidden_size only.
        h_size, c_size = cell.state_size
        return h_size < c_size
    return True


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


def recurrence(layer, sequences, initial_state, mask, recurrent_dropout_mask):
    """``(last_output, outputs, states)`` for batch-major ``sequences``, as
    :func:`keras_recurrent.loops.portable.recurrence` returns them;
    differentiable by PyTorch's autograd."""
    claim = claimed_kernel(layer.cell)
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
    lengths = None if mask is None else _lengths(mask)
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

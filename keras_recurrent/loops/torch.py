"""PyTorch only: the whole sequence in one call to PyTorch's fused recurrence.

On PyTorch every Keras op is a Python call, and a gated step takes a dozen of
them, so the portable loop pays their overhead at every time step. PyTorch has
the three recurrences built in (``torch.rnn_tanh``, ``torch.rnn_relu``,
``torch.lstm``, ``torch.gru``, what ``torch.nn.RNN``, ``LSTM`` and ``GRU``
run): one call for the whole sequence, forward and backward, with oneDNN
kernels on a CPU; Keras's own PyTorch backend uses the same functions for its
cuDNN path on a GPU. They run a cell only where the cell claims that kernel
for its equations (``fused_kernel``, see ``keras_recurrent._cell``), in
float32 or float64, for a call without a mask or recurrent dropout.
Everything else runs the portable loop.
"""

import torch

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
    """Whether PyTorch's fused recurrence computes this call of ``layer``."""
    if mask is not None or recurrent_dropout_mask is not None or layer.unroll:
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


def recurrence(layer, sequences, initial_state, mask, recurrent_dropout_mask):
    """``(last_output, outputs, states)`` for batch-major ``sequences``, as
    :func:`keras_recurrent.loops.portable.recurrence` returns them without a
    mask; differentiable by PyTorch's autograd."""
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
    # (input, hx, params, has_biases, num_layers, dropout, train,
    # bidirectional, batch_first)
    options = (has_biases, 1, 0.0, False, False, True)
    if claim.name in ("lstm", "lstm_projected"):
        outputs, h, c = torch.lstm(sequences, hx, params, *options)
        states = [h[0], c[0]]
    else:
        outputs, h = _FUNCTIONS[claim.name](sequences, hx[0], params, *options)
        states = [h[0]]
    return outputs[:, -1], outputs, states


def _gru_order(weight):
    """A GRU weight with its gate blocks reordered from z, r, h to r, z, h."""
    z, r, h = torch.chunk(weight, 3, dim=-1)
    return torch.cat([r, z, h], dim=-1)

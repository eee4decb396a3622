"""PyTorch only: the whole sequence in one call to PyTorch's fused recurrence.

On PyTorch every Keras op is a Python call, and a gated step takes a dozen of
them, so the portable loop pays their overhead at every time step. PyTorch has
the three recurrences built in (``torch.rnn_tanh``, ``torch.lstm``,
``torch.gru``, what ``torch.nn.RNN``, ``LSTM`` and ``GRU`` run): one call for
the whole sequence, forward and backward, with oneDNN kernels on a CPU. Their
equations are those of the Keras cells in the configurations :func:`serves`
accepts; Keras's own PyTorch backend uses the same functions for its cuDNN
path on a GPU. Everything else (masks, recurrent dropout, peepholes, GRU with
``reset_after=False``, other activations or dtypes) runs the portable loop.

Only this module imports PyTorch; ``_base.RecurrentLayer.inner_loop`` chooses
it on the PyTorch backend.
"""

import keras
import torch

from keras_recurrent.gru import GRUCell
from keras_recurrent.lstm import LSTMCell
from keras_recurrent.simple_rnn import SimpleRNNCell


def serves(cell):
    """Whether PyTorch's fused recurrence computes ``cell``'s equations."""
    if cell.compute_dtype not in ("float32", "float64"):
        return False
    if isinstance(cell, SimpleRNNCell):
        return cell.activation in (keras.activations.tanh, keras.activations.relu)
    gates_ok = (
        cell.activation is keras.activations.tanh
        and cell.recurrent_activation is keras.activations.sigmoid
    )
    if isinstance(cell, LSTMCell):
        return gates_ok and not cell.use_peepholes
    if isinstance(cell, GRUCell):
        return gates_ok and cell.reset_after
    return False


def recurrence(cell, sequences, initial_state, go_backwards=False):
    """``(last_output, outputs, states)`` for batch-major ``sequences``, as
    :func:`keras_recurrent._loop.recurrence` returns them without a mask;
    differentiable by PyTorch's autograd."""
    # The compute dtype (float32 or float64, see serves): Keras leaves
    # integer and boolean inputs as they are.
    dtype = cell.kernel.value.dtype
    sequences = sequences.to(dtype)
    if go_backwards:
        sequences = torch.flip(sequences, dims=[1])
    hx = [s.to(dtype)[None] for s in initial_state]  # (layers=1, batch, units)
    kernel, recurrent_kernel = cell.kernel.value, cell.recurrent_kernel.value
    is_gru = isinstance(cell, GRUCell)
    if is_gru:
        kernel, recurrent_kernel = _gru_order(kernel), _gru_order(recurrent_kernel)
    params = [kernel.T, recurrent_kernel.T]
    if cell.use_bias:
        bias = cell.bias.value
        # PyTorch adds an input bias and a recurrent bias; only Keras's GRU
        # (reset_after) has the second.
        if is_gru:
            params += [_gru_order(bias[0]), _gru_order(bias[1])]
        else:
            params += [bias, torch.zeros_like(bias)]
    params = [p.contiguous() for p in params]
    # (input, hx, params, has_biases, num_layers, dropout, train,
    # bidirectional, batch_first)
    options = (len(params) == 4, 1, 0.0, False, False, True)
    if isinstance(cell, LSTMCell):
        outputs, h, c = torch.lstm(sequences, hx, params, *options)
        states = [h[0], c[0]]
    else:
        if is_gru:
            function = torch.gru
        elif cell.activation is keras.activations.tanh:
            function = torch.rnn_tanh
        else:
            function = torch.rnn_relu
        outputs, h = function(sequences, hx[0], params, *options)
        states = [h[0]]
    return outputs[:, -1], outputs, states


def _gru_order(weight):
    """A GRU weight with its gate blocks reordered from z, r, h to r, z, h."""
    z, r, h = torch.chunk(weight, 3, dim=-1)
    return torch.cat([r, z, h], dim=-1)

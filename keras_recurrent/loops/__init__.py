"""The time loops of the sequence layers, and the choice between them.

Every loop implements one protocol, in a module of its own:

- ``NAME``: what :meth:`RecurrentLayer.loop_for` answers when it runs;
- ``serves(layer, mask, recurrent_dropout_mask) -> bool``: whether it
  computes this call of ``layer``. It reads whether each mask is given, and
  PyTorch's, which runs eagerly, also the mask's values (True stands for a
  mask of any pattern);
- ``recurrence(layer, sequences, initial_state, mask,
  recurrent_dropout_mask, training=False) -> (last_output, outputs,
  states)``: the call, for batch-major ``sequences`` after input dropout,
  with ``outputs`` of shape ``(batch, time, units)`` (``graph`` gives only
  the last step, ``(batch, 1, units)``, to a layer without
  ``return_sequences``, whose outputs Keras never reads). ``training`` says
  only how a loop may run, never what it computes: the TensorFlow loop keeps
  what its backward pass reads in its loop's lists then (see
  ``tensorflow._in_pieces``).

:func:`run` asks the current backend's fast paths in turn (``tensorflow``:
the loop compiled by XLA with its own backward pass; ``torch``: PyTorch's
fused kernels, and a whole-sequence LSTM with its own backward pass where
PyTorch has none; ``jax``: ``lax.scan`` with its own backward pass) and
falls back to ``portable``, which serves every call. A
fast path is imported only on its backend, and none of them imports the
cells: a cell describes itself (see ``keras_recurrent._cell``).

Inside :func:`exporting`, TensorFlow asks ``graph`` instead of the XLA
loop: a plain ``tf.while_loop`` that the converters to ONNX and TFLite can
read, which the XLA loop is not.

A cell whose class overrides ``call`` itself is not described by its step
pieces any more; its layer runs Keras's own loop over ``cell.call``
(``keras.layers.RNN.inner_loop``), named ``"cell-call"``.
"""

import keras

from keras_recurrent import _exporting
from keras_recurrent._cell import runs_step_parts
from keras_recurrent.loops import portable

CELL_CALL = "cell-call"


def _fast_paths():
    """The fast paths of the current backend, in the order they are asked."""
    backend = keras.config.backend()
    if backend == "tensorflow" and _exporting.active():
        from keras_recurrent.loops import graph

        return (graph,)
    if backend == "tensorflow":
        from keras_recurrent.loops import tensorflow

        return (tensorflow,)
    if backend == "torch":
        from keras_recurrent.loops import torch

        return (torch,)
    if backend == "jax":
        from keras_recurrent.loops import jax

        return (jax,)
    return ()


def _loop(layer, mask, recurrent_dropout_mask):
    for path in _fast_paths():
        if path.serves(layer, mask, recurrent_dropout_mask):
            return path
    return portable


def choose(layer, mask=None, training=False):
    """The name of the loop that runs ``layer`` for a call with this mask
    (True stands for a mask of any pattern) and ``training``."""
    if not runs_step_parts(layer.cell):
        return CELL_CALL
    # A stand-in: serves reads only whether the recurrent mask is given.
    recurrent_dropout = True if _has_recurrent_dropout(layer, training) else None
    return _loop(layer, mask, recurrent_dropout).NAME


def run(layer, sequences, initial_state, mask=None, training=False):
    """``(last_output, outputs, states)`` of ``layer`` over batch-major
    ``sequences``, by the loop :func:`choose` names; what
    ``keras.layers.RNN.inner_loop`` returns."""
    cell = layer.cell
    if not runs_step_parts(cell):
        return keras.layers.RNN.inner_loop(
            layer, sequences, initial_state, mask, training=training
        )
    if training and cell.dropout > 0:
        # One mask per sequence, the same at every time step.
        dropout_mask = cell.get_dropout_mask(sequences[:, 0, :])
        sequences = sequences * keras.ops.expand_dims(dropout_mask, 1)
    recurrent_dropout_mask = None
    if _has_recurrent_dropout(layer, training):
        recurrent_dropout_mask = cell.get_recurrent_dropout_mask(initial_state[0])
    loop = _loop(layer, mask, recurrent_dropout_mask)
    return loop.recurrence(
        layer, sequences, initial_state, mask, recurrent_dropout_mask, training
    )


def _has_recurrent_dropout(layer, training):
    return bool(training) and layer.cell.recurrent_dropout > 0

"""TensorFlow only: the time loop as a plain ``tf.while_loop``, for export.

The XLA loop (``keras_recurrent.loops.tensorflow``) is a function call that
TensorFlow runs compiled. A SavedModel keeps it, and serves it; but the
converters to other formats cannot read it:

- tf2onnx inlines the function calls of the graph it converts, and
  TensorFlow never inlines a function marked for XLA compilation, so the
  ONNX file keeps a ``PartitionedCall`` that ONNX does not have;
- the TFLite converter reads the function, but its ``TensorArray`` of
  states becomes a ``TensorListReserve``, which it can lower only with a
  static element shape, that is with a fixed batch size.

Here the loop is inline in the traced graph, and the outputs are carried as
a tensor that grows by one time step per iteration (a loop variable whose
shape changes, ``tf.concat``) instead of a ``TensorArray``: tf2onnx turns it
into an ONNX ``Loop``, and TFLite into a ``WHILE`` of builtin ops, with the
batch size left dynamic. Copying the outputs at each step costs
``O(time**2)``, which is why this loop runs only inside
:func:`keras_recurrent.exporting`, and carries the outputs only for a layer
with ``return_sequences``. TensorFlow differentiates it by itself.
"""

import tensorflow as tf

from keras_recurrent._cell import recurrent_input
from keras_recurrent.loops import portable

NAME = "graph"


def serves(layer, mask, recurrent_dropout_mask):
    """Whether this loop runs ``layer``: unless ``unroll=True``, whose
    Python loop every converter reads already."""
    return not layer.unroll


def recurrence(layer, sequences, initial_state, mask, recurrent_dropout_mask):
    """:func:`keras_recurrent.loops.portable.recurrence`, as a
    ``tf.while_loop`` without tensor lists."""
    cell = layer.cell
    xs, masks = portable.time_major(layer, sequences, mask)
    xs = cell.project_inputs(xs)
    kernel, update, extra = cell.step_parts(cell.step_weights())
    states = [tf.cast(s, cell.variable_dtype) for s in initial_state]
    steps = tf.shape(xs)[0]

    def body(t, states, *hs):
        h_in = recurrent_input(states[0], recurrent_dropout_mask, cell.compute_dtype)
        new = update(xs[t], tf.matmul(h_in, kernel), h_in, states, extra)
        new = portable.keep_masked(None if masks is None else masks[t], new, states)
        return t + 1, new, *(tf.concat([h, new[0][None]], 0) for h in hs)

    hs, invariants = (), ()
    if layer.return_sequences:
        shape = tf.concat([[0], tf.shape(states[0])], 0)
        hs = (tf.zeros(shape, states[0].dtype),)
        invariants = (tf.TensorShape([None]).concatenate(states[0].shape),)
    _, final, *hs = tf.while_loop(
        lambda t, *_: t < steps,
        body,
        (0, states, *hs),
        shape_invariants=(tf.TensorShape([]), [s.shape for s in states], *invariants),
    )
    # Without return_sequences Keras reads only the last output: the loop
    # then carries no outputs, and returns the last one alone as the sequence.
    hs = hs[0] if hs else final[0][None]
    return portable.finish(layer, hs, final, masks)

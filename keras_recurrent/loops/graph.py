"""TensorFlow only: the time loop as a plain ``tf.while_loop``, for export.

The XLA loop (``keras_recurrent.loops.tensorflow``) is a function call that
TensorFlow runs compiled. A SavedModel keeps it, and serves it; the
converters to other formats read it less well:

- tf2onnx inlines the function calls of the graph it converts, but
  TensorFlow never inlines a function marked for XLA compilation, and ONNX
  has no ``PartitionedCall``. A tf2onnx handler of this package
  (``keras_recurrent.loops.tf2onnx_handlers``) inlines such a call, so that
  a plain ``model.export(format="onnx")`` gives one ONNX ``Loop`` per layer;
- the TFLite converter reads the function, but its ``TensorArray`` of
  states becomes a ``TensorListReserve``, which it can lower only with a
  static element shape, that is with a fixed batch size.

Here the loop is inline in the traced graph, and the outputs are carried as
a tensor that grows by one time step per iteration (a loop variable whose
shape changes, ``tf.concat``) instead of a ``TensorArray``: tf2onnx turns it
into an ONNX ``Loop``, and TFLite into a ``WHILE`` of builtin ops, with the
batch size left dynamic. Copying the outputs at each step costs
``O(time**2)``, so the loop carries them only for a layer with
``return_sequences``.

Inside ``exporting("onnx")``, a cell that claims the plain LSTM's or the
GRU's equations (its :class:`~keras_recurrent._cell.FusedKernel` is
``"lstm"`` or ``"gru"``), called without a mask and in one dtype, runs a
step written as Keras 2's layers wrote theirs, over tensor lists, which
tf2onnx recognises and converts to ONNX's own ``LSTM`` or ``GRU`` operator
(with ``linear_before_reset=1``) instead of a ``Loop``. The step computes the
claimed equations, as every other loop does. Its lists are made from whole
tensors (``TensorListFromTensor``), which TFLite lowers with a dynamic batch
where it cannot lower a ``TensorListReserve``; but TFLite copies the list of
outputs at every step, which made an LSTM at 32/100/32/128 seven times
slower there than the other loop (49 ms against 6.6 ms). Hence the format.

tf2onnx has no pattern for an LSTM with peepholes. Inside
``exporting("onnx")`` a peephole LSTM (``"lstm_peephole"``, unmasked,
float32, its states not returned) runs TensorFlow's ``BlockLSTMV2``
instead, which computes the same equations in one operation; a tf2onnx
handler of this package converts that operation, and only when this module
made it, to ONNX's ``LSTM`` with its ``P`` input.

Nor has it one for a SimpleRNN. Inside ``exporting("onnx")`` a SimpleRNN
(``"rnn_tanh"`` or ``"rnn_relu"``, unmasked, float32) runs as a call of a
function named for its equations and compiled by XLA, which TensorFlow
therefore never inlines; the handler that inlines the XLA loop's call
converts the call of such a function to ONNX's ``RNN`` instead.

This loop runs only inside :func:`keras_recurrent.exporting`. TensorFlow
differentiates it by itself, except ``BlockLSTMV2`` and the SimpleRNN's
function, whose gradients are given here.
"""

import tensorflow as tf

from keras_recurrent._cell import claimed_kernel, recurrent_input
from keras_recurrent._exporting import export_format
from keras_recurrent.loops import portable
from keras_recurrent.loops.tf2onnx_handlers import (
    BLOCK_SCOPE,
    RNN_ACTIVATIONS,
    register,
    rnn_function_name,
)

NAME = "graph"


def serves(layer, mask, recurrent_dropout_mask):
    """Whether this loop runs ``layer``: unless ``unroll=True``, whose
    Python loop every converter reads already."""
    return not layer.unroll


def _lstm_step(kernel, recurrent_kernel, bias):
    """The ``"lstm"`` step, as tf2onnx's ``lstm_tf2_rewriter`` matches it:
    the operations and their operands' order are what it looks for."""
    if bias is None:
        bias = tf.zeros(kernel.shape[-1:], kernel.dtype)

    def step(x_t, states):
        h, c = states
        z = tf.nn.bias_add(
            tf.matmul(x_t, kernel) + tf.matmul(h, recurrent_kernel), bias
        )
        i, f, g, o = tf.split(z, 4, axis=1)
        c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
        return [tf.sigmoid(o) * tf.tanh(c), c]

    return step


def _gru_step(kernel, recurrent_kernel, bias):
    """The ``"gru"`` step, as tf2onnx's ``gru_tf2_rewriter`` matches it
    (Keras 2's GRU with ``reset_after=True``)."""
    if bias is None:
        bias = tf.zeros((2, kernel.shape[-1]), kernel.dtype)
    # Sliced here, so that the step reads each bias as a loop input.
    input_bias, recurrent_bias = bias[0], bias[1]

    def step(x_t, states):
        (h,) = states
        x_z, x_r, x_h = tf.split(
            tf.nn.bias_add(tf.matmul(x_t, kernel), input_bias), 3, axis=1
        )
        r_z, r_r, r_h = tf.split(
            tf.nn.bias_add(tf.matmul(h, recurrent_kernel), recurrent_bias), 3, axis=1
        )
        z = tf.sigmoid(x_z + r_z)
        r = tf.sigmoid(x_r + r_r)
        return [z * h + (1.0 - z) * tf.tanh(x_h + r * r_h)]

    return step


#: The steps tf2onnx converts to ONNX's operators, by FusedKernel name.
_ONNX_STEPS = {"lstm": _lstm_step, "gru": _gru_step}


def _onnx_step(cell, masks, recurrent_dropout_mask):
    """The step of :data:`_ONNX_STEPS` that computes this call, or None."""
    claim = claimed_kernel(cell)
    if (
        export_format() != "onnx"
        or claim is None
        or claim.name not in _ONNX_STEPS
        or masks is not None
        or recurrent_dropout_mask is not None
        or cell.compute_dtype != cell.variable_dtype
    ):
        return None
    return _ONNX_STEPS[claim.name](*claim.weights())


def _onnx_peephole_lstm(layer, masks, recurrent_dropout_mask):
    """Whether this call, inside ``exporting("onnx")``, is a peephole LSTM
    that :func:`_block_lstm` computes and ONNX's ``LSTM`` with its ``P``
    input expresses: unmasked, one dtype (float32), and no states read after
    the call (ONNX gives the last cell state, not every step's)."""
    cell = layer.cell
    claim = claimed_kernel(cell)
    return (
        export_format() == "onnx"
        and claim is not None
        and claim.name == "lstm_peephole"
        and masks is None
        and recurrent_dropout_mask is None
        and cell.compute_dtype == cell.variable_dtype == "float32"
        and not layer.return_state
        and not layer.stateful
        and register()
    )


def _onnx_simple_rnn(cell, masks, recurrent_dropout_mask):
    """The claimed ``"rnn_tanh"`` or ``"rnn_relu"`` kernel of this call, if
    it is, inside ``exporting("onnx")``, a SimpleRNN that ONNX's ``RNN``
    computes (unmasked, float32), or None."""
    claim = claimed_kernel(cell)
    if (
        export_format() == "onnx"
        and claim is not None
        and claim.name in _RNN_FUNCTIONS
        and masks is None
        and recurrent_dropout_mask is None
        and cell.compute_dtype == cell.variable_dtype == "float32"
        and register()
    ):
        return claim
    return None


def _rnn_function(name, activation):
    """The SimpleRNN over time-major ``x``, ``(x, kernel, recurrent_kernel,
    bias, h0) -> (hs, h)``, as a call of an XLA-compiled function named
    ``keras_recurrent_<name>``, which stays a call in the traced graph. Its
    gradient is the same loop's outside XLA, recomputed: XLA cannot hand
    the loop's tensor lists of steps over to TensorFlow's gradient."""

    def loop(x, kernel, recurrent_kernel, bias, h0):
        steps = tf.shape(x)[0]

        def body(t, h, hs):
            h = activation(
                tf.matmul(x[t], kernel) + tf.matmul(h, recurrent_kernel) + bias
            )
            return t + 1, h, hs.write(t, h)

        hs = tf.TensorArray(h0.dtype, size=steps, element_shape=h0.shape)
        _, h, hs = tf.while_loop(lambda t, *_: t < steps, body, (0, h0, hs))
        return hs.stack(), h

    loop.__name__ = loop.__qualname__ = rnn_function_name(name)
    compiled = tf.function(loop, jit_compile=True, autograph=False)

    @tf.custom_gradient
    def call(*inputs):
        def gradient(dhs, dh):
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                outputs = loop(*inputs)
            return tape.gradient(outputs, inputs, output_gradients=[dhs, dh])

        return compiled(*inputs), gradient

    return call


#: The SimpleRNN functions, by FusedKernel name: one for each activation
#: the tf2onnx handler gives ONNX's ``RNN``.
_RNN_FUNCTIONS = {
    name: _rnn_function(name, {"Tanh": tf.tanh, "Relu": tf.nn.relu}[onnx])
    for name, onnx in RNN_ACTIVATIONS.items()
}


def _simple_rnn(claim, xs, states):
    """``(hs, [h])`` by the function of :data:`_RNN_FUNCTIONS` for
    ``claim``, which the tf2onnx handler converts to ONNX's ``RNN``."""
    kernel, recurrent_kernel, bias = claim.weights()
    if bias is None:
        bias = tf.zeros(kernel.shape[-1:], kernel.dtype)
    function = _RNN_FUNCTIONS[claim.name]
    inputs = (xs, kernel, recurrent_kernel, bias, states[0])
    hs, h = function(*(tf.convert_to_tensor(x) for x in inputs))
    return hs, [h]


def _block_lstm(cell, xs, states):
    """``(hs, [h, c])`` of a peephole LSTM by TensorFlow's ``BlockLSTMV2``
    (the gates i, f, c, o in Keras's order over ``[x, h] @ [kernel;
    recurrent_kernel]``, Gers' peepholes, no clip), which a tf2onnx handler
    (``keras_recurrent.loops.tf2onnx_handlers``) converts to ONNX's ``LSTM``.
    Its gradient is ``BlockLSTMGradV2``'s: the one TensorFlow registers for the
    operation is V1's, which reads another gate order."""
    kernel, recurrent_kernel, bias, peepholes = claimed_kernel(cell).weights()
    weights = tf.concat([kernel, recurrent_kernel], 0)
    if bias is None:
        bias = tf.zeros(kernel.shape[-1:], kernel.dtype)
    wci, wcf, wco = tf.unstack(peepholes)

    @tf.custom_gradient
    def block(x, h0, c0, w, wci, wcf, wco, b):
        steps = tf.cast(tf.shape(x)[0], tf.int64)
        inputs = dict(
            seq_len_max=steps,
            x=x,
            cs_prev=c0,
            h_prev=h0,
            w=w,
            wci=wci,
            wcf=wcf,
            wco=wco,
            b=b,
        )
        with tf.name_scope(BLOCK_SCOPE):
            i, cs, f, o, ci, co, h = tf.raw_ops.BlockLSTMV2(
                **inputs, cell_clip=0.0, use_peephole=True
            )

        def gradient(dh, dc):
            dcs = tf.concat([tf.zeros_like(cs[:-1]), dc[None]], 0)
            dx, dc0, dh0, *rest = tf.raw_ops.BlockLSTMGradV2(
                **inputs,
                i=i,
                cs=cs,
                f=f,
                o=o,
                ci=ci,
                co=co,
                h=h,
                cs_grad=dcs,
                h_grad=dh,
                use_peephole=True,
            )
            return [dx, dh0, dc0, *rest]  # in block's order: h0 before c0

        return (h, cs[-1]), gradient

    hs, c = block(xs, *states, weights, wci, wcf, wco, bias)
    return hs, [hs[-1], c]


def recurrence(
    layer, sequences, initial_state, mask, recurrent_dropout_mask, training=False
):
    """:func:`keras_recurrent.loops.portable.recurrence`, as a
    ``tf.while_loop``."""
    cell = layer.cell
    xs, masks = portable.time_major(layer, sequences, mask)
    states = [tf.cast(s, cell.variable_dtype) for s in initial_state]
    onnx_step = _onnx_step(cell, masks, recurrent_dropout_mask)
    simple_rnn = _onnx_simple_rnn(cell, masks, recurrent_dropout_mask)
    if _onnx_peephole_lstm(layer, masks, recurrent_dropout_mask):
        hs, final = _block_lstm(cell, xs, states)
    elif simple_rnn is not None:
        hs, final = _simple_rnn(simple_rnn, xs, states)
    elif onnx_step is not None:
        hs, final = _onnx_loop(onnx_step, xs, states)
    else:
        hs, final = _loop(layer, xs, masks, states, recurrent_dropout_mask)
    # Without return_sequences Keras reads only the last output: the loops
    # then return the last one alone as the sequence.
    hs = hs if layer.return_sequences else final[0][None]
    return portable.finish(layer, hs, final, masks)


def _loop(layer, xs, masks, states, recurrent_dropout_mask):
    """``(hs, final_states)`` by the cell's own step, the outputs carried as a
    tensor that grows by one step per iteration (``tf.concat``; ``hs`` None
    without ``return_sequences``)."""
    cell = layer.cell
    xs = cell.project_inputs(xs)
    kernel, update, extra = cell.step_parts(cell.step_weights())
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
    return (hs[0] if hs else None), final


def _onnx_loop(step, xs, states):
    """``(hs, final_states)`` by one of :data:`_ONNX_STEPS`, reading and
    writing the time steps through tensor lists, as tf2onnx expects. The
    lists are made from tensors (``TensorListFromTensor``), which TFLite
    lowers with a dynamic batch; tf2onnx converts the whole loop to one
    operator, and keeps no list."""
    steps = tf.shape(xs)[0]
    inputs = tf.TensorArray(xs.dtype, size=steps, element_shape=xs.shape[1:])
    inputs = inputs.unstack(xs)
    outputs = tf.TensorArray(states[0].dtype, size=steps, element_shape=states[0].shape)
    zeros = tf.zeros(tf.concat([[steps], tf.shape(states[0])], 0), states[0].dtype)
    outputs = outputs.unstack(zeros)

    def body(t, states, outputs):
        new = step(inputs.read(t), states)
        return t + 1, new, outputs.write(t, new[0])

    _, final, outputs = tf.while_loop(
        lambda t, *_: t < steps, body, (0, states, outputs)
    )
    return outputs.stack(), final

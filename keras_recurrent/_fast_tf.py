"""TensorFlow only: the time loop compiled with XLA, forward and backward.

On TensorFlow without XLA (what Keras picks on a CPU) every time step pays a
few microseconds of per-op overhead for each of the ten or so ops of a gated
step; for small batches that overhead is most of the run time. Here the same
loop as :func:`keras_recurrent._loop.recurrence` runs as one XLA computation.

XLA cannot hand the tensor lists of a compiled loop to TensorFlow's autodiff,
so the loop has a custom gradient whose backward pass is a second compiled
computation: it recomputes the forward loop under a tape and differentiates
it inside XLA. That costs one more forward pass and keeps every loop in
compiled code.

Only this module imports TensorFlow; ``_base.RecurrentLayer.inner_loop``
chooses it when Keras runs on TensorFlow and falls back to the portable loop
otherwise.
"""

import weakref

import tensorflow as tf

from keras_recurrent._loop import recurrence as portable_recurrence

_COMPILED = weakref.WeakKeyDictionary()  # cell -> {options: (forward, backward)}


def _scan(f, init, xs):
    """``keras.ops.scan`` for carries whose outputs have the carry's structure.

    Keras's own TensorFlow scan leaves ``maximum_iterations`` unset, which XLA
    needs to size the stacked outputs.
    """
    xs_flat = tf.nest.flatten(xs)
    init_flat = tf.nest.flatten(init)
    length = tf.shape(xs_flat[0])[0]
    inputs = [tf.TensorArray(x.dtype, size=length).unstack(x) for x in xs_flat]
    stacked = [tf.TensorArray(c.dtype, size=length) for c in init_flat]

    def body(i, carry, stacked):
        x = tf.nest.pack_sequence_as(xs, [ta.read(i) for ta in inputs])
        carry, ys = f(tf.nest.pack_sequence_as(init, carry), x)
        ys = tf.nest.flatten(ys)
        return (
            i + 1,
            tf.nest.flatten(carry),
            [t.write(i, y) for t, y in zip(stacked, ys)],
        )

    _, carry, stacked = tf.while_loop(
        lambda i, *_: i < length,
        body,
        (0, init_flat, stacked),
        maximum_iterations=length,
    )
    return (
        tf.nest.pack_sequence_as(init, carry),
        tf.nest.pack_sequence_as(init, [t.stack() for t in stacked]),
    )


def _compiled(cell, has_mask, has_rec_mask, go_backwards, zero_output_for_mask):
    """The compiled forward loop and its compiled gradient, cached per cell."""
    key = (has_mask, has_rec_mask, go_backwards, zero_output_for_mask)
    per_cell = _COMPILED.setdefault(cell, {})
    if key in per_cell:
        return per_cell[key]
    # A weak reference, so that the cached functions do not keep the cell alive.
    cell_ref = weakref.ref(cell)

    def run(projected, mask, rec_mask, states, weights):
        step = cell_ref().make_step(weights, rec_mask if has_rec_mask else None)
        return portable_recurrence(
            step,
            projected,
            list(states),
            mask=mask if has_mask else None,
            go_backwards=go_backwards,
            zero_output_for_mask=zero_output_for_mask,
            scan=_scan,
        )

    def backward(projected, mask, rec_mask, states, weights, upstream):
        with tf.GradientTape() as tape:
            tape.watch([projected, states, weights])
            outputs = tf.nest.flatten(run(projected, mask, rec_mask, states, weights))
        return tape.gradient(
            outputs,
            [projected, states, weights],
            output_gradients=upstream,
            unconnected_gradients=tf.UnconnectedGradients.ZERO,
        )

    per_cell[key] = (
        tf.function(run, jit_compile=True),
        tf.function(backward, jit_compile=True),
    )
    return per_cell[key]


def recurrence(
    cell,
    projected,
    initial_state,
    mask=None,
    recurrent_dropout_mask=None,
    go_backwards=False,
    zero_output_for_mask=False,
):
    """:func:`keras_recurrent._loop.recurrence` for ``cell`` on TensorFlow.

    Small steps (``batch * units`` up to :data:`COMPILED_MAX_WORK`) run as one
    XLA computation, where per-op overhead vanishes; larger ones run a lean
    TensorFlow while loop, since XLA's CPU code for the gate arithmetic is
    slower than TensorFlow's kernels once the step itself is large. When the
    batch size is only known at run time, ``tf.cond`` picks.

    Returns ``(last_output, outputs, states)``; differentiable with respect to
    ``projected``, ``initial_state`` and the cell's step weights.
    """
    mask = None if mask is None else tf.cast(mask, "bool")
    # Plain tensors, read once: not a variable read per step, nor a variable
    # inside the custom gradient.
    weights = [tf.convert_to_tensor(w) for w in cell.step_weights()]
    options = dict(go_backwards=go_backwards, zero_output_for_mask=zero_output_for_mask)
    args = (cell, projected, initial_state, weights, mask, recurrent_dropout_mask)

    batch = projected.shape[0]
    if batch is not None:
        if runs_compiled(batch, cell.units):
            return _compiled_loop(*args, **options)
        return _graph_loop(*args, **options)
    return tf.cond(
        runs_compiled(tf.shape(projected)[0], cell.units),
        lambda: _compiled_loop(*args, **options),
        lambda: _graph_loop(*args, **options),
    )


#: Largest ``batch * units`` for which the XLA-compiled loop runs. Measured on
#: a 2-core x86-64 CPU with ``python -m benchmarks.rnn``: the compiled loop is
#: several times faster at batch 1 and 64 units, slower at batch 32 and 128.
COMPILED_MAX_WORK = 1024


def runs_compiled(batch, units):
    """Whether a step of ``batch`` rows and ``units`` units runs compiled."""
    return batch * units <= COMPILED_MAX_WORK


def _graph_loop(cell, projected, states, weights, mask, rec_mask, **options):
    step = cell.make_step(weights, rec_mask)
    return portable_recurrence(
        step, projected, states, mask=mask, scan=_scan, **options
    )


def _compiled_loop(cell, projected, states, weights, mask, rec_mask, **options):
    forward, backward = _compiled(
        cell, mask is not None, rec_mask is not None, **options
    )
    absent = tf.zeros((0,))  # stands in for an absent mask as a function input
    mask = absent if mask is None else mask
    rec_mask = absent if rec_mask is None else rec_mask
    num_states = len(states)

    @tf.custom_gradient
    def loop(projected, *states_and_weights):
        states = list(states_and_weights[:num_states])
        weights = list(states_and_weights[num_states:])
        # Inputs cut from any tape: otherwise TensorFlow would also build its
        # own gradient of the compiled loop, which it cannot do.
        outputs = tf.nest.flatten(
            forward(
                *tf.nest.map_structure(
                    tf.stop_gradient, (projected, mask, rec_mask, states, weights)
                )
            )
        )

        def grad(*upstream):
            upstream = [
                tf.zeros_like(o) if g is None else g for g, o in zip(upstream, outputs)
            ]
            d_projected, d_states, d_weights = backward(
                projected, mask, rec_mask, states, weights, upstream
            )
            return [d_projected, *d_states, *d_weights]

        return outputs, grad

    last_output, outputs, *states = loop(projected, *states, *weights)
    return last_output, outputs, states

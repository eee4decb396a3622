"""TensorFlow only: the time loop with its own backward pass, compiled by XLA.

On TensorFlow without XLA (what Keras picks on a CPU) every time step pays a
few microseconds of per-op overhead for each of the ten or so ops of a gated
step, forward and backward; for small batches that overhead is most of the
run time. Here the loop has a custom gradient, and its steps run in XLA
computations, a forward loop and a backward loop:

- the sequence goes through in pieces of a few time steps (see
  ``_in_pieces``). Each piece's inputs are projected (``x W + b``, with
  several times as many features as the inputs) in one matmul when the
  piece is reached, forwards and again backwards, so that no ``(time,
  batch, gates * units)`` tensor is ever held whole;
- the forward loop keeps only every step's states, which the outputs need
  anyway;
- the backward loop runs from the last step to the first. At each step it
  recomputes the step's recurrent matmul ``r_t = h_in_t @ kernel`` (which
  costs about what storing it from the forward loop did, and saves a
  ``(time, batch, gates * units)`` tensor), differentiates the cell's
  ``update`` (the step without its matmul, see ``keras_recurrent._cell``),
  which is elementwise apart from GRU's candidate matmul when
  ``reset_after=False``, and sends ``dr_t @ kernel^T`` back to ``h_{t-1}``;
- the recurrent kernel's gradient, ``sum_t h_in_t^T dr_t``, and the input
  projection's are then one matmul per piece instead of one small matmul
  per step. For a cell whose ``update`` reads ``projected_t + r`` only
  (``update_sums_inputs``: LSTM and SimpleRNN), ``dr_t`` is the input
  gradient itself and is not stored twice.

The loop compiles the cell's own step pieces, so it serves any cell whose
``call`` and ``project_inputs`` are the shared ones, variants included, in
float32 and float64 unless ``unroll=True``; masks and recurrent dropout
too. TensorFlow could not differentiate a compiled loop by itself anyway:
the loop's tensor lists cannot cross the XLA boundary.

XLA compiles once per input shape: the pieces of all sequences of a batch
size have one length when the sequence length is unknown when traced (see
``_loop``).
"""

import tensorflow as tf

from keras_recurrent._cell import (
    claimed_kernel,
    declared,
    recurrent_input,
)
from keras_recurrent.loops import portable, shared, tf2onnx_handlers

NAME = "xla"

_LOOPS = shared.Loops()  # (forward, backward) per cell and options


def serves(layer, mask, recurrent_dropout_mask):
    """Whether this loop runs ``layer``: see
    :func:`keras_recurrent.loops.portable.step_pieces_serve`."""
    return portable.step_pieces_serve(layer)


def recurrence(
    layer, sequences, initial_state, mask, recurrent_dropout_mask, training=False
):
    """:func:`keras_recurrent.loops.portable.recurrence`, compiled by XLA.

    Differentiable with respect to ``sequences``, ``initial_state`` and the
    cell's weights, whether ``training`` or not (which changes only where
    backward reads the saved states, see ``_in_pieces``). Without
    ``return_sequences`` Keras reads only the last output, which is the
    final ``h``: the outputs are then returned without a gradient, so that
    the backward pass is not handed a zero gradient for every step's output.
    """
    cell = layer.cell
    xs, masks = portable.time_major(layer, sequences, mask)
    # Plain tensors, read once: not a variable read per step, nor a variable
    # inside the custom gradient.
    weights = [
        [tf.convert_to_tensor(w) for w in ws]
        for ws in (cell.input_weights(), cell.step_weights())
    ]
    hs, states = _loop(
        cell,
        xs,
        masks,
        recurrent_dropout_mask,
        list(initial_state),
        weights,
        layer.return_sequences,
        bool(training),
    )
    return portable.finish(layer, hs, states, masks)


def fence(x):
    """``x``, unchanged, which XLA computes on its own instead of fusing it
    into the ops that read it.

    XLA:CPU fuses a step's elementwise ops into as few loops as it can, and
    LLVM leaves a loop with two or more transcendental functions (exp, tanh)
    unvectorized: measured here, each element then costs about 8 ns more,
    doubling a GRU step at batch 32. The loops here give the cell a gate
    activation followed by a fence (``step_parts``'s
    ``recurrent_activation``), so that a gate that the next activation reads
    (GRU's reset gate, the peephole LSTM's gates) is computed in a fused
    loop of its own. A reduction ends a fusion, and ``x + 0`` is ``x``
    exactly, in value and in gradient.

    TensorFlow only: JAX's XLA fuses these steps differently, and there the
    fence made a peephole LSTM step at batch 128 to 256 two to three times
    slower; PyTorch does not fuse them at all.
    """
    return tf.reduce_sum(tf.stack([x, tf.zeros_like(x)]), axis=0)


#: The kernels whose cells run unfenced (see _fenced_step_parts).
_UNFENCED = ("lstm", "lstm_projected")


def _fenced_step_parts(cell, weights):
    """``cell.step_parts(weights)`` with its gate activation fenced, except
    for a cell without gates and for the plain LSTM (a cell that claims the
    ``"lstm"`` or ``"lstm_projected"`` kernel), whose one activation over all
    four gates has three readers, which XLA keeps apart already: there a
    fence costs one more pass over the gates (about 14 % of a forward pass
    at batch 32)."""
    gate = getattr(cell, "recurrent_activation", None)
    claim = claimed_kernel(cell)
    if gate is None or (claim is not None and claim.name in _UNFENCED):
        return cell.step_parts(weights)
    return cell.step_parts(weights, recurrent_activation=lambda z: fence(gate(z)))


#: Time steps per call of the compiled loops for a sequence whose length is
#: known only when it arrives (see ``_in_pieces``).
CHUNK = 64

#: At most this many elements in the projected inputs of one piece (see
#: ``_in_pieces``): 1 MiB in float32.
PIECE_SIZE = 2**18
#: Pieces the loops over pieces run at once, forward and backward: a piece's
#: input gradient beside the next one's recurrent backward, no more held.
PIECES_AT_ONCE = 2


def _loop(cell, xs, masks, rec_mask, states, weights, need_hs, training):
    """``(hs, final_states)`` over time-major raw inputs ``xs``, with a
    custom gradient; ``weights`` is ``[input_weights, step_weights]``.
    Without ``need_hs``, ``hs`` has no gradient; ``training`` is
    ``_in_pieces``'s.

    The sequence runs in pieces (see ``_in_pieces``), each projected when it
    is reached, then run by a call of the compiled loops. XLA compiles a
    function once per input shape, so the pieces have one length for every
    sequence of a batch size: ``CHUNK`` steps when the length is unknown
    when the loop is traced (Keras's train and predict functions, traced
    with the time axis unknown for a ``tf.data`` dataset of padded batches,
    and after a second length otherwise), the whole sequence when it is
    known, and fewer steps wherever a piece's projection would have more
    than ``PIECE_SIZE`` elements.
    """
    forward, backward = _functions(cell, masks is not None, rec_mask is not None)
    masks = None if masks is None else tf.cast(masks, "bool")
    rec_mask = _absent() if rec_mask is None else rec_mask
    counts = [len(states), len(weights[0])]
    kept = {}  # the outputs, when they are not an output of ``run``

    def split(tensors):
        """``[states, input_weights, step_weights]`` from one flat list."""
        return [tensors[: counts[0]], tensors[counts[0] : sum(counts)]] + [
            tensors[sum(counts) :]
        ]

    @tf.custom_gradient
    def run(xs, *tensors):
        # Inputs cut from any tape: otherwise TensorFlow would also build its
        # own gradient of the loop.
        xs, tensors = tf.nest.map_structure(tf.stop_gradient, (xs, list(tensors)))
        states, *weights = split(tensors)
        final, hs, backward_over = _in_pieces(
            cell,
            (forward, backward),
            xs,
            masks,
            rec_mask,
            states,
            weights,
            need_hs,
            training,
        )

        def grad(*d_outputs):
            d_hs = d_outputs[0] if need_hs else None
            d_final = [
                tf.zeros_like(s) if d is None else d
                for d, s in zip(d_outputs[need_hs:], final)
            ]
            d_xs, d_states, d_weights = backward_over(d_hs, d_final)
            return [d_xs, *d_states, *d_weights]

        kept["hs"] = hs
        return [*([hs] if need_hs else []), *final], grad

    outputs = run(xs, *states, *weights[0], *weights[1])
    if need_hs:
        return outputs[0], outputs[1:]
    return tf.stop_gradient(kept["hs"]), outputs


def _absent():
    """What stands in for an absent mask or output gradient as an input of
    the compiled loops."""
    return tf.zeros((0,))


def _piece_length(xs, width):
    """Time steps per piece of ``xs``, for a projection ``width`` wide: as
    many as fit in ``PIECE_SIZE``, and for a length known when traced, the
    same number in every piece, give or take one, so that little of the last
    piece is padding."""
    steps, batch = tf.shape(xs)[0], tf.shape(xs)[1]
    fitting = tf.maximum(PIECE_SIZE // tf.maximum(batch * width, 1), 1)
    if xs.shape[0] is None:
        return tf.minimum(fitting, CHUNK)
    count = (steps + fitting - 1) // fitting
    return (steps + count - 1) // count


def _in_pieces(cell, loops, xs, masks, rec_mask, states, weights, need_hs, training):
    """``(final_states, hs, backward_over)``: the sequence in pieces of
    :func:`_piece_length` steps, the last one padded with zeros, which
    follow one another in a ``tf.while_loop`` outside XLA.
    ``backward_over(d_hs, d_final)`` gives the gradients with respect to
    ``xs``, the states and the weights (the input weights', then the step
    weights'), ``d_hs`` None when the outputs have no gradient.

    Each piece's inputs are projected when the piece is reached, forward and
    again backward, in TensorFlow's own matmul (faster than XLA's on a
    CPU), so that no ``(time, batch, gates *
    units)`` tensor is held whole; each piece is then a call of the same
    compiled loop, which runs as many steps as the piece has, so the
    padding is never computed and the states, outputs and gradients are
    those of the whole sequence.

    Both loops run ``PIECES_AT_ONCE`` pieces at a time.

    The forward loop writes each piece's states into ``tf.TensorArray``s,
    and stacking one copies all its rows: at that moment every state saved
    for backward is held twice (for SimpleRNN at S2 of the benchmark, 13 of
    a training step's 39 MiB). While ``training``, backward reads the
    pieces out of the lists themselves, and only the outputs, where
    ``need_hs``, are stacked. A saved custom gradient
    cannot capture a list (a SavedModel stores the gradients of the
    functions it serves, which are traced with ``training=False``), so
    otherwise backward reads stacked copies.
    """
    forward, backward = loops
    in_weights, step_weights = weights
    steps = tf.shape(xs)[0]
    length = _piece_length(xs, in_weights[0].shape[-1])
    count = (steps + length - 1) // length

    def piece(x, p):
        """Piece ``p`` of ``x``: ``length`` steps, the last piece padded with
        zeros (a slice along time and a pad of nothing copy nothing)."""
        part = x[p * length : (p + 1) * length]
        padding = [[0, length - tf.shape(part)[0]]] + [[0, 0]] * (x.shape.rank - 1)
        return tf.pad(part, padding)

    def whole(x, shape):
        """``x``'s pieces, ``(count, length, ...)``, as one sequence of the
        static ``shape``."""
        x = tf.reshape(x, tf.concat([[count * length], tf.shape(x)[2:]], 0))
        return tf.ensure_shape(x[:steps], shape)

    def steps_of(p):
        return tf.minimum(length, steps - p * length)

    def piece_masks(p):
        return _absent() if masks is None else piece(masks, p)

    def lists(tensors):
        # Kept after a read: backward may run more than once (a Jacobian,
        # a persistent tape).
        return [
            tf.TensorArray(
                t.dtype,
                size=count,
                element_shape=(None, *t.shape),
                clear_after_read=False,
            )
            for t in tensors
        ]

    def body(p, states, stacks):
        projected = cell.project(piece(xs, p), in_weights)
        new, stacked = forward(
            projected, piece_masks(p), rec_mask, states, step_weights, steps_of(p)
        )
        # The compiled function's outputs have no static batch size.
        new = [tf.ensure_shape(n, s.shape) for n, s in zip(new, states)]
        # ``length`` rows, as the compiled function gives them: padding that
        # TensorFlow skips (a pad of nothing forwards its input), written
        # out for tf2onnx, whose conversion of the function keeps only the
        # ``steps_of(p)`` rows written, and ONNX's Loop needs each piece's
        # rows to be as many.
        stacked = [
            tf.pad(s, [[0, length - tf.shape(s)[0]]] + [[0, 0]] * (s.shape.rank - 1))
            for s in stacked
        ]
        stacks = [ta.write(p, s) for ta, s in zip(stacks, stacked)]
        return p + 1, new, stacks

    _, final, stacks = tf.while_loop(
        lambda p, *_: p < count,
        body,
        (0, states, lists(states)),
        parallel_iterations=PIECES_AT_ONCE,
    )
    hs_stacked = stacks[0].stack()
    # What backward reads every step's states out of: stacked copies, or
    # while training the lists themselves, except for the outputs where
    # they are needed, which are a stacked copy anyway.
    if not training:
        stacks = [hs_stacked, *(ta.stack() for ta in stacks[1:])]
    elif need_hs:
        stacks = [hs_stacked, *stacks[1:]]

    def saved(p):
        """Every step's states in piece ``p``."""
        return [s.read(p) if isinstance(s, tf.TensorArray) else s[p] for s in stacks]

    def starts(p):
        """The states piece ``p`` starts from: the initial ones, else the
        last step's of piece ``p - 1``, which is whole (only the last piece
        is padded)."""
        before = [s[-1] for s in saved(tf.maximum(p - 1, 0))]
        return [tf.where(p > 0, b, s) for b, s in zip(before, states)]

    def backward_over(d_hs, d_final):
        def body(p, d_carry, d_weights, d_xs):
            x = piece(xs, p)
            with tf.GradientTape() as tape:
                tape.watch([x, in_weights])
                projected = cell.project(x, in_weights)
            d_projected, d_carry, d_step = backward(
                projected,
                piece_masks(p),
                rec_mask,
                starts(p),
                step_weights,
                saved(p),
                _absent() if d_hs is None else piece(d_hs, p),
                d_carry,
                steps_of(p),
            )
            d_carry = [tf.ensure_shape(d, s.shape) for d, s in zip(d_carry, states)]
            d_x, d_input = tape.gradient(
                projected,
                [x, in_weights],
                output_gradients=d_projected,
                unconnected_gradients=tf.UnconnectedGradients.ZERO,
            )
            # Shapes that the projection's gradient leaves unknown.
            d_piece = [*d_input, *d_step]
            d_weights = [
                a + tf.ensure_shape(b, a.shape) for a, b in zip(d_weights, d_piece)
            ]
            return p - 1, d_carry, d_weights, d_xs.write(p, d_x)

        _, d_states, d_weights, d_xs = tf.while_loop(
            lambda p, *_: p >= 0,
            body,
            (
                count - 1,
                d_final,
                [tf.zeros_like(w) for w in [*in_weights, *step_weights]],
                tf.TensorArray(
                    xs.dtype, size=count, element_shape=(None, *xs.shape[1:])
                ),
            ),
            parallel_iterations=PIECES_AT_ONCE,
        )
        return whole(d_xs.stack(), xs.shape), d_states, d_weights

    hs = whole(hs_stacked, [xs.shape[0], *states[0].shape])
    return final, hs, backward_over


def _functions(cell, has_mask, has_rec_mask):
    """The compiled forward and backward loops for ``cell``: shared between
    cells of the same class and config where the step allows it, else made
    per cell (see :mod:`keras_recurrent.loops.shared`)."""
    return _LOOPS.get(
        cell,
        (has_mask, has_rec_mask),
        lambda cell_ref: _compile(cell_ref, has_mask, has_rec_mask),
    )


def _compile(cell_ref, has_mask, has_rec_mask):
    """The forward and backward loops of the cell ``cell_ref()`` returns."""
    # The loops are calls that TensorFlow never inlines: tf2onnx converts
    # them by the handler that inlines them.
    tf2onnx_handlers.register()

    def forward(xs, masks, rec_mask, states, weights, steps):
        """Final states after the first ``steps`` steps of ``xs``, and every
        step's states, stacked in ``xs.shape[0]`` rows (the first ``steps``
        of them written)."""
        cell = cell_ref()
        kernel, update, extra = _fenced_step_parts(cell, weights)
        rec_mask = rec_mask if has_rec_mask else None
        size = tf.shape(xs)[0]
        states_t = [tf.TensorArray(s.dtype, size=size) for s in states]

        def body(t, states, states_t):
            h_in = recurrent_input(states[0], rec_mask, cell.compute_dtype)
            new = update(xs[t], tf.matmul(h_in, kernel), h_in, states, extra)
            new = portable.keep_masked(masks[t] if has_mask else None, new, states)
            states_t = [ta.write(t, s) for ta, s in zip(states_t, new)]
            return t + 1, new, states_t

        _, final, states_t = tf.while_loop(
            lambda t, *_: t < steps,
            body,
            (0, states, states_t),
            maximum_iterations=size,  # XLA sizes the tensor lists with it
        )
        return final, [ta.stack() for ta in states_t]

    def backward(xs, masks, rec_mask, states, weights, stacked, d_hs, d_final, steps):
        """Gradients with respect to ``xs``, the initial states and weights,
        over the first ``steps`` steps of ``xs``."""
        cell = cell_ref()
        with tf.GradientTape() as tape:
            tape.watch(weights)
            kernel, update, extra = _fenced_step_parts(cell, weights)
        rec_mask = rec_mask if has_rec_mask else None
        has_d_hs = d_hs.shape.rank > 1  # else (0,): the outputs have none
        size = tf.shape(xs)[0]
        # The h each step started from: the initial one, then the outputs of
        # every step but the last (one copy, which the kernel's gradient
        # reads too). The other states are read where they are stored.
        h_ins = recurrent_input(
            tf.concat([states[0][None], stacked[0][:-1]], 0),
            rec_mask,
            cell.compute_dtype,
        )
        # For update_sums_inputs cells dr_t == dx_t: one list holds both.
        sums = declared(cell, "update_sums_inputs", False)
        d_inputs_t = [
            tf.TensorArray(xs.dtype, size=size) for _ in range(1 if sums else 2)
        ]

        # The step index counts down as a loop variable: computed from
        # ``steps`` (t = steps - 1 - k), XLA would compile the loop once for
        # every value of ``steps``.
        def body(t, d_states, d_extra, d_inputs_t):
            d_new = list(d_states)
            if has_d_hs:
                d_new[0] = d_new[0] + d_hs[t]
            first = tf.equal(t, 0)
            before = tf.maximum(t - 1, 0)
            old = [
                tf.where(first, s, all_s[before]) for s, all_s in zip(states, stacked)
            ]
            # r_t again, rather than kept from the forward loop: a step's
            # matmul costs about what storing its result does, and saves a
            # (time, batch, gates * units) tensor.
            x, r = xs[t], tf.matmul(h_ins[t], kernel)
            with tf.GradientTape() as step_tape:
                step_tape.watch([x, r, old, extra])
                h_in = recurrent_input(old[0], rec_mask, cell.compute_dtype)
                new = update(x, r, h_in, old, extra)
                new = portable.keep_masked(masks[t] if has_mask else None, new, old)
            d_inputs, d_old, d_step_extra = step_tape.gradient(
                new,
                [[x] if sums else [x, r], old, extra],
                output_gradients=d_new,
                unconnected_gradients=tf.UnconnectedGradients.ZERO,
            )
            d_h_in = tf.matmul(d_inputs[-1], kernel, transpose_b=True)
            if rec_mask is not None:
                d_h_in = d_h_in * rec_mask
            d_old[0] = d_old[0] + tf.cast(d_h_in, d_old[0].dtype)
            d_extra = [a + b for a, b in zip(d_extra, d_step_extra)]
            d_inputs_t = [ta.write(t, d) for ta, d in zip(d_inputs_t, d_inputs)]
            return t - 1, d_old, d_extra, d_inputs_t

        _, d_states, d_extra, d_inputs_t = tf.while_loop(
            lambda t, *_: t >= 0,
            body,
            (steps - 1, d_final, [tf.zeros_like(e) for e in extra], d_inputs_t),
            maximum_iterations=size,
        )
        d_inputs = [ta.stack() for ta in d_inputs_t]  # one list when sums
        # Rows after ``steps``, which no step wrote, are zero.
        written = tf.reshape(tf.range(size) < steps, (-1, 1, 1))
        d_inputs = [tf.where(written, d, tf.zeros_like(d)) for d in d_inputs]
        d_xs, d_rs = d_inputs[0], d_inputs[-1]
        # sum_t h_in_t^T dr_t, one matmul over (steps * batch) rows.
        d_kernel = tf.tensordot(h_ins, d_rs, axes=[[0, 1], [0, 1]])
        d_weights = tape.gradient(
            [kernel, *extra],
            weights,
            output_gradients=[d_kernel, *d_extra],
            unconnected_gradients=tf.UnconnectedGradients.ZERO,
        )
        return d_xs, d_states, d_weights

    return (
        tf.function(forward, jit_compile=True, autograph=False),
        tf.function(backward, jit_compile=True, autograph=False),
    )

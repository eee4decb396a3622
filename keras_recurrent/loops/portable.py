"""The portable time loop: ``keras.ops.scan`` (or a Python loop, with
``unroll=True`` and on PyTorch) over the cell's step, on every backend.

On TensorFlow and PyTorch the whole input sequence goes through the input
kernel in one matmul before the loop, so each iteration only does the
recurrent matmul and the gate arithmetic of the cell's step; the inputs are
made time-major first, since the projection has several times as many
features as the inputs (4 * units for an LSTM). On JAX each step projects
its own time step (see :func:`recurrence`).

The pieces every loop shares, whether it runs here or in a backend's fast
path, are functions here: :func:`step_pieces_serve` (which calls the fast
paths with their own backward pass serve), :func:`time_major` (masks and
``go_backwards``), :func:`keep_masked` (the states at a masked step) and
:func:`finish` (the outputs at masked steps).
"""

import keras
from keras import ops

from keras_recurrent._cell import StepCell

NAME = "portable"


def recurrence(
    layer,
    sequences,
    initial_state,
    mask=None,
    recurrent_dropout_mask=None,
    training=False,
):
    """Runs ``layer.cell``'s step over batch-major ``sequences``.

    Args:
        layer: the sequence layer; its cell gives the step, the layer the loop
            options (``go_backwards``, ``unroll``, ``zero_output_for_mask``).
        sequences: ``(batch, time, features)`` tensor, after input dropout.
        initial_state: list of ``(batch, units_i)`` tensors.
        mask: optional ``(batch, time)`` boolean tensor. At a masked step the
            states are carried over unchanged and the output repeats the last
            unmasked output (zeros before the first one), or is zero when
            ``zero_output_for_mask``: the semantics of Keras's own RNN loop.
        recurrent_dropout_mask: optional ``(batch, units)`` mask on ``h_{t-1}``
            where it enters the recurrent matmul.
        training: unused here (see the protocol in ``keras_recurrent.loops``).

    Returns:
        ``(last_output, outputs, states)``, with ``outputs`` of shape
        ``(batch, time, units)``; outputs are returned in the order they were
        computed, as in Keras. The states are carried in the cell's variable
        dtype (see ``RecurrentLayer``).
    """
    cell = layer.cell
    xs, masks = time_major(layer, sequences, mask)
    step = cell.make_step(cell.step_weights(), recurrent_dropout_mask)
    if keras.config.backend() == "jax":
        # Inside jax.lax.scan the projection runs at each step: projected
        # all at once, its gradient would be a (time, batch, gates * units)
        # tensor built step by step in JAX's backward pass, which made a
        # training step almost twice as slow.
        def step(x_t, states, step=step):
            return step(cell.project_inputs(x_t), states)
    else:
        xs = cell.project_inputs(xs)
    states = [ops.cast(s, cell.variable_dtype) for s in initial_state]

    def masked_step(states, x_t, mask_t):
        _, new_states = step(x_t, list(states))
        return tuple(keep_masked(mask_t, new_states, states))

    if layer.unroll or keras.config.backend() == "torch":
        # A Python loop over the steps, cut apart once: on PyTorch
        # keras.ops.scan is a Python loop too, but it reads xs[t] at each
        # step, and the gradient of each such read is a zero tensor the
        # size of xs, which made a backward pass quadratic in time (a GRU
        # training step with a mask 5x slower than the built-in at S2).
        states = tuple(states)
        hs = []
        steps = ops.unstack(xs)
        step_masks = [None] * len(steps) if masks is None else ops.unstack(masks)
        for x_t, mask_t in zip(steps, step_masks):
            states = masked_step(states, x_t, mask_t)
            hs.append(states[0])
        hs = ops.stack(hs)
    else:
        # Keras's TensorFlow scan stacks outputs shaped like the carry; the
        # other backends stack the outputs alone.
        stack_all = keras.config.backend() == "tensorflow"

        def body(states, inputs):
            x_t, mask_t = inputs if masks is not None else (inputs, None)
            states = masked_step(states, x_t, mask_t)
            return states, (states if stack_all else states[0])

        scan_inputs = xs if masks is None else (xs, masks)
        states, stacked = ops.scan(body, tuple(states), scan_inputs)
        hs = stacked[0] if stack_all else stacked
    return finish(layer, hs, states, masks)


def step_pieces_serve(layer):
    """Whether a loop that runs the cell's step pieces with a backward pass
    of its own (TensorFlow's and JAX's fast paths) computes ``layer``: in
    float32 and float64, unless ``unroll=True``, with or without masks and
    recurrent dropout, for a cell whose inputs are projected by the shared
    ``project_inputs`` (the loops call ``project`` with the weights as
    arguments)."""
    cell = layer.cell
    return (
        not layer.unroll
        and cell.compute_dtype in ("float32", "float64")
        and type(cell).project_inputs is StepCell.project_inputs
    )


def time_major(layer, sequences, mask):
    """``(xs, masks)``: ``sequences`` as ``(time, batch, features)`` and the
    mask as ``(time, batch, 1)`` booleans (or None), both in the order the
    loop reads them (reversed when ``layer.go_backwards``)."""
    xs = ops.transpose(sequences, (1, 0, 2))
    masks = None
    if mask is not None:
        masks = ops.expand_dims(ops.transpose(ops.cast(mask, "bool"), (1, 0)), -1)
    if layer.go_backwards:
        xs = ops.flip(xs, axis=0)
        if masks is not None:
            masks = ops.flip(masks, axis=0)
    return xs, masks


def keep_masked(mask_t, new_states, states):
    """The states after a step: ``new_states`` where ``mask_t`` is True,
    ``states`` (carried over unchanged) where it is False or ``None``."""
    if mask_t is None:
        return list(new_states)
    return [ops.where(mask_t, new, old) for new, old in zip(new_states, states)]


def finish(layer, hs, states, masks):
    """``(last_output, outputs, states)`` from ``hs``, the time-major stack
    of every step's ``states[0]`` (with :func:`keep_masked` semantics), the
    final states and the time-major masks of :func:`time_major`.

    The last output is computed from the final ``states[0]``, which is the
    last row of ``hs``: a layer that returns only the last output then
    differentiates through the final states alone (the TensorFlow loop does
    not give ``hs`` a gradient then)."""
    outputs, last = hs, states[0]
    if masks is not None:
        if layer.zero_output_for_mask:
            keep = masks
        else:
            # Before the first unmasked step Keras outputs zeros; after it the
            # output is the carried state, since output == states[0].
            keep = ops.cumsum(ops.cast(masks, "int32"), axis=0) > 0
        outputs = ops.where(keep, hs, ops.zeros_like(hs))
        # keep[-1], as a reduction: JAX indexes by a gather, which TFLite
        # cannot convert with a dynamic batch.
        # (Counted, not from the shape: exporters may not know the time axis.)
        ones = ops.ones_like(keep, "int32")
        at_last = ops.cumsum(ones, axis=0) == ops.sum(ones, axis=0, keepdims=True)
        keep_last = ops.any(ops.logical_and(keep, at_last), axis=0)
        last = ops.where(keep_last, last, ops.zeros_like(last))
    return last, ops.transpose(outputs, (1, 0, 2)), list(states)

"""The time loop: the one place where keras_recurrent iterates over time.

On TensorFlow and PyTorch the sequence layers project the whole input
sequence through the input kernel in one matmul before calling
:func:`recurrence`, so each loop iteration only does the recurrent matmul and
the gate arithmetic of the cell's ``step``; they make the inputs time-major
first, since the projection has several times as many features as the inputs
(4 * units for an LSTM). On JAX the step projects its own time step (see
``RecurrentLayer.inner_loop``).
"""

import keras
from keras import ops


def recurrence(
    step,
    xs,
    initial_state,
    mask=None,
    go_backwards=False,
    unroll=False,
    zero_output_for_mask=False,
    state_dtype=None,
    loop=None,
):
    """Runs ``step`` over the time steps of ``xs``.

    Args:
        step: ``step(x_t, states) -> (output, new_states)``, where ``x_t`` is
            one time step of ``xs`` and ``output`` is ``new_states[0]``
            (true of SimpleRNN, LSTM and GRU).
        xs: ``(time, batch, features)`` tensor, what ``step`` reads at each
            time step (the input projection, or on JAX the inputs).
        initial_state: list of ``(batch, units_i)`` tensors.
        mask: optional ``(batch, time)`` boolean tensor. At a masked step the
            states are carried over unchanged and the output repeats the last
            unmasked output (zeros before the first one), or is zero when
            ``zero_output_for_mask``: the semantics of Keras's own RNN loop.
        go_backwards: iterate from the last time step to the first; outputs
            are then returned in the order they were computed, as in Keras.
        unroll: iterate in Python (the time axis must be static).
        state_dtype: the dtype the states are carried in (default: that of
            ``initial_state``). ``step`` must return its states in the dtype
            it receives them in.
        loop: replaces the loop over time steps (``_fast_tf`` passes one):
            ``loop(xs, masks, initial_state) -> (hs, states)`` for ``xs``
            already reversed when ``go_backwards`` and ``masks`` of shape
            ``(time, batch, 1)`` or None, returning the stacked ``states[0]``
            of every step and the final states, with :func:`keep_masked`
            semantics.

    Returns:
        ``(last_output, outputs, states)``, with ``outputs`` of shape
        ``(batch, time, units)``.
    """
    if state_dtype is not None:
        initial_state = [ops.cast(s, state_dtype) for s in initial_state]
    masks = None
    if mask is not None:
        masks = ops.expand_dims(ops.transpose(ops.cast(mask, "bool"), (1, 0)), -1)
    if go_backwards:
        xs = ops.flip(xs, axis=0)
        if masks is not None:
            masks = ops.flip(masks, axis=0)

    def masked_step(states, x_t, mask_t):
        _, new_states = step(x_t, list(states))
        return tuple(keep_masked(mask_t, new_states, states))

    if loop is not None:
        hs, states = loop(xs, masks, initial_state)
    elif unroll:
        states = tuple(initial_state)
        hs = []
        for t in range(xs.shape[0]):
            states = masked_step(states, xs[t], None if masks is None else masks[t])
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
        states, stacked = ops.scan(body, tuple(initial_state), scan_inputs)
        hs = stacked[0] if stack_all else stacked

    outputs = hs
    if masks is not None:
        if zero_output_for_mask:
            keep = masks
        else:
            # Before the first unmasked step Keras outputs zeros; after it the
            # output is the carried state, since output == states[0].
            keep = ops.cumsum(ops.cast(masks, "int32"), axis=0) > 0
        outputs = ops.where(keep, hs, ops.zeros_like(hs))
    return outputs[-1], ops.transpose(outputs, (1, 0, 2)), list(states)


def keep_masked(mask_t, new_states, states):
    """The states after a step: ``new_states`` where ``mask_t`` is True,
    ``states`` (carried over unchanged) where it is False or ``None``."""
    if mask_t is None:
        return list(new_states)
    return [ops.where(mask_t, new, old) for new, old in zip(new_states, states)]

"""What the three cells and the three sequence layers share.

A cell does one step; the sequence layer drives the time loop. Each cell
exposes these pieces, which its own ``call`` and the sequence layer's loop
both use, so the two cannot drift apart:

- ``project_inputs(inputs)``: ``inputs @ kernel (+ input bias)``, for one step
  ``(batch, features)`` or a whole sequence ``(batch, time, features)``;
- ``step_weights()``: the weights the step reads (recurrent kernel, and
  recurrent bias or peepholes), as tensors;
- ``step_parts(weights)``: ``(kernel, update, extra)``, the step cut in two:
  the recurrent matmul ``r = h_in @ kernel``, where ``h_in`` is ``h_{t-1}``
  in the compute dtype times the recurrent dropout mask, and the rest,
  ``update(projected_t, r, h_in, states, extra) -> new_states``, which reads
  the other tensors it needs (biases, peepholes) from the list ``extra``.

``StepCell.make_step`` joins the two into one step. Taking the weights as
arguments lets a compiled loop receive them as inputs; the cut lets
``_fast_tf`` differentiate the step without the matmul and compute the
recurrent kernel's gradient for all time steps in one matmul.
"""

import keras
import numpy as np
from keras import ops

from keras_recurrent import _checks, _ops
from keras_recurrent._loop import recurrence


def _shape_of(value):
    return tuple(value.shape) if hasattr(value, "shape") else np.shape(value)


def _dims_differ(a, b):
    return a is not None and b is not None and a != b


class StepCell:
    """Mixin that gives a cell its ``call``: one step of its layer's loop."""

    #: True when ``update`` reads ``projected_t`` and ``r`` only through their
    #: sum, so that both have the same gradient (``_fast_tf`` keeps one).
    update_sums_inputs = False

    def call(self, inputs, states, training=False):
        shape = _shape_of(inputs)
        if len(shape) != 2 or _dims_differ(shape[-1], self.kernel.shape[0]):
            raise ValueError(
                f"Cell {self.name!r} expects inputs of rank 2, shape (batch, "
                f"{self.kernel.shape[0]}). Received: inputs.shape={shape}"
            )
        nested = isinstance(states, (list, tuple))
        states = list(states) if nested else [states]
        if training and self.dropout > 0:
            inputs = inputs * self.get_dropout_mask(inputs)
        rec_mask = None
        if training and self.recurrent_dropout > 0:
            rec_mask = self.get_recurrent_dropout_mask(states[0])
        step = self.make_step(self.step_weights(), rec_mask)
        output, new_states = step(self.project_inputs(inputs), states)
        return output, (new_states if nested else new_states[0])

    def make_step(self, weights, recurrent_dropout_mask=None):
        """``step(projected_t, states) -> (output, new_states)``: one time
        step with ``weights`` (see ``step_parts``); the output is
        ``new_states[0]``."""
        kernel, update, extra = self.step_parts(weights)
        compute_dtype = self.compute_dtype

        def step(projected_t, states):
            h_in = recurrent_input(states[0], recurrent_dropout_mask, compute_dtype)
            # The backend's own matmul (both are backend tensors here): it
            # keeps float64, and on PyTorch it costs a tenth of
            # keras.ops.matmul's Python overhead, paid at every step.
            new_states = update(projected_t, h_in @ kernel, h_in, states, extra)
            return new_states[0], new_states

        return step


def recurrent_input(h_tm1, recurrent_dropout_mask, compute_dtype):
    """``h_{t-1}`` as the recurrent matmul reads it."""
    h_in = _ops.cast(h_tm1, compute_dtype)
    if recurrent_dropout_mask is not None:
        h_in = h_in * recurrent_dropout_mask
    return h_in


def cell_property(name):
    """A read-only layer attribute forwarded to the layer's cell."""
    return property(lambda self: getattr(self.cell, name), doc=f"The cell's `{name}`.")


class RecurrentLayer(keras.layers.RNN):
    """Base of the sequence layers: checks, the time loop and the config.

    Subclasses build their cell and pass it here with the ``keras.layers.RNN``
    arguments. Input projection and time loop run in :meth:`inner_loop`.

    Under a mixed precision policy (``"mixed_float16"``, ``"mixed_bfloat16"``)
    the matmuls and gates run in the compute dtype, but the time loop carries
    the states in the variable dtype, float32: the LSTM cell state and the
    GRU state are running sums, ``c_t = f_t * c_{t-1} + ...``, and in float16
    (11 significant bits) or bfloat16 (8) every step would round away the
    part of the update below half a unit in the last place of the state, so
    over long sequences the state stalls or drifts. As everywhere in Keras,
    outputs and returned states are cast to the compute dtype.
    """

    #: Why ``use_cudnn=True`` cannot be honoured; subclasses may say more.
    _no_cudnn_reason = "keras_recurrent layers have no cuDNN implementation."

    def __init__(self, cell, use_cudnn="auto", **kwargs):
        super().__init__(cell, **kwargs)
        self.use_cudnn = _checks.check_use_cudnn(use_cudnn, self._no_cudnn_reason)

    units = cell_property("units")
    activation = cell_property("activation")
    use_bias = cell_property("use_bias")
    kernel_initializer = cell_property("kernel_initializer")
    recurrent_initializer = cell_property("recurrent_initializer")
    bias_initializer = cell_property("bias_initializer")
    kernel_regularizer = cell_property("kernel_regularizer")
    recurrent_regularizer = cell_property("recurrent_regularizer")
    bias_regularizer = cell_property("bias_regularizer")
    kernel_constraint = cell_property("kernel_constraint")
    recurrent_constraint = cell_property("recurrent_constraint")
    bias_constraint = cell_property("bias_constraint")
    dropout = cell_property("dropout")
    recurrent_dropout = cell_property("recurrent_dropout")

    # -- checks -----------------------------------------------------------

    def _check_sequences(self, shape, calling=True):
        """Checks the shape of the sequences; ``calling=False`` when building."""
        shape = tuple(shape)
        if len(shape) != 3:
            raise ValueError(
                f"Layer {self.name!r} expects inputs of rank 3 "
                "(batch, time, features). "
                f"Received: inputs.shape={shape}"
            )
        if shape[-1] is None:
            raise ValueError(
                f"Layer {self.name!r} needs a known feature size (last axis). "
                f"Received: inputs.shape={shape}"
            )
        kernel = getattr(self.cell, "kernel", None)
        if kernel is not None and shape[-1] != kernel.shape[0]:
            raise ValueError(
                f"Layer {self.name!r} was built for {kernel.shape[0]} input "
                f"features. Received: inputs.shape={shape}"
            )
        if calling and shape[1] == 0:
            raise ValueError(
                f"Layer {self.name!r} needs at least one time step. "
                f"Received: inputs.shape={shape}"
            )
        if calling and self.unroll and shape[1] is None:
            raise ValueError(
                f"Layer {self.name!r} has unroll=True, which needs a known "
                "number of time steps: give the Input a `shape` whose time "
                f"axis is set. Received: inputs.shape={shape}"
            )
        if self.stateful and self.states is not None:
            expected = _shape_of(self.states[0])[0]
            if _dims_differ(shape[0], expected):
                raise ValueError(
                    f"Layer {self.name!r} is stateful and holds states for a "
                    f"batch of {expected}; a stateful layer needs the same "
                    "batch size in every call (use reset_state(states=...) "
                    f"to start over). Received: inputs.shape={shape}"
                )

    def _check_mask(self, mask, sequences_shape):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        if mask is None:
            return None
        shape = _shape_of(mask)
        if len(shape) != 2 or any(
            _dims_differ(m, s) for m, s in zip(shape, sequences_shape[:2])
        ):
            raise ValueError(
                f"Layer {self.name!r} expects a mask of shape (batch, time) = "
                f"{tuple(sequences_shape[:2])}. Received: mask.shape={shape}"
            )
        return mask

    def _check_initial_state(self, initial_state, sequences_shape):
        if initial_state is None:
            return None
        states = (
            list(initial_state)
            if isinstance(initial_state, (list, tuple))
            else [initial_state]
        )
        self._check_state_shapes([_shape_of(s) for s in states], sequences_shape)
        return states

    def _check_state_shapes(self, shapes, sequences_shape):
        if len(shapes) != len(self.state_size):
            raise ValueError(
                f"Layer {self.name!r} expects {len(self.state_size)} initial "
                f"state tensor(s). Received: len(initial_state)={len(shapes)}"
            )
        for index, (shape, size) in enumerate(zip(shapes, self.state_size)):
            shape = tuple(shape)
            expected = (sequences_shape[0], size)
            if len(shape) != 2 or any(
                _dims_differ(a, b) for a, b in zip(shape, expected)
            ):
                raise ValueError(
                    f"Layer {self.name!r} expects initial_state[{index}] of "
                    f"shape {expected}. Received: "
                    f"initial_state[{index}].shape={shape}"
                )

    # -- keras.layers.RNN hooks ----------------------------------------------

    def build(self, sequences_shape, initial_state_shape=None):
        self._check_sequences(sequences_shape, calling=False)
        super().build(sequences_shape, initial_state_shape)

    def compute_output_shape(self, sequences_shape, initial_state_shape=None):
        # Symbolic calls on a built layer come here instead of call().
        self._check_sequences(sequences_shape)
        if initial_state_shape is not None:
            shapes = initial_state_shape
            if not shapes or not isinstance(shapes[0], (list, tuple)):
                shapes = [shapes]  # one state, given as one shape
            self._check_state_shapes(shapes, sequences_shape)
        return super().compute_output_shape(sequences_shape, initial_state_shape)

    def call(self, sequences, initial_state=None, mask=None, training=None):
        shape = _shape_of(sequences)
        self._check_sequences(shape)
        if initial_state is None and self.stateful:
            # keras.layers.RNN would start from the state variables' own
            # tensors and then assign the final states to them in place; on
            # PyTorch that write breaks the backward pass, which still needs
            # the old values. Starting from copies keeps the two apart.
            initial_state = [ops.copy(state) for state in self.states]
        return super().call(
            sequences,
            initial_state=self._check_initial_state(initial_state, shape),
            mask=self._check_mask(mask, shape),
            training=bool(training),
        )

    def inner_loop(self, sequences, initial_state, mask, training=False):
        cell = self.cell
        if training and cell.dropout > 0:
            # One mask per sequence, the same at every time step.
            dp_mask = cell.get_dropout_mask(sequences[:, 0, :])
            sequences = sequences * ops.expand_dims(dp_mask, 1)
        rec_mask = None
        if training and cell.recurrent_dropout > 0:
            rec_mask = cell.get_recurrent_dropout_mask(initial_state[0])
        if mask is None and rec_mask is None and self._uses_torch_recurrence():
            from keras_recurrent import _fast_torch

            return _fast_torch.recurrence(
                cell, sequences, initial_state, go_backwards=self.go_backwards
            )
        xs = ops.transpose(sequences, (1, 0, 2))  # time-major
        if self._uses_tensorflow_loop():
            from keras_recurrent import _fast_tf

            return _fast_tf.recurrence(
                cell,
                cell.project_inputs(xs),
                initial_state,
                mask=mask,
                recurrent_dropout_mask=rec_mask,
                go_backwards=self.go_backwards,
                zero_output_for_mask=self.zero_output_for_mask,
            )
        step = cell.make_step(cell.step_weights(), rec_mask)
        if keras.config.backend() == "jax":
            # Inside jax.lax.scan the projection runs at each step: projected
            # all at once, its gradient would be a (time, batch, gates * units)
            # tensor built step by step in JAX's backward pass, which made a
            # training step almost twice as slow.
            def step(x_t, states, step=step):
                return step(cell.project_inputs(x_t), states)
        else:
            xs = cell.project_inputs(xs)
        return recurrence(
            step,
            xs,
            initial_state,
            mask=mask,
            go_backwards=self.go_backwards,
            unroll=self.unroll,
            zero_output_for_mask=self.zero_output_for_mask,
            state_dtype=cell.variable_dtype,
        )

    def _uses_tensorflow_loop(self):
        """Whether ``_fast_tf`` runs the time loop (see that module).

        It does on TensorFlow in float32 and float64 unless ``unroll=True``;
        everywhere else the portable ``keras.ops`` loop runs.
        """
        return (
            keras.config.backend() == "tensorflow"
            and not self.unroll
            and self.cell.compute_dtype in ("float32", "float64")
        )

    def _uses_torch_recurrence(self):
        """Whether ``_fast_torch`` runs the sequence when there is no mask
        and no recurrent dropout (see that module)."""
        if keras.config.backend() != "torch" or self.unroll:
            return False
        from keras_recurrent import _fast_torch

        return _fast_torch.serves(self.cell)

    @property
    def variables(self):
        """All the layer's state, including a stateful layer's states.

        ``keras.layers.RNN`` keeps those out of the tracked variables, so
        JAX's stateless calls (``stateless_call``, and through them ``fit``
        and ``predict`` on JAX) would drop them after every batch. Listed
        here they are non-trainable variables, carried from batch to batch;
        they stay out of ``weights``, as in Keras.
        """
        variables = super().variables
        if self.stateful and self.states is not None:
            seen = {id(v) for v in variables}
            variables += [s for s in self.states if id(s) not in seen]
        return variables

    def reset_state(self, states=None):
        """Resets a stateful layer's states to zeros, or to ``states``.

        Args:
            states: optional list of arrays, one per state, each of shape
                ``(batch, units)``; for a layer with one state a single array
                is accepted too.
        """
        if states is None:
            super().reset_state()
            return
        if self.states is None:
            raise ValueError(
                f"Layer {self.name!r} has no states to reset: reset_state("
                "states=...) needs a stateful layer that has been built. "
                f"Received: stateful={self.stateful}"
            )
        batch = _shape_of(self.states[0])[0]
        values = self._check_initial_state(states, (batch,))
        for variable, value in zip(self.states, values):
            variable.assign(ops.cast(value, variable.dtype))

    def get_config(self):
        config = super().get_config()
        del config["cell"]
        cell_config = self.cell.get_config()
        for key in ("name", "trainable", "dtype"):
            cell_config.pop(key, None)
        config.update(cell_config)
        config["activity_regularizer"] = keras.regularizers.serialize(
            self.activity_regularizer
        )
        config["use_cudnn"] = self.use_cudnn
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

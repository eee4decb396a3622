"""The sequence layers' base: checks, the choice of time loop, the config."""

import keras
from keras import ops

from keras_recurrent import _checks, _ops, loops


def cell_property(name):
    """A read-only layer attribute forwarded to the layer's cell."""
    return property(lambda self: getattr(self.cell, name), doc=f"The cell's `{name}`.")


class RecurrentLayer(keras.layers.RNN):
    """Base of the sequence layers: checks, the time loop and the config.

    Subclasses build their cell, an instance of their ``cell_class``, and
    pass it here with the ``keras.layers.RNN`` arguments. The time loop runs
    in :meth:`inner_loop`, by the loop that :meth:`loop_for` names (see
    ``keras_recurrent.loops``). A layer subclass may set ``cell_class`` to a
    subclass of the cell that changes its equations; the layer then runs
    them, never a fused kernel that the new class does not claim.

    Under a mixed precision policy (``"mixed_float16"``, ``"mixed_bfloat16"``)
    the matmuls and gates run in the compute dtype, but the time loop carries
    the states in the variable dtype, float32: the LSTM cell state and the
    GRU state are running sums, ``c_t = f_t * c_{t-1} + ...``, and in float16
    (11 significant bits) or bfloat16 (8) every step would round away the
    part of the update below half a unit in the last place of the state, so
    over long sequences the state stalls or drifts. As everywhere in Keras,
    outputs and returned states are cast to the compute dtype.
    """

    #: The class of the cell the layer builds.
    cell_class = None

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
            expected = _ops.shape_of(self.states[0])[0]
            if _ops.dims_differ(shape[0], expected):
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
        shape = _ops.shape_of(mask)
        if len(shape) != 2 or any(
            _ops.dims_differ(m, s) for m, s in zip(shape, sequences_shape[:2])
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
        self._check_state_shapes([_ops.shape_of(s) for s in states], sequences_shape)
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
                _ops.dims_differ(a, b) for a, b in zip(shape, expected)
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
        shape = _ops.shape_of(sequences)
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
        return loops.run(self, sequences, initial_state, mask, training)

    def loop_for(self, mask=None, training=False):
        """The name of the time loop that runs this layer for a call with
        ``mask`` (a mask, or True for any) and ``training``:

        - ``"xla"``: on TensorFlow, the loop compiled by XLA with its own
          backward pass (float32 and float64, unless ``unroll=True``);
        - ``"graph"``: on TensorFlow inside :func:`keras_recurrent.exporting`,
          a plain ``tf.while_loop`` that the ONNX and TFLite converters read
          (unless ``unroll=True``);
        - ``"torch-fused"``: on PyTorch, PyTorch's fused kernel for the
          cell's equations (``torch.lstm``, ``torch.gru``, ``torch.rnn_tanh``,
          ``torch.rnn_relu``), when the cell claims one and the call has no
          recurrent dropout, and no mask or a right-padded one (each
          sequence's steps from the first, none empty; not with
          ``go_backwards``; see ``keras_recurrent/loops/torch.py``); and
          for an LSTM (with peepholes or without, no other variant) every
          call, by this package's own fused LSTM where PyTorch has none.
          ``mask=True`` stands for a mask of any pattern, which runs the
          portable loop for the other layers;
        - ``"portable"``: the ``keras.ops`` loop over the cell's step, on
          every backend (a Python loop with ``unroll=True`` and on
          PyTorch);
        - ``"cell-call"``: for a cell class that overrides ``call``, Keras's
          own loop over ``cell.call``.

        The answer depends on the layer's configuration, the cell and the
        backend; ask it of the layer you call.
        """
        return loops.choose(self, mask=mask, training=training)

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
        batch = _ops.shape_of(self.states[0])[0]
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

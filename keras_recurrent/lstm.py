"""Long short-term memory with peephole connections: ``LSTMCell`` and ``LSTM``."""

import keras
from keras import ops

from keras_recurrent import _ops
from keras_recurrent._base import RecurrentLayer, cell_property
from keras_recurrent._cell import FusedKernel, StepCell
from keras_recurrent._checks import check_arguments

_PEEPHOLES = (
    "input_gate_peephole_weights",
    "forget_gate_peephole_weights",
    "output_gate_peephole_weights",
)


class LSTMCell(StepCell, keras.layers.LSTMCell):
    """Cell for one step of an LSTM, with peephole connections by default.

    With ``use_peepholes=True`` (Gers, Schraudolph & Schmidhuber, 2002,
    "Learning precise timing with LSTM recurrent networks"):

    .. math::

        i_t &= \\sigma(x_t W_i + h_{t-1} U_i + b_i + p_i \\odot c_{t-1}) \\\\
        f_t &= \\sigma(x_t W_f + h_{t-1} U_f + b_f + p_f \\odot c_{t-1}) \\\\
        c_t &= f_t \\odot c_{t-1} + i_t \\odot \\phi(x_t W_c + h_{t-1} U_c + b_c) \\\\
        o_t &= \\sigma(x_t W_o + h_{t-1} U_o + b_o + p_o \\odot c_t) \\\\
        h_t &= o_t \\odot \\phi(c_t)

    where ``sigma = recurrent_activation`` and ``phi = activation``; the
    output gate looks at the new cell state ``c_t``. With
    ``use_peepholes=False`` the ``p`` terms are absent and the cell is
    ``keras.layers.LSTMCell``, number for number.

    Weights, in ``get_weights()`` order: ``kernel (features, 4 * units)``,
    ``recurrent_kernel (units, 4 * units)``, ``bias (4 * units,)`` with the
    gates in Keras's order ``i, f, c, o``; then, with peepholes, the three
    ``(units,)`` vectors ``input_gate_peephole_weights``,
    ``forget_gate_peephole_weights`` and ``output_gate_peephole_weights``,
    the order of Keras 2's ``PeepholeLSTMCell``.

    Args:
        units: Positive integer, dimensionality of the output space.
        activation: Activation function ``phi``. Default: ``tanh``.
        recurrent_activation: Gate activation ``sigma``. Default: ``sigmoid``.
        use_bias: Boolean, whether the layer uses a bias vector.
        kernel_initializer, recurrent_initializer, bias_initializer:
            Initializers of the three weights.
        unit_forget_bias: Boolean; if True, the forget gate bias starts at 1.
        kernel_regularizer, recurrent_regularizer, bias_regularizer:
            Regularizers of the three weights.
        kernel_constraint, recurrent_constraint, bias_constraint:
            Constraints of the three weights.
        dropout: Float in [0, 1): fraction of the input units to drop.
        recurrent_dropout: Float in [0, 1): fraction of the recurrent units
            to drop (on the state entering the recurrent matmul only).
        seed: Random seed for dropout.
        use_peepholes: Boolean, whether the gates see the cell state.
            Default: True.
        peephole_initializer: Initializer of the peephole weights. Default:
            ``"glorot_uniform"``, as in Keras 2 and TensorFlow Addons.
        peephole_regularizer: Regularizer of the peephole weights.
        peephole_constraint: Constraint of the peephole weights.

    Call arguments:
        inputs: ``(batch, features)`` tensor.
        states: list ``[h, c]`` of two ``(batch, units)`` tensors.
        training: Whether dropout is active.
    """

    update_sums_inputs = True

    def __init__(
        self,
        units,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        unit_forget_bias=True,
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
        use_peepholes=True,
        peephole_initializer="glorot_uniform",
        peephole_regularizer=None,
        peephole_constraint=None,
        **kwargs,
    ):
        check_arguments(locals())
        super().__init__(
            int(units),  # a NumPy integer would fail Keras's state_size checks
            activation=activation,
            recurrent_activation=recurrent_activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer,
            unit_forget_bias=unit_forget_bias,
            kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            seed=seed,
            **kwargs,
        )
        # Keras gives each gate its own dropout mask when recurrent_dropout is
        # set; here one input mask and one recurrent mask serve all gates.
        self.dropout_mask_count = None
        self.use_peepholes = use_peepholes
        self.peephole_initializer = keras.initializers.get(peephole_initializer)
        self.peephole_regularizer = keras.regularizers.get(peephole_regularizer)
        self.peephole_constraint = keras.constraints.get(peephole_constraint)

    def build(self, input_shape):
        super().build(input_shape)
        if self.use_peepholes:
            for index, name in enumerate(_PEEPHOLES):
                setattr(
                    self,
                    name,
                    self.add_weight(
                        shape=(self.units,),
                        name=name,
                        initializer=self._peephole_initializer(index),
                        regularizer=self.peephole_regularizer,
                        constraint=self.peephole_constraint,
                    ),
                )

    def _peephole_initializer(self, index):
        """The initializer of peephole vector ``index``, a draw of its own.

        A Keras random initializer with an integer seed (or none, when it
        picks one at creation) repeats the same values on every call; used
        as-is it would make the three vectors equal. Each vector gets a copy
        seeded ``seed + index`` (or freshly, without a seed).
        """
        initializer = self.peephole_initializer
        config = initializer.get_config() if hasattr(initializer, "get_config") else {}
        if "seed" not in config:
            return initializer  # not random
        seed = config["seed"]
        if seed is not None and not isinstance(seed, int):
            return initializer  # a SeedGenerator, which advances between calls
        config["seed"] = None if seed is None else seed + index
        return type(initializer).from_config(config)

    def project_inputs(self, inputs):
        projected = _ops.matmul(inputs, self.kernel)
        if self.use_bias:
            projected = projected + self.bias
        return projected

    def step_weights(self):
        names = ("recurrent_kernel", *(_PEEPHOLES if self.use_peepholes else ()))
        return tuple(ops.convert_to_tensor(getattr(self, name)) for name in names)

    def fused_kernel(self):
        plain = (
            not self.use_peepholes
            and self.activation is keras.activations.tanh
            and self.recurrent_activation is keras.activations.sigmoid
        )
        return FusedKernel("lstm", self.layer_weights) if plain else None

    def step_parts(self, weights, recurrent_activation=None):
        recurrent_kernel, *peepholes = weights
        activation = _ops.activation(self.activation, self.compute_dtype)
        gate = recurrent_activation or self.recurrent_activation
        units = self.units
        compute_dtype = self.compute_dtype
        # With peepholes, the input and forget gates' vectors side by side.
        extra = []
        if self.use_peepholes:
            p_i, p_f, p_o = peepholes
            extra = [ops.concatenate([p_i, p_f]), p_o]

        def update(projected_t, r, h_in, states, extra):
            # Gates in the compute dtype; the cell state, which accumulates
            # over time, in the dtype of c_tm1 (see RecurrentLayer). Each
            # activation runs once over adjacent gates, not once per gate:
            # the same numbers, in fewer and larger ops.
            h_tm1, c_tm1 = states
            z = projected_t + r
            z_if, z_g, z_o = _ops.split(z, [2 * units, units, units])
            g = activation(z_g)
            if extra:
                p_if, p_o = extra
                c_in = _ops.cast(c_tm1, compute_dtype)
                z_if = z_if + p_if * ops.concatenate([c_in, c_in], -1)
                i, f = _ops.split(gate(z_if), [units, units])
            else:
                i, f, _, o = _ops.split(gate(z), [units] * 4)
            c = _ops.cast(f, c_tm1.dtype) * c_tm1 + _ops.cast(i * g, c_tm1.dtype)
            c_out = _ops.cast(c, compute_dtype)
            if extra:
                o = gate(z_o + p_o * c_out)
            h = _ops.cast(o * activation(c_out), h_tm1.dtype)
            return [h, c]

        return recurrent_kernel, update, extra

    def get_config(self):
        return {
            **super().get_config(),
            "use_peepholes": self.use_peepholes,
            "peephole_initializer": keras.initializers.serialize(
                self.peephole_initializer
            ),
            "peephole_regularizer": keras.regularizers.serialize(
                self.peephole_regularizer
            ),
            "peephole_constraint": keras.constraints.serialize(
                self.peephole_constraint
            ),
        }


class LSTM(RecurrentLayer):
    """Long short-term memory layer, with peephole connections by default.

    With ``use_peepholes=False`` this is a drop-in replacement for
    ``keras.layers.LSTM``: same arguments, defaults, weights and outputs.
    With ``use_peepholes=True`` (the default) the input and forget gates see
    the previous cell state and the output gate sees the new one (Gers,
    Schraudolph & Schmidhuber, 2002); see :class:`LSTMCell` for the equations
    and the weight layout. On TensorFlow and PyTorch the input projection
    ``x_t W + b`` is computed for every time step in one matmul before the
    time loop.

    Args:
        units: Positive integer, dimensionality of the output space.
        activation: Activation function. Default: ``tanh``.
        recurrent_activation: Gate activation. Default: ``sigmoid``.
        use_bias: Boolean, whether the layer uses a bias vector.
        kernel_initializer, recurrent_initializer, bias_initializer:
            Initializers of the three weights.
        unit_forget_bias: Boolean; if True, the forget gate bias starts at 1.
        kernel_regularizer, recurrent_regularizer, bias_regularizer:
            Regularizers of the three weights.
        activity_regularizer: Regularizer applied to the layer's output.
        kernel_constraint, recurrent_constraint, bias_constraint:
            Constraints of the three weights.
        dropout: Float in [0, 1): fraction of the input units to drop, one
            mask per sequence.
        recurrent_dropout: Float in [0, 1): fraction of the recurrent units to
            drop, one mask per sequence.
        seed: Random seed for dropout.
        return_sequences: Whether to return the whole output sequence or only
            the last output.
        return_state: Whether to return the last states ``h, c`` too.
        go_backwards: Whether to process the sequence backwards and return
            the reversed sequence.
        stateful: Whether the last state of each batch is the initial state
            of the next batch (needs a fixed batch size).
        unroll: Whether to unroll the time loop (needs a known number of
            steps).
        use_cudnn: Accepted for compatibility: ``"auto"`` and ``False`` run
            this layer's own loop; ``True`` raises, as there is no cuDNN path
            (and peepholes have none anywhere).
        use_peepholes: Boolean, whether to use peephole connections.
        peephole_initializer, peephole_regularizer, peephole_constraint:
            Initializer, regularizer and constraint of the peephole weights.

    Call arguments:
        sequences: ``(batch, time, features)`` tensor.
        initial_state: optional list ``[h, c]`` of ``(batch, units)`` tensors.
        mask: optional ``(batch, time)`` boolean tensor.
        training: Whether dropout is active.

    Example:

    >>> layer = LSTM(4, return_sequences=True, return_state=True)
    >>> outputs, h, c = layer(np.zeros((2, 3, 5)))
    >>> outputs.shape, h.shape, c.shape
    ((2, 3, 4), (2, 4), (2, 4))
    """

    _no_cudnn_reason = (
        "keras_recurrent layers have no cuDNN implementation, and cuDNN has "
        "no peephole LSTM."
    )

    recurrent_activation = cell_property("recurrent_activation")
    unit_forget_bias = cell_property("unit_forget_bias")
    use_peepholes = cell_property("use_peepholes")
    peephole_initializer = cell_property("peephole_initializer")
    peephole_regularizer = cell_property("peephole_regularizer")
    peephole_constraint = cell_property("peephole_constraint")

    cell_class = LSTMCell

    def __init__(
        self,
        units,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        unit_forget_bias=True,
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        unroll=False,
        use_cudnn="auto",
        use_peepholes=True,
        peephole_initializer="glorot_uniform",
        peephole_regularizer=None,
        peephole_constraint=None,
        **kwargs,
    ):
        check_arguments(locals())
        kwargs.pop("implementation", None)  # Legacy argument, accepted and unused.
        cell = self.cell_class(
            units,
            activation=activation,
            recurrent_activation=recurrent_activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer,
            unit_forget_bias=unit_forget_bias,
            kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            seed=seed,
            use_peepholes=use_peepholes,
            peephole_initializer=peephole_initializer,
            peephole_regularizer=peephole_regularizer,
            peephole_constraint=peephole_constraint,
            dtype=kwargs.get("dtype"),
            trainable=kwargs.get("trainable", True),
            name="lstm_cell",
        )
        super().__init__(
            cell,
            use_cudnn=use_cudnn,
            return_sequences=return_sequences,
            return_state=return_state,
            go_backwards=go_backwards,
            stateful=stateful,
            unroll=unroll,
            activity_regularizer=activity_regularizer,
            **kwargs,
        )

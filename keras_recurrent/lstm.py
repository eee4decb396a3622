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
_NORMS = (
    "recurrent_norm_gamma",
    "recurrent_norm_beta",
    "cell_norm_gamma",
    "cell_norm_beta",
)


def _check_projection_clip(projection_clip, projection_units):
    """``projection_clip`` clips the projection's output: it needs one."""
    if projection_clip is not None and projection_units is None:
        raise ValueError(
            "Argument `projection_clip` needs `projection_units`: it clips "
            "the projected output h_t. Received: "
            f"projection_clip={projection_clip!r}, projection_units=None"
        )


def _clip(x, bound):
    """``x`` clipped to ``[-bound, bound]``, with ``bound`` in ``x``'s dtype:
    ``keras.ops.clip`` given a Python float rounds it to float32 on
    PyTorch, so float64 would clip at 0.30000001192 for 0.3."""
    bound = ops.convert_to_tensor(bound, dtype=x.dtype)
    return ops.clip(x, -bound, bound)


class LSTMCell(StepCell, keras.layers.LSTMCell):
    """Cell for one step of an LSTM, with peephole connections by default,
    and optional cell clipping, projection and layer normalisation.

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

    The options, each off by default, change these equations as follows:

    - ``cell_clip``: right after its update, ``c_t`` is clipped to
      ``[-cell_clip, cell_clip]``; the output gate's peephole, ``h_t`` and
      the next step read the clipped ``c_t`` (TF1's
      ``LSTMCell(cell_clip=...)``).
    - ``projection_units`` (LSTMP; Sak, Senior & Beaufays, 2014, "Long
      short-term memory recurrent neural network architectures for large
      scale acoustic modeling"): ``h_t = (o_t \\odot \\phi(c_t)) P`` with
      ``P = projection_kernel (units, projection_units)`` and no bias, then
      clipped to ``[-projection_clip, projection_clip]`` if
      ``projection_clip`` is set. ``h`` has ``projection_units`` entries, so
      ``U`` is ``(projection_units, 4 * units)``. TF1's
      ``LSTMCell(num_proj, proj_clip)`` and PyTorch's
      ``nn.LSTM(proj_size=...)``.
    - ``use_layer_norm`` (Ba, Kiros & Hinton, 2016, "Layer normalization"):
      ``x_t W`` and ``h_{t-1} U`` are each normalised over their
      ``4 * units`` entries, ``LN(z) = (z - mean(z)) / sqrt(var(z) + eps)
      \\odot \\gamma + \\beta`` with the population variance and
      ``eps = layer_norm_epsilon``, before the bias is added; and the cell
      state is normalised where it is read out,
      ``h_t = o_t \\odot \\phi(LN_c(c_t))`` (before any projection). The
      carried ``c_t`` and the peepholes see the state unnormalised. (TensorFlow
      Addons' ``LayerNormLSTMCell`` normalised the carried state instead, so
      its weights give other outputs here.)

    Weights, in ``get_weights()`` order: ``kernel (features, 4 * units)``,
    ``recurrent_kernel (units, 4 * units)``, ``bias (4 * units,)`` with the
    gates in Keras's order ``i, f, c, o``; then, with peepholes, the three
    ``(units,)`` vectors ``input_gate_peephole_weights``,
    ``forget_gate_peephole_weights`` and ``output_gate_peephole_weights``,
    the order of Keras 2's ``PeepholeLSTMCell``; with a projection,
    ``projection_kernel (units, projection_units)``; with layer norm,
    ``kernel_norm_gamma``, ``kernel_norm_beta``, ``recurrent_norm_gamma``,
    ``recurrent_norm_beta`` (each ``(4 * units,)``), ``cell_norm_gamma`` and
    ``cell_norm_beta`` (``(units,)``).

    Args:
        units: Positive integer, dimensionality of the cell state (and of
            ``h_t``, without a projection).
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
        cell_clip: None, or a float > 0 that bounds ``|c_t|``.
        projection_units: None, or a positive integer: the size of the
            projected output ``h_t``.
        projection_clip: None, or a float > 0 that bounds ``|h_t|``; only
            with ``projection_units``.
        projection_initializer, projection_regularizer,
            projection_constraint: Initializer (default
            ``"glorot_uniform"``), regularizer and constraint of the
            projection kernel.
        use_layer_norm: Boolean, whether to layer-normalise ``x_t W``,
            ``h_{t-1} U`` and the cell state's read-out. Default: False.
        layer_norm_epsilon: Float > 0 added to the variance. Default: 1e-3.

    Call arguments:
        inputs: ``(batch, features)`` tensor.
        states: list ``[h, c]``: ``h`` of shape ``(batch, projection_units)``
            (``(batch, units)`` without a projection), ``c`` of shape
            ``(batch, units)``.
        training: Whether dropout is active.
    """

    step_from_config = True

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
        cell_clip=None,
        projection_units=None,
        projection_clip=None,
        projection_initializer="glorot_uniform",
        projection_regularizer=None,
        projection_constraint=None,
        use_layer_norm=False,
        layer_norm_epsilon=1e-3,
        **kwargs,
    ):
        check_arguments(locals())
        self._skip_seed_without_dropout(dropout, recurrent_dropout)
        _check_projection_clip(projection_clip, projection_units)
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
        self.cell_clip = None if cell_clip is None else float(cell_clip)
        self.projection_units = (
            None if projection_units is None else int(projection_units)
        )
        self.projection_clip = (
            None if projection_clip is None else float(projection_clip)
        )
        self.projection_initializer = keras.initializers.get(projection_initializer)
        self.projection_regularizer = keras.regularizers.get(projection_regularizer)
        self.projection_constraint = keras.constraints.get(projection_constraint)
        self.use_layer_norm = use_layer_norm
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        if self.projection_units is not None:
            self.state_size = [self.projection_units, self.units]
            self.output_size = self.projection_units

    @property
    def update_sums_inputs(self):
        """Whether ``update`` reads ``projected_t`` and ``r`` only through
        their sum: not with layer norm, which normalises ``r`` alone."""
        return not self.use_layer_norm

    def build(self, input_shape):
        if self.projection_units is None:
            super().build(input_shape)
        else:
            self._build_projected(input_shape)
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
        if self.projection_units is not None:
            self.projection_kernel = self.add_weight(
                shape=(self.units, self.projection_units),
                name="projection_kernel",
                initializer=self.projection_initializer,
                regularizer=self.projection_regularizer,
                constraint=self.projection_constraint,
            )
        if self.use_layer_norm:
            gates = 4 * self.units
            self.build_layer_norm(
                {"kernel": gates, "recurrent": gates, "cell": self.units}
            )

    def _build_projected(self, input_shape):
        """``keras.layers.LSTMCell.build`` with a recurrent kernel of shape
        ``(projection_units, 4 * units)``: the weights, names, initializers
        and order of Keras's cell, which sizes it by ``units``."""
        keras.layers.Layer.build(self, input_shape)
        gates = 4 * self.units
        self.kernel = self.add_weight(
            shape=(input_shape[-1], gates),
            name="kernel",
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.recurrent_kernel = self.add_weight(
            shape=(self.projection_units, gates),
            name="recurrent_kernel",
            initializer=self.recurrent_initializer,
            regularizer=self.recurrent_regularizer,
            constraint=self.recurrent_constraint,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(gates,),
                name="bias",
                initializer=self._bias_initializer(),
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )

    def _bias_initializer(self):
        """The bias initializer, with the forget gate's block at 1 when
        ``unit_forget_bias`` (as in ``keras.layers.LSTMCell``)."""
        if not self.unit_forget_bias:
            return self.bias_initializer
        units = self.units

        def initializer(_, *args, **kwargs):
            return ops.concatenate(
                [
                    self.bias_initializer((units,), *args, **kwargs),
                    keras.initializers.get("ones")((units,), *args, **kwargs),
                    self.bias_initializer((2 * units,), *args, **kwargs),
                ]
            )

        return initializer

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

    def step_weights(self):
        names = ["recurrent_kernel"]
        if self.use_peepholes:
            names += _PEEPHOLES
        if self.projection_units is not None:
            names.append("projection_kernel")
        if self.use_layer_norm:
            names += _NORMS
        return tuple(ops.convert_to_tensor(getattr(self, name)) for name in names)

    def fused_kernel(self):
        plain = (
            self.cell_clip is None
            and self.projection_clip is None
            and self.activation is keras.activations.tanh
            and self.recurrent_activation is keras.activations.sigmoid
        )
        if not plain:
            return None
        if self.use_layer_norm:
            if self.projection_units is not None:
                return None
            if self.use_peepholes:
                return FusedKernel("lstm_layer_norm_peephole", self._norm_weights)
            return FusedKernel("lstm_layer_norm", self._norm_weights)
        if self.use_peepholes:
            if self.projection_units is None:
                return FusedKernel("lstm_peephole", self._peephole_weights)
            return None
        if self.projection_units is None:
            return FusedKernel("lstm", self.layer_weights)
        return FusedKernel("lstm_projected", self._projected_weights)

    def _projected_weights(self):
        return (
            *self.layer_weights(),
            ops.convert_to_tensor(self.projection_kernel),
        )

    def _norm_weights(self):
        peepholes = self.use_peepholes
        weights = self._peephole_weights() if peepholes else self.layer_weights()
        names = ("kernel_norm_gamma", "kernel_norm_beta", *_NORMS)
        return (*weights, *(ops.convert_to_tensor(getattr(self, n)) for n in names))

    def _peephole_weights(self):
        # .value: on TensorFlow convert_to_tensor keeps a Keras variable,
        # which ops.stack cannot read.
        peepholes = [ops.convert_to_tensor(getattr(self, n).value) for n in _PEEPHOLES]
        return (*self.layer_weights(), ops.stack(peepholes))

    def step_parts(self, weights, recurrent_activation=None):
        recurrent_kernel, *rest = weights
        # extra: [p_if, p_o] with peepholes (the input and forget gates'
        # vectors side by side), then the projection kernel, then the
        # recurrent and cell norms' gains and offsets, each when present.
        extra = []
        if self.use_peepholes:
            p_i, p_f, p_o = rest[:3]
            extra = [ops.concatenate([p_i, p_f]), p_o]
            rest = rest[3:]
        extra += rest
        return recurrent_kernel, self._update(recurrent_activation), extra

    def _update(self, recurrent_activation):
        """The step after its recurrent matmul (see ``StepCell.step_parts``)."""
        activation = _ops.activation(self.activation, self.compute_dtype)
        gate = recurrent_activation or self.recurrent_activation
        units = self.units
        compute_dtype = self.compute_dtype
        use_peepholes = self.use_peepholes
        projecting = self.projection_units is not None
        use_layer_norm = self.use_layer_norm
        cell_clip, projection_clip = self.cell_clip, self.projection_clip
        epsilon = self.layer_norm_epsilon

        def update(projected_t, r, h_in, states, extra):
            # Gates in the compute dtype; the cell state, which accumulates
            # over time, in the dtype of c_tm1 (see RecurrentLayer), and so
            # its clipping too. Each activation runs once over adjacent
            # gates, not once per gate: the same numbers, in fewer and
            # larger ops.
            h_tm1, c_tm1 = states
            extra = iter(extra)
            if use_peepholes:
                p_if, p_o = next(extra), next(extra)
            if projecting:
                projection_kernel = next(extra)
            if use_layer_norm:
                r = _ops.layer_norm(r, next(extra), next(extra), epsilon)
                cell_gamma, cell_beta = next(extra), next(extra)
            z = projected_t + r
            z_if, z_g, z_o = _ops.split(z, [2 * units, units, units])
            g = activation(z_g)
            if use_peepholes:
                c_in = _ops.cast(c_tm1, compute_dtype)
                z_if = z_if + p_if * ops.concatenate([c_in, c_in], -1)
                i, f = _ops.split(gate(z_if), [units, units])
            else:
                i, f, _, o = _ops.split(gate(z), [units] * 4)
            c = _ops.cast(f, c_tm1.dtype) * c_tm1 + _ops.cast(i * g, c_tm1.dtype)
            if cell_clip is not None:
                c = _clip(c, cell_clip)
            c_out = _ops.cast(c, compute_dtype)
            if use_peepholes:
                o = gate(z_o + p_o * c_out)
            if use_layer_norm:
                # From the state in its own dtype (float32 under the mixed
                # policies), not from c_out rounded to float16.
                c_norm = _ops.layer_norm(c, cell_gamma, cell_beta, epsilon)
                c_out = _ops.cast(c_norm, compute_dtype)
            h = o * activation(c_out)
            if projecting:
                # The backend's own matmul, as for r (see make_step).
                h = h @ projection_kernel
            if projection_clip is not None:
                h = _clip(h, projection_clip)
            return [_ops.cast(h, h_tm1.dtype), c]

        return update

    def get_config(self):
        return {
            **super().get_config(),
            "use_peepholes": self.use_peepholes,
            **self._weight_options("peephole"),
            "cell_clip": self.cell_clip,
            "projection_units": self.projection_units,
            "projection_clip": self.projection_clip,
            **self._weight_options("projection"),
            "use_layer_norm": self.use_layer_norm,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        }

    def _weight_options(self, prefix):
        """The serialized initializer, regularizer and constraint of the
        ``prefix`` weights, under their argument names."""
        return {
            f"{prefix}_initializer": keras.initializers.serialize(
                getattr(self, f"{prefix}_initializer")
            ),
            f"{prefix}_regularizer": keras.regularizers.serialize(
                getattr(self, f"{prefix}_regularizer")
            ),
            f"{prefix}_constraint": keras.constraints.serialize(
                getattr(self, f"{prefix}_constraint")
            ),
        }


class LSTM(RecurrentLayer):
    """Long short-term memory layer, with peephole connections by default,
    and optional cell clipping, projection (LSTMP) and layer normalisation.

    With ``use_peepholes=False`` and no other option this is a drop-in
    replacement for ``keras.layers.LSTM``: same arguments, defaults, weights
    and outputs. With ``use_peepholes=True`` (the default) the input and
    forget gates see the previous cell state and the output gate sees the
    new one (Gers, Schraudolph & Schmidhuber, 2002); see :class:`LSTMCell`
    for the equations of every option and the weight layout. On TensorFlow
    and PyTorch the input projection ``x_t W + b`` (layer-normalised before
    the bias, with ``use_layer_norm``) is computed for every time step in one
    matmul before the time loop.

    Args:
        units: Positive integer, dimensionality of the cell state (and of
            the output, without a projection).
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
        cell_clip: None, or a float > 0 that bounds ``|c_t|``.
        projection_units: None, or a positive integer: the size of the
            projected output ``h_t``, and so of the layer's output.
        projection_clip: None, or a float > 0 that bounds ``|h_t|``; only
            with ``projection_units``.
        projection_initializer, projection_regularizer,
            projection_constraint: Initializer, regularizer and constraint
            of the projection kernel.
        use_layer_norm: Boolean, whether to layer-normalise ``x_t W``,
            ``h_{t-1} U`` and the cell state's read-out.
        layer_norm_epsilon: Float > 0 added to the variance. Default: 1e-3.

    Call arguments:
        sequences: ``(batch, time, features)`` tensor.
        initial_state: optional list ``[h, c]``: ``h`` of shape
            ``(batch, projection_units)`` (``(batch, units)`` without a
            projection), ``c`` of shape ``(batch, units)``.
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
    cell_clip = cell_property("cell_clip")
    projection_units = cell_property("projection_units")
    projection_clip = cell_property("projection_clip")
    projection_initializer = cell_property("projection_initializer")
    projection_regularizer = cell_property("projection_regularizer")
    projection_constraint = cell_property("projection_constraint")
    use_layer_norm = cell_property("use_layer_norm")
    layer_norm_epsilon = cell_property("layer_norm_epsilon")

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
        cell_clip=None,
        projection_units=None,
        projection_clip=None,
        projection_initializer="glorot_uniform",
        projection_regularizer=None,
        projection_constraint=None,
        use_layer_norm=False,
        layer_norm_epsilon=1e-3,
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
            cell_clip=cell_clip,
            projection_units=projection_units,
            projection_clip=projection_clip,
            projection_initializer=projection_initializer,
            projection_regularizer=projection_regularizer,
            projection_constraint=projection_constraint,
            use_layer_norm=use_layer_norm,
            layer_norm_epsilon=layer_norm_epsilon,
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

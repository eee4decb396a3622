"""Gated recurrent unit: ``GRUCell`` and the ``GRU`` layer."""

import keras
from keras import ops

from keras_recurrent import _ops
from keras_recurrent._base import RecurrentLayer, cell_property
from keras_recurrent._cell import FusedKernel, StepCell
from keras_recurrent._checks import check_arguments


class GRUCell(StepCell, keras.layers.GRUCell):
    """Cell for one step of a GRU (Cho et al., 2014).

    .. math::

        z_t &= \\sigma(x_t W_z + b_z + h_{t-1} U_z + b'_z) \\\\
        r_t &= \\sigma(x_t W_r + b_r + h_{t-1} U_r + b'_r) \\\\
        \\tilde h_t &= \\phi(x_t W_h + b_h + r_t \\odot (h_{t-1} U_h + b'_h))
            \\quad \\text{(reset\\_after=True)} \\\\
        \\tilde h_t &= \\phi(x_t W_h + b_h + (r_t \\odot h_{t-1}) U_h)
            \\quad \\text{(reset\\_after=False)} \\\\
        h_t &= z_t \\odot h_{t-1} + (1 - z_t) \\odot \\tilde h_t

    with ``sigma = recurrent_activation`` and ``phi = activation``. Weights
    and gate order (``z, r, h``) are those of ``keras.layers.GRUCell``:
    ``kernel (features, 3 * units)``, ``recurrent_kernel (units, 3 * units)``,
    ``bias (2, 3 * units)`` (input ``b`` and recurrent ``b'``) when
    ``reset_after=True``, ``bias (3 * units,)`` otherwise.

    With ``use_layer_norm=True`` (Ba, Kiros & Hinton, 2016) the matmuls are
    layer-normalised,

    .. math::

        \\mathrm{LN}(z) = \\frac{z - \\mathrm{mean}(z)}
            {\\sqrt{\\mathrm{var}(z) + \\epsilon}} \\odot \\gamma + \\beta

    over the last axis, with the population variance and ``epsilon =
    layer_norm_epsilon``. ``LN_x`` normalises ``x_t W`` over all three gates
    (``3 * units`` features), before the input bias ``b``. With
    ``reset_after=True``, ``LN_h`` normalises ``h_{t-1} U`` over all three
    gates, before the recurrent bias ``b'``: the equations above read
    ``LN_x(x_t W) + b`` and ``LN_h(h_{t-1} U) + b'`` in place of
    ``x_t W + b`` and ``h_{t-1} U + b'``. With ``reset_after=False`` the
    product ``h_{t-1} U`` over all three gates is never computed: the
    candidate reads ``(r_t * h_{t-1}) U_h``. There ``LN_h`` is two
    normalisations, each over its own matmul, with the matching halves of
    the recurrent gain and offset:

    .. math::

        [z_t, r_t] &= \\sigma(\\mathrm{LN}_x(x_t W)_{zr} + b_{zr}
            + \\mathrm{LN}(h_{t-1} U_{zr};\\, \\gamma_{zr}, \\beta_{zr})) \\\\
        \\tilde h_t &= \\phi(\\mathrm{LN}_x(x_t W)_h + b_h
            + \\mathrm{LN}((r_t \\odot h_{t-1}) U_h;\\, \\gamma_h, \\beta_h))

    with ``gamma_zr, beta_zr`` the first ``2 * units`` entries of
    ``recurrent_norm_gamma`` and ``recurrent_norm_beta``, and ``gamma_h,
    beta_h`` the last ``units``. The gains and offsets are weights of shape
    ``(3 * units,)`` after the bias, in this order: ``kernel_norm_gamma``,
    ``kernel_norm_beta`` (of ``LN_x``), ``recurrent_norm_gamma``,
    ``recurrent_norm_beta`` (of ``LN_h``); the gains start at ones, the
    offsets at zeros.

    Recurrent dropout drops units of ``h_{t-1}`` where it enters the
    recurrent matmul only; the carried ``z_t * h_{t-1}`` term is never
    dropped. (``keras.layers.GRUCell`` drops it too, which rescales the kept
    state by ``1 / (1 - recurrent_dropout)`` at every step.) Without
    recurrent dropout, and at inference, the two agree.

    Args:
        units: Positive integer, dimensionality of the output space.
        activation: Activation function ``phi``. Default: ``tanh``.
        recurrent_activation: Gate activation ``sigma``. Default: ``sigmoid``.
        use_bias: Boolean, whether the layer uses a bias vector.
        kernel_initializer, recurrent_initializer, bias_initializer:
            Initializers of the three weights.
        kernel_regularizer, recurrent_regularizer, bias_regularizer:
            Regularizers of the three weights.
        kernel_constraint, recurrent_constraint, bias_constraint:
            Constraints of the three weights.
        dropout: Float in [0, 1): fraction of the input units to drop.
        recurrent_dropout: Float in [0, 1): fraction of the recurrent units
            to drop.
        reset_after: Whether the reset gate is applied after the recurrent
            matmul (True, the cuDNN-compatible default) or before it.
        seed: Random seed for dropout.
        use_layer_norm: Boolean, whether ``x_t W`` and the recurrent matmuls
            are layer-normalised.
        layer_norm_epsilon: Float > 0 added to the variance in the layer
            normalisations.

    Call arguments:
        inputs: ``(batch, features)`` tensor.
        states: list with the ``(batch, units)`` previous state.
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
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        reset_after=True,
        seed=None,
        use_layer_norm=False,
        layer_norm_epsilon=1e-3,
        **kwargs,
    ):
        check_arguments(locals())
        self._skip_seed_without_dropout(dropout, recurrent_dropout)
        super().__init__(
            int(units),  # a NumPy integer would fail Keras's state_size checks
            activation=activation,
            recurrent_activation=recurrent_activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            reset_after=reset_after,
            seed=seed,
            **kwargs,
        )
        # Keras gives each gate its own dropout mask when recurrent_dropout is
        # set; here one input mask and one recurrent mask serve all gates.
        self.dropout_mask_count = None
        self.use_layer_norm = use_layer_norm
        self.layer_norm_epsilon = float(layer_norm_epsilon)

    def build(self, input_shape):
        super().build(input_shape)
        if self.use_layer_norm:
            width = 3 * self.units
            self.build_layer_norm({"kernel": width, "recurrent": width})

    def input_bias(self):
        return self.bias[0] if self.reset_after else self.bias

    def step_weights(self):
        weights = [ops.convert_to_tensor(self.recurrent_kernel)]
        if self.reset_after and self.use_bias:
            weights.append(self.bias[1])
        if self.use_layer_norm:
            weights += [
                ops.convert_to_tensor(self.recurrent_norm_gamma),
                ops.convert_to_tensor(self.recurrent_norm_beta),
            ]
        return tuple(weights)

    def fused_kernel(self):
        plain = (
            not self.use_layer_norm
            and self.reset_after
            and self.activation is keras.activations.tanh
            and self.recurrent_activation is keras.activations.sigmoid
        )
        return FusedKernel("gru", self.layer_weights) if plain else None

    def step_parts(self, weights, recurrent_activation=None):
        units = self.units
        activation = _ops.activation(self.activation, self.compute_dtype)
        gate = recurrent_activation or self.recurrent_activation
        norm = self.use_layer_norm
        recurrent_kernel, *rest = weights
        if self.reset_after:
            # r = h @ U for all three gates; in `extra` the recurrent bias,
            # then the recurrent gain and offset.
            kernel, extra = recurrent_kernel, rest
        else:
            # r = h @ U_zr; the candidate's (r_t * h) @ U_h needs the gate.
            # Each of the two matmuls has its part of the gain and offset.
            kernel = recurrent_kernel[:, : 2 * units]
            extra = [recurrent_kernel[:, 2 * units :]]
            if norm:
                gamma, beta = rest
                extra += [*_ops.split(gamma, [2 * units, units])]
                extra += [*_ops.split(beta, [2 * units, units])]

        def update(projected_t, r, h_in, states, extra):
            # Gates in the compute dtype; the update of h, which accumulates
            # over time, in the dtype of h_tm1 (see RecurrentLayer). One
            # activation over both gates z and r: the same numbers as one
            # per gate, in fewer and larger ops.
            h_tm1 = states[0]
            x_zr, x_h = _ops.split(projected_t, [2 * units, units])
            if self.reset_after:
                inner = r
                if norm:
                    inner = self.layer_norm(inner, extra[-2], extra[-1])
                if self.use_bias:
                    inner = inner + extra[0]
                inner_zr, inner_h = _ops.split(inner, [2 * units, units])
                z, r_t = _ops.split(gate(x_zr + inner_zr), [units] * 2)
                candidate = activation(x_h + r_t * inner_h)
            else:
                u_h, *norm_weights = extra
                if norm:
                    gamma_zr, gamma_h, beta_zr, beta_h = norm_weights
                    r = self.layer_norm(r, gamma_zr, beta_zr)
                z, r_t = _ops.split(gate(x_zr + r), [units] * 2)
                inner_h = (r_t * h_in) @ u_h
                if norm:
                    inner_h = self.layer_norm(inner_h, gamma_h, beta_h)
                candidate = activation(x_h + inner_h)
            z = _ops.cast(z, h_tm1.dtype)
            h = z * h_tm1 + (1 - z) * _ops.cast(candidate, h_tm1.dtype)
            return [h]

        return kernel, update, extra

    def get_config(self):
        return {
            **super().get_config(),
            "use_layer_norm": self.use_layer_norm,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        }


class GRU(RecurrentLayer):
    """Gated recurrent unit layer (Cho et al., 2014).

    A drop-in replacement for ``keras.layers.GRU``: same arguments, defaults,
    weights (see :class:`GRUCell`) and outputs, with the one documented
    difference under recurrent dropout in training. On TensorFlow and
    PyTorch the input projection ``x_t W + b`` is computed for every time
    step in one matmul before the time loop. With ``use_layer_norm=True``
    the matmuls are layer-normalised, with four more weights (see
    :class:`GRUCell`).

    Args:
        units: Positive integer, dimensionality of the output space.
        activation: Activation function. Default: ``tanh``.
        recurrent_activation: Gate activation. Default: ``sigmoid``.
        use_bias: Boolean, whether the layer uses a bias vector.
        kernel_initializer, recurrent_initializer, bias_initializer:
            Initializers of the three weights.
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
        return_state: Whether to return the last state too.
        go_backwards: Whether to process the sequence backwards and return
            the reversed sequence.
        stateful: Whether the last state of each batch is the initial state
            of the next batch (needs a fixed batch size).
        unroll: Whether to unroll the time loop (needs a known number of
            steps).
        reset_after: Whether the reset gate is applied after the recurrent
            matmul (True, the default) or before it.
        use_cudnn: Accepted for compatibility: ``"auto"`` and ``False`` run
            this layer's own loop; ``True`` raises, as there is no cuDNN path.
        use_layer_norm: Boolean, whether ``x_t W`` and the recurrent matmuls
            are layer-normalised.
        layer_norm_epsilon: Float > 0 added to the variance in the layer
            normalisations.

    Call arguments:
        sequences: ``(batch, time, features)`` tensor.
        initial_state: optional list with one ``(batch, units)`` tensor.
        mask: optional ``(batch, time)`` boolean tensor.
        training: Whether dropout is active.

    Example:

    >>> layer = GRU(4)
    >>> layer(np.zeros((2, 3, 5))).shape
    (2, 4)
    """

    recurrent_activation = cell_property("recurrent_activation")
    reset_after = cell_property("reset_after")
    use_layer_norm = cell_property("use_layer_norm")
    layer_norm_epsilon = cell_property("layer_norm_epsilon")

    cell_class = GRUCell

    def __init__(
        self,
        units,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
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
        reset_after=True,
        use_cudnn="auto",
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
            kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            reset_after=reset_after,
            seed=seed,
            use_layer_norm=use_layer_norm,
            layer_norm_epsilon=layer_norm_epsilon,
            dtype=kwargs.get("dtype"),
            trainable=kwargs.get("trainable", True),
            name="gru_cell",
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

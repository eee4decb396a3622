"""Fully-connected recurrence: ``SimpleRNNCell`` and the ``SimpleRNN`` layer."""

import keras
from keras import ops

from keras_recurrent import _ops
from keras_recurrent._base import RecurrentLayer, cell_property
from keras_recurrent._cell import FusedKernel, StepCell
from keras_recurrent._checks import check_arguments


class SimpleRNNCell(StepCell, keras.layers.SimpleRNNCell):
    """Cell for one step of a fully-connected RNN.

    .. math::

        h_t = \\phi(x_t W + h_{t-1} U + b)

    with ``W = kernel (features, units)``, ``U = recurrent_kernel (units,
    units)``, ``b = bias (units,)`` and ``phi = activation``: the weights and
    numbers of ``keras.layers.SimpleRNNCell``.

    With ``use_layer_norm=True`` (Ba, Kiros & Hinton, 2016) both matmuls are
    layer-normalised, each with its own gain and offset:

    .. math::

        h_t = \\phi(\\mathrm{LN}_x(x_t W) + b + \\mathrm{LN}_h(h_{t-1} U)),
        \\quad
        \\mathrm{LN}(z) = \\frac{z - \\mathrm{mean}(z)}
            {\\sqrt{\\mathrm{var}(z) + \\epsilon}} \\odot \\gamma + \\beta

    over the ``units`` features of each row, with the population variance
    and ``epsilon = layer_norm_epsilon``. The gains and offsets are weights
    of shape ``(units,)`` after the bias, in this order:
    ``kernel_norm_gamma``, ``kernel_norm_beta`` (of ``LN_x``),
    ``recurrent_norm_gamma``, ``recurrent_norm_beta`` (of ``LN_h``); the
    gains start at ones, the offsets at zeros.

    Args:
        units: Positive integer, dimensionality of the output space.
        activation: Activation function. Default: hyperbolic tangent
            (``tanh``); ``None`` applies no activation.
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
        seed: Random seed for dropout.
        use_layer_norm: Boolean, whether ``x_t W`` and ``h_{t-1} U`` are
            layer-normalised.
        layer_norm_epsilon: Float > 0 added to the variance in the layer
            normalisations.

    Call arguments:
        inputs: ``(batch, features)`` tensor.
        states: list with the ``(batch, units)`` previous state.
        training: Whether dropout is active.

    Example:

    >>> cell = SimpleRNNCell(4)
    >>> layer = keras.layers.RNN(cell)
    >>> layer(np.zeros((2, 3, 5))).shape
    (2, 4)
    """

    step_from_config = True

    def __init__(
        self,
        units,
        activation="tanh",
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
            seed=seed,
            **kwargs,
        )
        self.use_layer_norm = use_layer_norm
        self.layer_norm_epsilon = float(layer_norm_epsilon)

    @property
    def update_sums_inputs(self):
        """Whether ``update`` reads ``x_t W + b`` and ``h_{t-1} U`` only
        through their sum: not when the second is layer-normalised."""
        return not self.use_layer_norm

    def build(self, input_shape):
        super().build(input_shape)
        if self.use_layer_norm:
            self.build_layer_norm({"kernel": self.units, "recurrent": self.units})

    def step_weights(self):
        names = ("recurrent_kernel",)
        if self.use_layer_norm:
            names += ("recurrent_norm_gamma", "recurrent_norm_beta")
        return tuple(ops.convert_to_tensor(getattr(self, name)) for name in names)

    def fused_kernel(self):
        if self.use_layer_norm:
            return None  # no fused kernel normalises its matmuls
        if self.activation is keras.activations.tanh:
            return FusedKernel("rnn_tanh", self.layer_weights)
        if self.activation is keras.activations.relu:
            return FusedKernel("rnn_relu", self.layer_weights)
        return None

    def step_parts(self, weights, recurrent_activation=None):
        # recurrent_activation: there is no gate to apply it to.
        # With layer norm, the recurrent gain and offset in `extra`.
        recurrent_kernel, *extra = weights
        activation = _ops.activation(
            self.activation or keras.activations.linear, self.compute_dtype
        )

        def update(projected_t, r, h_in, states, extra):
            # Computes in the compute dtype; returns h in the dtype of h_tm1.
            if extra:
                r = self.layer_norm(r, *extra)
            return [_ops.cast(activation(projected_t + r), states[0].dtype)]

        return recurrent_kernel, update, extra

    def get_config(self):
        return {
            **super().get_config(),
            "use_layer_norm": self.use_layer_norm,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        }


class SimpleRNN(RecurrentLayer):
    """Fully-connected RNN where the output is fed back as the next input.

    A drop-in replacement for ``keras.layers.SimpleRNN``: same arguments,
    same defaults, same weights (``kernel``, ``recurrent_kernel``, ``bias``),
    same outputs. On TensorFlow and PyTorch the input projection
    ``x_t W + b`` is computed for every time step in one matmul before the
    time loop. With ``use_layer_norm=True`` both matmuls are
    layer-normalised, with four more weights (see :class:`SimpleRNNCell`).

    Args:
        units: Positive integer, dimensionality of the output space.
        activation: Activation function. Default: ``tanh``.
        use_bias: Boolean, whether the layer uses a bias vector.
        kernel_initializer, recurrent_initializer, bias_initializer:
            Initializers of the three weights.
        kernel_regularizer, recurrent_regularizer, bias_regularizer:
            Regularizers of the three weights.
        activity_regularizer: Regularizer applied to the layer's output.
            (``keras.layers.SimpleRNN`` accepts but ignores it; here it is
            applied.)
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
        use_cudnn: Accepted for compatibility: ``"auto"`` and ``False`` run
            this layer's own loop; ``True`` raises, as there is no cuDNN path.
        use_layer_norm: Boolean, whether ``x_t W`` and ``h_{t-1} U`` are
            layer-normalised.
        layer_norm_epsilon: Float > 0 added to the variance in the layer
            normalisations.

    Call arguments:
        sequences: ``(batch, time, features)`` tensor.
        initial_state: optional list with one ``(batch, units)`` tensor.
        mask: optional ``(batch, time)`` boolean tensor.
        training: Whether dropout is active.

    Example:

    >>> layer = SimpleRNN(4, return_sequences=True)
    >>> layer(np.zeros((2, 3, 5))).shape
    (2, 3, 4)
    """

    use_layer_norm = cell_property("use_layer_norm")
    layer_norm_epsilon = cell_property("layer_norm_epsilon")

    cell_class = SimpleRNNCell

    def __init__(
        self,
        units,
        activation="tanh",
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
            seed=seed,
            use_layer_norm=use_layer_norm,
            layer_norm_epsilon=layer_norm_epsilon,
            dtype=kwargs.get("dtype"),
            trainable=kwargs.get("trainable", True),
            name="simple_rnn_cell",
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

"""What the three cells share: the step, cut into pieces the loops can run.

A cell does one step; the sequence layer drives the time loop (see
``keras_recurrent.loops``). Each cell defines these equation methods, which
its own ``call`` and the layer's loops all use, so the two cannot drift
apart:

- ``input_weights()`` and ``project(inputs, weights)``: the weights the input
  projection reads (kernel, then the input norm's gain and offset, then the
  input bias, each when present), as tensors, and the projection with them:
  ``inputs @ kernel (+ input bias)``, for one step ``(batch, features)`` or
  any number of them ``(..., features)``. ``project_inputs(inputs)`` is the
  projection with the cell's own weights;
- ``step_weights()``: the weights the step reads (recurrent kernel, and
  recurrent bias or peepholes), as tensors;
- ``step_parts(weights, recurrent_activation=None)``: ``(kernel, update,
  extra)``, the step cut in two: the recurrent matmul ``r = h_in @ kernel``,
  where ``h_in`` is ``h_{t-1}`` in the compute dtype times the recurrent
  dropout mask, and the rest, ``update(projected_t, r, h_in, states, extra)
  -> new_states``, which reads the other tensors it needs (biases,
  peepholes) from the list ``extra``. ``recurrent_activation`` replaces the
  cell's gate activation with the same function computed another way (the
  TensorFlow loop passes one that XLA keeps out of the next activation's
  fusion); the equations do not change.

``StepCell.make_step`` joins the pieces into one step. Taking the weights as
arguments lets a compiled loop receive them as inputs; the cut lets the
TensorFlow loop differentiate the step without the matmul, project the
inputs a piece of the sequence at a time, and compute the recurrent
kernel's gradient for a piece's time steps in one matmul.

Three class attributes describe a cell's equations to the loops, and each
holds only for the class that sets it (see :func:`declared`):

- ``fused_kernel()``: which fused kernel computes the cell's equations, with
  its weights (a :class:`FusedKernel`), or None;
- ``update_sums_inputs``: True when ``update`` reads ``projected_t`` and
  ``r`` only through their sum;
- ``step_from_config``: True when the step pieces depend on nothing but
  the cell's class and ``get_config()``, and read no variable of the cell
  (they get the weights as arguments), so that a loop compiled for one cell
  serves every cell of the same class and configuration.
"""

from collections.abc import Callable
from typing import NamedTuple

from keras import ops

from keras_recurrent import _ops

#: The methods that define a cell's equations.
EQUATIONS = (
    "call",
    "make_step",
    "project_inputs",
    "input_weights",
    "project",
    "step_weights",
    "step_parts",
)


class FusedKernel(NamedTuple):
    """A fused kernel that computes a cell's equations, as the cell claims.

    ``name`` is one of:

    - ``"rnn_tanh"``, ``"rnn_relu"``: ``h_t = phi(x_t W + h_{t-1} U + b)``;
    - ``"lstm"``: the LSTM without peepholes, gates ``i, f, c, o``, sigmoid
      gates and tanh;
    - ``"lstm_projected"``: the ``"lstm"`` with ``h_t = (o_t * tanh(c_t))
      P``, ``P`` of shape ``(units, projection_units)``, no bias and no
      clipping (PyTorch's ``nn.LSTM(proj_size=...)``);
    - ``"lstm_peephole"``: the ``"lstm"`` with peepholes, ``i_t`` and
      ``f_t`` reading ``c_{t-1} * p_i`` and ``c_{t-1} * p_f``, ``o_t``
      reading ``c_t * p_o``, and no projection (``keras_recurrent.LSTM``'s
      default; ONNX's ``LSTM`` with its input ``P``);
    - ``"lstm_layer_norm"``, ``"lstm_layer_norm_peephole"``: the ``"lstm"``
      and the ``"lstm_peephole"`` with ``x_t W``, ``h_{t-1} U`` and ``c_t``
      layer-normalised (see ``keras_recurrent.LSTMCell``); no backend has a
      fused kernel for them, and the JAX loop differentiates their step
      itself (``keras_recurrent.loops.jax``);
    - ``"gru"``: the GRU with the reset gate applied after the recurrent
      matmul, gates ``z, r, h``, sigmoid gates and tanh.

    ``weights()`` returns ``(kernel, recurrent_kernel, bias)`` in the cell's
    documented layout (``bias`` None without one; for ``"gru"`` of shape
    ``(2, 3 * units)``, input and recurrent bias), and for
    ``"lstm_projected"`` then ``P``, and for ``"lstm_peephole"`` then the
    ``(3, units)`` stack of ``p_i, p_f, p_o``; the layer-normalised LSTMs
    then give the gains and offsets of ``x_t W``, ``h_{t-1} U`` and ``c_t``,
    in that order. The weights are read when called.
    """

    name: str
    weights: Callable[[], tuple]


def _defined_by(cls, name):
    """The class in ``cls.__mro__`` whose own namespace defines ``name``."""
    return next((c for c in cls.__mro__ if name in vars(c)), None)


def declared(cell, name, default=None):
    """``getattr(cell, name)`` if the class that sets ``name`` also defines
    (or inherits unchanged) every equation method of ``cell``, else
    ``default``.

    A claim about a cell's equations holds for the class that makes it: a
    subclass that overrides an equation method does not inherit the claim
    unless it makes it again.
    """
    cls = type(cell)
    owner = _defined_by(cls, name)
    if owner is None:
        return default
    for method in EQUATIONS:
        definer = _defined_by(cls, method)
        if definer is not None and not issubclass(owner, definer):
            return default
    return getattr(cell, name)


def claimed_kernel(cell):
    """The :class:`FusedKernel` that computes ``cell``'s equations, or None."""
    fused_kernel = declared(cell, "fused_kernel")
    return None if fused_kernel is None else fused_kernel()


def runs_step_parts(cell):
    """Whether ``cell``'s ``call`` is the shared one, which runs its step
    pieces: false for a cell class that overrides ``call`` itself."""
    return _defined_by(type(cell), "call") is StepCell


class StepCell:
    """Mixin that gives a cell its ``call``: one step of its layer's loop."""

    #: True when ``update`` reads ``projected_t`` and ``r`` only through their
    #: sum, so that both have the same gradient (the TensorFlow loop keeps
    #: one); read through :func:`declared`.
    update_sums_inputs = False

    #: True when the step pieces depend only on the class and get_config();
    #: read through :func:`declared`.
    step_from_config = False

    def __setattr__(self, name, value):
        # Keras's cells make a SeedGenerator whatever their dropout; without
        # dropout none is read, and its uint32 state would be a variable of
        # every model, which TFLite's converter refuses (on JAX, where the
        # SavedModel carries every variable). See _skip_seed_without_dropout().
        if name == "seed_generator" and getattr(self, "_skip_seed", False):
            value = None
        super().__setattr__(name, value)

    def _skip_seed_without_dropout(self, dropout, recurrent_dropout):
        """Called before Keras's ``__init__`` with the cell's dropout rates:
        without dropout the cell keeps no SeedGenerator."""
        object.__setattr__(self, "_skip_seed", not (dropout or recurrent_dropout))

    def call(self, inputs, states, training=False):
        shape = _ops.shape_of(inputs)
        if len(shape) != 2 or _ops.dims_differ(shape[-1], self.kernel.shape[0]):
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

    def fused_kernel(self):
        """The fused kernel that computes this cell's equations (a
        :class:`FusedKernel`), or None. Holds for the class that defines it
        only: see :func:`declared`."""
        return None

    def layer_weights(self):
        """``(kernel, recurrent_kernel, bias)`` as tensors, ``bias`` None
        without ``use_bias``: the weights a :class:`FusedKernel` reads."""
        bias = ops.convert_to_tensor(self.bias) if self.use_bias else None
        return (
            ops.convert_to_tensor(self.kernel),
            ops.convert_to_tensor(self.recurrent_kernel),
            bias,
        )

    def build_layer_norm(self, widths):
        """Creates the gain ``<prefix>_norm_gamma`` (ones) and offset
        ``<prefix>_norm_beta`` (zeros) of each layer normalisation, for
        ``widths`` a dict ``{prefix: width}``, in its order."""
        for prefix, width in widths.items():
            for part, initializer in (("gamma", "ones"), ("beta", "zeros")):
                name = f"{prefix}_norm_{part}"
                weight = self.add_weight(
                    shape=(width,), name=name, initializer=initializer
                )
                setattr(self, name, weight)

    def input_weights(self):
        """The weights ``project`` reads, as tensors: the kernel, then the
        input norm's gain and offset with ``use_layer_norm``, then the input
        bias with ``use_bias``."""
        weights = [self.kernel]
        if self.use_layer_norm:
            weights += [self.kernel_norm_gamma, self.kernel_norm_beta]
        if self.use_bias:
            weights.append(self.input_bias())
        return tuple(ops.convert_to_tensor(w) for w in weights)

    def input_bias(self):
        """The bias added to ``x_t W``: ``bias``, for the cells with one."""
        return self.bias

    def project(self, inputs, weights):
        """``inputs @ kernel``, layer-normalised (``LN_x``) when
        ``use_layer_norm``, plus the input bias when ``use_bias``, with the
        tensors of ``input_weights()``."""
        kernel, *rest = weights
        projected = _ops.matmul(inputs, kernel)
        if self.use_layer_norm:
            gamma, beta, *rest = rest
            projected = self.layer_norm(projected, gamma, beta)
        if self.use_bias:
            projected = projected + rest[0]
        return projected

    def project_inputs(self, inputs):
        """``project`` with the cell's own weights."""
        return self.project(inputs, self.input_weights())

    def layer_norm(self, z, gamma, beta):
        """``LN(z) * gamma + beta`` over the last axis, with the cell's
        ``layer_norm_epsilon`` (see ``keras_recurrent._ops.layer_norm``)."""
        return _ops.layer_norm(z, gamma, beta, self.layer_norm_epsilon)

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

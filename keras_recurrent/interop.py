"""Weights in and out: PyTorch's ``torch.nn.RNN``/``LSTM``/``GRU``, and Keras 2.

PyTorch and Keras compute the same three recurrences with their weights laid
out differently:

- PyTorch keeps ``weight_ih (G * H, I)`` and ``weight_hh (G * H, H)``, the
  transposes of Keras's ``kernel (I, G * H)`` and ``recurrent_kernel (H, G *
  H)``, and two biases, ``bias_ih`` and ``bias_hh``;
- an LSTM's gates are in the same order, ``i, f, g, o`` (Keras ``i, f, c,
  o``), and for the RNN and the LSTM the two biases only ever appear summed,
  so Keras's one bias is their sum;
- a GRU's gates are ``r, z, n`` in PyTorch and ``z, r, h`` in Keras, and
  PyTorch's GRU is Keras's ``reset_after=True``:
  ``n_t = tanh(x_t W_n + b_in + r_t * (h_{t-1} U_n + b_hn))``, with Keras's
  bias ``(2, 3 * units)`` holding ``b_i*`` then ``b_h*``.

:func:`from_torch` and :func:`to_torch` move weights across, for any
number of layers and either direction, and refuse (``ValueError``) what the
other side cannot compute rather than convert it into something that
computes other numbers. PyTorch is imported only inside them: the rest of
the package, and this module, import without it, on every Keras backend.

Keras 2's LSTM and GRU cells (``tf.keras`` before Keras 3, and ``tf_keras``)
default to ``recurrent_activation="hard_sigmoid"``, which there is
``clip(0.2 * x + 0.5, 0, 1)``; Keras 3's ``"hard_sigmoid"`` is
``relu6(x + 3) / 6``, slope 1/6, and computes other numbers.
:func:`keras2_hard_sigmoid` is Keras 2's, registered for saving, and
:func:`from_keras2` rebuilds a Keras 2 recurrent layer as ours, with its
weights and Keras 2's activations.
"""

import keras
import numpy as np
from keras import ops

from keras_recurrent._base import RecurrentLayer
from keras_recurrent._cell import claimed_kernel
from keras_recurrent.gru import GRU, GRUCell
from keras_recurrent.lstm import LSTM, LSTMCell
from keras_recurrent.simple_rnn import SimpleRNN, SimpleRNNCell

__all__ = ["from_keras2", "from_torch", "keras2_hard_sigmoid", "to_torch"]


# -- Keras 2 ----------------------------------------------------------------


@keras.saving.register_keras_serializable(
    package="keras_recurrent", name="keras2_hard_sigmoid"
)
def keras2_hard_sigmoid(x):
    """Keras 2's hard sigmoid: ``clip(0.2 * x + 0.5, 0, 1)``.

    The default ``recurrent_activation`` of Keras 2's ``LSTMCell``,
    ``PeepholeLSTMCell``, ``GRUCell``, ``LSTM`` (v1) and ``GRU`` (v1).
    Keras 3's ``keras.activations.hard_sigmoid`` is ``relu6(x + 3) / 6``:
    slope 1/6, saturating at ``|x| = 3`` instead of 2.5, so a Keras 2 model's
    weights give other outputs with it. Pass this function as
    ``recurrent_activation`` to reproduce them; a ``.keras`` file that uses it
    loads with ``safe_mode=True`` once ``keras_recurrent`` is imported.

    Args:
        x: Input tensor.

    Returns:
        A tensor of the same shape and dtype as ``x``.
    """
    x = ops.convert_to_tensor(x)
    return ops.clip(x * ops.cast(0.2, x.dtype) + ops.cast(0.5, x.dtype), 0.0, 1.0)


# Keras 2 cell class names, and our layer and extra arguments for each.
_KERAS2_CELLS = {
    "SimpleRNNCell": (SimpleRNN, {}),
    "LSTMCell": (LSTM, {"use_peepholes": False}),
    "PeepholeLSTMCell": (LSTM, {"use_peepholes": True}),
    "GRUCell": (GRU, {}),
}
_KERAS2_LAYERS = {"SimpleRNN": "SimpleRNNCell", "LSTM": "LSTMCell", "GRU": "GRUCell"}
# The arguments of a Keras 2 cell or layer that carry over; the others
# (implementation, time_major, name, ...) do not describe the equations.
_KERAS2_CELL_ARGS = (
    "units",
    "activation",
    "recurrent_activation",
    "use_bias",
    "kernel_initializer",
    "recurrent_initializer",
    "bias_initializer",
    "unit_forget_bias",
    "kernel_regularizer",
    "recurrent_regularizer",
    "bias_regularizer",
    "kernel_constraint",
    "recurrent_constraint",
    "bias_constraint",
    "dropout",
    "recurrent_dropout",
    "reset_after",
)
_KERAS2_LAYER_ARGS = (
    "return_sequences",
    "return_state",
    "go_backwards",
    "stateful",
    "unroll",
    "activity_regularizer",
)


def from_keras2(layer):
    """Our layer equal to a Keras 2 recurrent layer, with its weights.

    Takes a built Keras 2 layer (``tf_keras``, or the Keras 2 that ships
    inside TensorFlow as ``tensorflow.python.keras``): ``SimpleRNN``,
    ``LSTM``, ``GRU``, or ``RNN`` over one ``SimpleRNNCell``, ``LSTMCell``,
    ``PeepholeLSTMCell`` or ``GRUCell``. It reads only the layer's
    ``get_config()`` and ``get_weights()``. The activation ``"hard_sigmoid"``
    (Keras 2's default gate activation) becomes :func:`keras2_hard_sigmoid`;
    Keras 2's other built-in activations (``tanh``, ``sigmoid``, ``relu``,
    ``linear``, ``elu``, ``selu``, ``softplus``, ``softsign``, ``swish``,
    ``gelu``, ...) are the same functions under the same names in Keras 3,
    and are resolved by name. The weight layouts are
    the same (a ``PeepholeLSTMCell``'s peepholes come last, as ours), so the
    weights are copied as they are.

    Args:
        layer: The Keras 2 layer, built.

    Returns:
        A built ``SimpleRNN``, ``LSTM`` or ``GRU`` of this package.

    Raises:
        ValueError: for another layer or cell, ``time_major=True``, or a
            layer that is not built.
    """
    config = layer.get_config()
    cell_name = _KERAS2_LAYERS.get(type(layer).__name__)
    cell_config = config
    if cell_name is None and "cell" in config:
        cell = config["cell"]
        cell_name, cell_config = cell.get("class_name"), cell.get("config", {})
    if cell_name not in _KERAS2_CELLS:
        raise ValueError(
            "from_keras2 takes a Keras 2 SimpleRNN, LSTM or GRU, or RNN over one "
            f"of {sorted(_KERAS2_CELLS)}. Received: {type(layer).__name__} "
            f"with cell {cell_name!r}"
        )
    if config.get("time_major", False):
        raise ValueError(
            "from_keras2 makes a batch-major layer; transpose the inputs and "
            "convert the layer with time_major=False. Received: time_major=True"
        )
    weights = layer.get_weights()
    if not weights:
        raise ValueError(
            "from_keras2 needs a built layer, whose weights it copies: call the "
            "Keras 2 layer once first. Received: a layer without weights"
        )
    ours_class, extra = _KERAS2_CELLS[cell_name]
    kwargs = {k: cell_config[k] for k in _KERAS2_CELL_ARGS if k in cell_config}
    kwargs.update({k: config[k] for k in _KERAS2_LAYER_ARGS if k in config})
    if cell_name == "GRUCell":
        kwargs.setdefault("reset_after", False)  # Keras 2's default
    for name in ("activation", "recurrent_activation"):
        if kwargs.get(name) == "hard_sigmoid":
            kwargs[name] = keras2_hard_sigmoid
    if ours_class is SimpleRNN:
        kwargs.pop("recurrent_activation", None)
    ours = ours_class(**kwargs, **extra, dtype=weights[0].dtype.name)
    ours.build((None, None, weights[0].shape[0]))
    ours.set_weights(weights)
    return ours


# -- PyTorch -----------------------------------------------------------------

# torch.nn module mode -> (our layer, extra arguments).
_FROM_TORCH = {
    "RNN_TANH": (SimpleRNN, {"activation": "tanh"}),
    "RNN_RELU": (SimpleRNN, {"activation": "relu"}),
    "LSTM": (LSTM, {"use_peepholes": False}),
    "GRU": (GRU, {"reset_after": True}),
}


def from_torch(module):
    """The Keras equivalent of a ``torch.nn.RNN``, ``LSTM`` or ``GRU``.

    Layer ``k`` of the module becomes one of this package's layers with
    ``return_sequences=True`` and the module's weights: ``SimpleRNN``
    (``nonlinearity`` tanh or relu), ``LSTM(use_peepholes=False)`` (with
    ``projection_units=proj_size`` and ``projection_kernel`` the transpose of
    ``weight_hr`` when the module has ``proj_size``) or
    ``GRU(reset_after=True)``, wrapped in ``keras.layers.Bidirectional(
    merge_mode="concat")`` when the module is bidirectional. PyTorch's two
    biases become Keras's one (the sum, for the RNN and the LSTM) or its two
    rows (the GRU), and the GRU's gates are reordered from ``r, z, n`` to
    ``z, r, h``.

    The result takes batch-major ``(batch, time, features)`` inputs whatever
    the module's ``batch_first``, and returns the module's whole output
    sequence, ``(batch, time, num_directions * hidden_size)`` (``proj_size``
    in place of ``hidden_size`` for a projected LSTM). Initial states
    are zeros unless passed, as in PyTorch: a single layer takes Keras's
    ``initial_state`` (for a bidirectional one, the forward states then the
    backward ones).

    Args:
        module: A ``torch.nn.RNN``, ``torch.nn.LSTM`` or ``torch.nn.GRU``,
            in float32 or float64.

    Returns:
        A built layer when the module has one layer; otherwise a built
        ``keras.Sequential`` of one layer per PyTorch layer, with a
        ``keras.layers.Dropout`` between them if the module has ``dropout``
        (which PyTorch, too, applies in training only).

    Raises:
        ValueError: for another module, or one in another dtype.

    Example:

    >>> module = torch.nn.LSTM(5, 4, num_layers=2, batch_first=True)
    >>> model = from_torch(module)  # a keras.Sequential of two LSTMs
    >>> model(np.zeros((2, 3, 5))).shape
    (2, 3, 4)
    """
    import torch

    if not isinstance(module, torch.nn.RNNBase) or module.mode not in _FROM_TORCH:
        raise ValueError(
            "from_torch takes a torch.nn.RNN, LSTM or GRU. "
            f"Received: module={type(module).__name__}"
        )
    dtype = keras.backend.standardize_dtype(module.weight_ih_l0.dtype)
    if dtype not in ("float32", "float64"):
        raise ValueError(
            "from_torch converts float32 and float64 modules; convert the "
            f"module with .float() first. Received: dtype={dtype}"
        )
    directions = 2 if module.bidirectional else 1
    blocks = []
    features = module.input_size
    for k in range(module.num_layers):
        if k and module.dropout:
            blocks.append(keras.layers.Dropout(module.dropout))
        blocks.append(_keras_block(module, k, features, dtype))
        features = directions * (_proj_size(module) or module.hidden_size)
    if len(blocks) == 1:
        return blocks[0]
    return keras.Sequential(
        [keras.Input((None, module.input_size), dtype=dtype), *blocks]
    )


def _keras_block(module, k, features, dtype):
    """Layer ``k`` of ``module`` as a built Keras layer (``Bidirectional``
    when the module is bidirectional), with its weights."""
    layer_class, extra = _FROM_TORCH[module.mode]
    if _proj_size(module):
        extra = {**extra, "projection_units": _proj_size(module)}
    layer = layer_class(
        module.hidden_size,
        use_bias=module.bias,
        return_sequences=True,
        dtype=dtype,
        **extra,
    )
    if module.bidirectional:
        layer = keras.layers.Bidirectional(layer, merge_mode="concat", dtype=dtype)
    layer.build((None, None, features))
    for direction, suffix in zip(_directions(layer), ("", "_reverse")):
        for name, value in _keras_weights(module, f"_l{k}{suffix}").items():
            getattr(direction.cell, name).assign(value)
    return layer


def _keras_weights(module, suffix):
    """``{name: array}``: the Keras cell's weights by name, in Keras's
    layout, from the PyTorch parameters whose names end in ``suffix``."""

    def get(name):
        return getattr(module, name + suffix).detach().cpu().numpy()

    is_gru = module.mode == "GRU"
    order = _torch_to_keras_gates if is_gru else (lambda w: w)
    weights = {
        "kernel": order(get("weight_ih")).T,
        "recurrent_kernel": order(get("weight_hh")).T,
    }
    if module.bias:
        b_ih, b_hh = get("bias_ih"), get("bias_hh")
        weights["bias"] = (
            np.stack([order(b_ih), order(b_hh)]) if is_gru else b_ih + b_hh
        )
    if _proj_size(module):
        weights["projection_kernel"] = get("weight_hr").T
    return weights


def _proj_size(module):
    """An LSTM's ``proj_size``; 0 (none) for the others."""
    return getattr(module, "proj_size", 0)


def _torch_to_keras_gates(weight):
    """A PyTorch GRU weight's gate blocks (first axis) from r, z, n to z, r, h."""
    r, z, n = np.split(weight, 3, axis=0)
    return np.concatenate([z, r, n], axis=0)


def _keras_to_torch_gates(weight):
    """A Keras GRU weight's gate blocks (last axis) from z, r, h to r, z, n."""
    z, r, h = np.split(weight, 3, axis=-1)
    return np.concatenate([r, z, h], axis=-1)


# Options of our cells (present or to come) that PyTorch's recurrences do not
# have, with the value that means "off"; read with getattr, so a cell that
# lacks one has it off.
_VARIANT_OPTIONS = {
    "use_peepholes": False,
    "use_layer_norm": False,
    "cell_clip": None,
    "projection_clip": None,
}


def to_torch(layer):
    """The ``torch.nn`` module that computes what a Keras recurrent layer does.

    Takes a built ``SimpleRNN``, ``LSTM`` or ``GRU``, this package's or
    ``keras.layers``', or a ``keras.layers.Bidirectional`` of one with
    ``merge_mode="concat"``, whose equations PyTorch has, or a
    ``keras.Sequential`` of such layers, alike but for their weights, with
    the same ``keras.layers.Dropout`` (or none) between each two (what
    :func:`from_torch` returns for a stacked module):

    - ``SimpleRNN`` with ``activation`` tanh or relu: ``torch.nn.RNN``;
    - ``LSTM`` without peepholes, layer norm or clipping,
      ``activation="tanh"`` and ``recurrent_activation="sigmoid"``:
      ``torch.nn.LSTM``, with ``proj_size=projection_units`` (and
      ``weight_hr`` the transpose of ``projection_kernel``) for a projected
      one;
    - ``GRU`` with ``reset_after=True`` and the same activations:
      ``torch.nn.GRU``.

    The module has ``batch_first=True``, ``num_layers`` the number of layers
    (1 for a layer), their ``dropout``, the layers' dtype (float32 or
    float64), ``bias=use_bias`` and the layers' weights: Keras's one bias
    goes into ``bias_ih`` with ``bias_hh`` zero (RNN, LSTM), or its two rows
    into ``bias_ih`` and ``bias_hh`` (GRU), and the GRU's gates are reordered
    from ``z, r, h`` to ``r, z, n``. Called on the same inputs (and initial
    states, stacked on a first axis), it returns the layer's whole output
    sequence and its final states. Dropout, which Keras applies in training
    only, is not carried over.

    Args:
        layer: The Keras layer, or ``keras.Sequential`` of them, built.

    Returns:
        A ``torch.nn.RNN``, ``torch.nn.LSTM`` or ``torch.nn.GRU`` on the CPU.

    Raises:
        ValueError: for a layer PyTorch cannot compute, naming the argument
            and its value (``use_peepholes=True``, ``reset_after=False``,
            ``recurrent_activation=...``, ``go_backwards=True``,
            ``merge_mode=...``, ``dtype_policy=mixed_float16``, ...), for a
            stack whose layers differ or whose dropout PyTorch cannot
            apply, or for a layer that is not built.

    Example:

    >>> layer = keras_recurrent.GRU(4, return_sequences=True)
    >>> _ = layer(np.zeros((2, 3, 5)))  # builds it
    >>> module = to_torch(layer)  # torch.nn.GRU(5, 4, batch_first=True)
    >>> module(torch.zeros(2, 3, 5))[0].shape
    torch.Size([2, 3, 4])
    """
    import torch

    if isinstance(layer, keras.Sequential):
        blocks, dropout = _stack(layer)
    else:
        blocks, dropout = [layer], 0.0
    checked = [_check_block(block) for block in blocks]
    _check_alike("every layer of a stack", [_describe(*block) for block in checked])
    mode, cell, directions = checked[0]
    module_class, extra = {
        "RNN_TANH": (torch.nn.RNN, {"nonlinearity": "tanh"}),
        "RNN_RELU": (torch.nn.RNN, {"nonlinearity": "relu"}),
        "LSTM": (torch.nn.LSTM, {"proj_size": _projection_units(cell)}),
        "GRU": (torch.nn.GRU, {}),
    }[mode]
    module = module_class(
        cell.kernel.shape[0],
        cell.units,
        num_layers=len(blocks),
        bias=bool(cell.use_bias),
        batch_first=True,
        dropout=dropout,
        bidirectional=len(directions) == 2,
        dtype=getattr(torch, keras.backend.standardize_dtype(cell.kernel.dtype)),
        **extra,
    )
    with torch.no_grad():
        for k, (_, _, directions) in enumerate(checked):
            for direction, suffix in zip(directions, ("", "_reverse")):
                for name, value in _torch_weights(direction.cell, mode == "GRU"):
                    parameter = getattr(module, f"{name}_l{k}{suffix}")
                    parameter.copy_(torch.from_numpy(value))
    return module


def _stack(model):
    """``(blocks, dropout)``: the recurrent layers of a ``keras.Sequential``,
    and the rate of the ``Dropout`` between each two of them (0 for none),
    which PyTorch's ``dropout`` applies after every layer but the last."""
    blocks, rates, rate = [], [], 0.0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dropout) and blocks and not rate:
            rate = float(layer.rate)
            continue
        if isinstance(layer, keras.layers.Dropout):
            raise ValueError(
                "to_torch converts a Sequential with at most one Dropout between "
                "two recurrent layers, as PyTorch's dropout is. Received: "
                f"layer={layer.name!r}"
            )
        if blocks:
            rates.append(rate)
            rate = 0.0
        blocks.append(layer)
    if rate or len(set(rates)) > 1 or not blocks:
        raise ValueError(
            "to_torch converts a Sequential of recurrent layers with the same "
            "Dropout (or none) between each two and none after the last, as "
            "PyTorch's dropout is. Received: dropout rates "
            f"{[*rates, rate] if rate else rates} between {len(blocks)} layers"
        )
    return blocks, rates[0] if rates else 0.0


def _check_block(layer):
    """``(mode, cell, directions)`` for one layer of a stack, or the only
    one, after checking that PyTorch computes it."""
    directions = _directions(layer)
    mode, cell = _torch_mode(directions[0])
    if len(directions) == 2:
        backward = _torch_mode(directions[1])
        _check_alike(
            "both directions of a Bidirectional",
            [_describe(mode, cell), _describe(*backward)],
        )
    if getattr(cell, "kernel", None) is None:
        raise ValueError(
            "to_torch needs a built layer, whose weights it copies. Received: "
            f"layer {layer.name!r}, not built"
        )
    # A layer that computes in another dtype than its variables' (mixed
    # precision) would compute other numbers than a module in theirs.
    dtype = keras.backend.standardize_dtype(cell.kernel.dtype)
    if dtype not in ("float32", "float64") or cell.compute_dtype != dtype:
        raise ValueError(
            "to_torch converts layers that compute in float32 or float64. "
            f"Received: dtype_policy={cell.dtype_policy.name}"
        )
    return mode, cell, directions


def _describe(mode, cell, directions=(None,)):
    """What PyTorch's layers and directions share: all but their weights
    (and the first layer's input size)."""
    projection = getattr(cell, "projection_units", None)
    return (
        f"{mode}(units={cell.units}, use_bias={cell.use_bias}, "
        f"projection_units={projection}, dtype={cell.dtype_policy.name}, "
        f"directions={len(directions)})"
    )


def _check_alike(where, descriptions):
    for index, description in enumerate(descriptions):
        if description != descriptions[0]:
            raise ValueError(
                f"to_torch needs the same recurrence in {where}. Received: "
                f"{descriptions[0]} and, at {index}, {description}"
            )


def _projection_units(cell):
    """The LSTM cell's ``projection_units``, 0 for none, after checking that
    PyTorch takes it: its ``proj_size`` must be smaller than ``hidden_size``."""
    projection_units = getattr(cell, "projection_units", None) or 0
    if projection_units >= cell.units:
        raise ValueError(
            "to_torch converts a projection smaller than the cell, as PyTorch's "
            f"proj_size must be smaller than hidden_size={cell.units}. Received: "
            f"projection_units={projection_units}"
        )
    return projection_units


def _directions(layer):
    """The forward layer, and the backward one for a ``Bidirectional``."""
    if isinstance(layer, keras.layers.Bidirectional):
        if layer.merge_mode != "concat":
            raise ValueError(
                "to_torch converts a Bidirectional with merge_mode='concat', "
                "which is how PyTorch joins the two directions. Received: "
                f"merge_mode={layer.merge_mode!r}"
            )
        forward, backward = layer.forward_layer, layer.backward_layer
        _check_go_backwards(forward, False)
        _check_go_backwards(backward, True)
        return forward, backward
    _check_go_backwards(layer, False)
    return (layer,)


def _check_go_backwards(layer, expected):
    if getattr(layer, "go_backwards", False) != expected:
        where = "the backward layer of a Bidirectional" if expected else "a layer"
        raise ValueError(
            f"to_torch converts {where} with go_backwards={expected} only: a "
            "PyTorch module's output is in the inputs' time order. Received: "
            f"go_backwards={not expected}"
        )


def _torch_mode(layer):
    """``(mode, cell)``: PyTorch's name for the layer's recurrence, after
    checking that PyTorch computes exactly its equations."""
    cell = getattr(layer, "cell", None)
    kind = _kind(layer, cell)
    for option, off in _VARIANT_OPTIONS.items():
        value = getattr(cell, option, off)
        if value != off:
            raise ValueError(
                f"to_torch cannot convert {type(layer).__name__} {layer.name!r}: "
                f"PyTorch's recurrences have no {option}. Received: "
                f"{option}={value!r}"
            )
    if kind == "GRU" and not cell.reset_after:
        raise ValueError(
            "to_torch converts a GRU with reset_after=True only: PyTorch's GRU "
            "applies the reset gate after the recurrent matmul. Received: "
            "reset_after=False"
        )
    if kind == "RNN":
        mode = {
            keras.activations.tanh: "RNN_TANH",
            keras.activations.relu: "RNN_RELU",
        }.get(cell.activation)
        if mode is None:
            _refuse_activation("activation", cell.activation, "tanh or relu")
    else:
        mode = kind
        if cell.activation is not keras.activations.tanh:
            _refuse_activation("activation", cell.activation, "tanh")
        if cell.recurrent_activation is not keras.activations.sigmoid:
            _refuse_activation(
                "recurrent_activation", cell.recurrent_activation, "sigmoid"
            )
    if isinstance(layer, RecurrentLayer) and claimed_kernel(cell) is None:
        # Ours: the cell itself says whether it computes these equations; a
        # subclass that changes them does not claim PyTorch's kernel.
        raise ValueError(
            f"to_torch cannot convert {type(layer).__name__} {layer.name!r}: its "
            f"cell class {type(cell).__name__} changes the equations. Received: "
            f"cell={type(cell).__name__}"
        )
    return mode, cell


# (layer class, cell class) pairs PyTorch has, by PyTorch's kind.
_KINDS = {
    "RNN": (
        (SimpleRNN, SimpleRNNCell),
        (keras.layers.SimpleRNN, keras.layers.SimpleRNNCell),
    ),
    "LSTM": ((LSTM, LSTMCell), (keras.layers.LSTM, keras.layers.LSTMCell)),
    "GRU": ((GRU, GRUCell), (keras.layers.GRU, keras.layers.GRUCell)),
}


def _kind(layer, cell):
    for kind, pairs in _KINDS.items():
        for layer_class, cell_class in pairs:
            if isinstance(layer, layer_class) and isinstance(cell, cell_class):
                return kind
    raise ValueError(
        "to_torch converts a SimpleRNN, LSTM or GRU (keras_recurrent's or "
        "keras.layers'), or a Bidirectional of one. Received: "
        f"layer={type(layer).__name__}"
    )


def _refuse_activation(name, function, expected):
    function_name = getattr(function, "__name__", repr(function))
    raise ValueError(
        f"to_torch cannot convert `{name}`: PyTorch computes it as {expected}. "
        f"Received: {name}={function_name}"
    )


def _torch_weights(cell, is_gru):
    """``[(name, array)]``: the PyTorch parameters (without the layer
    suffix) from a Keras cell's weights."""
    order = _keras_to_torch_gates if is_gru else (lambda w: w)
    kernel = keras.ops.convert_to_numpy(cell.kernel)
    recurrent_kernel = keras.ops.convert_to_numpy(cell.recurrent_kernel)
    weights = [
        ("weight_ih", np.ascontiguousarray(order(kernel).T)),
        ("weight_hh", np.ascontiguousarray(order(recurrent_kernel).T)),
    ]
    if cell.use_bias:
        bias = keras.ops.convert_to_numpy(cell.bias)
        if is_gru:
            weights += [("bias_ih", order(bias[0])), ("bias_hh", order(bias[1]))]
        else:
            weights += [("bias_ih", bias), ("bias_hh", np.zeros_like(bias))]
    if _projection_units(cell):
        projection = keras.ops.convert_to_numpy(cell.projection_kernel)
        weights.append(("weight_hr", np.ascontiguousarray(projection.T)))
    return weights

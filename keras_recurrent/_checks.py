"""Argument checks shared by the cells and sequence layers.

Every check raises early, names the argument and shows the value received,
in Keras's own style: ``"... Received: units=-3"``.
"""

import numbers

import keras


def check_units(units):
    if isinstance(units, bool) or not isinstance(units, numbers.Integral) or units < 1:
        raise ValueError(
            f"Argument `units` must be a positive integer. Received: units={units!r}"
        )
    return int(units)


def check_rate(name, rate):
    if (
        isinstance(rate, bool)
        or not isinstance(rate, numbers.Real)
        or not 0.0 <= rate < 1.0
    ):
        raise ValueError(
            f"Argument `{name}` must be a float in the range [0, 1). "
            f"Received: {name}={rate!r}"
        )
    return float(rate)


def check_bool(name, value):
    if not isinstance(value, bool):
        raise TypeError(
            f"Argument `{name}` must be a boolean. Received: {name}={value!r}"
        )
    return value


def check_positive_or_none(name, value):
    """A float > 0, or None (the option off)."""
    return None if value is None else check_positive(name, value, "None or ")


def check_positive_int_or_none(name, value):
    """An integer > 0, or None (the option off)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(
            f"Argument `{name}` must be None or a positive integer. "
            f"Received: {name}={value!r}"
        )
    return int(value)


def check_positive(name, value, alternatives=""):
    """A float > 0 (``alternatives`` names what else the argument takes)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(
            f"Argument `{name}` must be {alternatives}a float > 0. "
            f"Received: {name}={value!r}"
        )
    return float(value)


def check_use_cudnn(use_cudnn, reason):
    if use_cudnn != "auto" and not isinstance(use_cudnn, bool):
        raise ValueError(
            "Argument `use_cudnn` must be one of 'auto', True or False. "
            f"Received: use_cudnn={use_cudnn!r}"
        )
    if use_cudnn is True:
        raise ValueError(
            f"Argument `use_cudnn=True` cannot be honoured: {reason} Pass "
            "use_cudnn='auto' or False to run the keras_recurrent recurrence. "
            "Received: use_cudnn=True"
        )
    return use_cudnn


_GETTERS = {
    "activation": keras.activations.get,
    "initializer": keras.initializers.get,
    "regularizer": keras.regularizers.get,
    "constraint": keras.constraints.get,
}

_BOOLEANS = frozenset(
    {
        "use_bias",
        "unit_forget_bias",
        "reset_after",
        "use_peepholes",
        "use_layer_norm",
        "return_sequences",
        "return_state",
        "go_backwards",
        "stateful",
        "unroll",
    }
)


def _check_identifier(name, value):
    kind = name.rsplit("_", 1)[-1]
    try:
        _GETTERS[kind](value)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"Argument `{name}` is not a known {kind} ({error}). "
            f"Received: {name}={value!r}"
        ) from None


def check_arguments(arguments):
    """Checks constructor arguments by name, before Keras sees any of them.

    Called first thing in each ``__init__`` with ``locals()``; names it does
    not know (``self``, ``kwargs``, ``seed`` ...) pass through.
    """
    for name, value in arguments.items():
        if name == "units":
            check_units(value)
        elif name in ("dropout", "recurrent_dropout"):
            check_rate(name, value)
        elif name in ("cell_clip", "projection_clip"):
            check_positive_or_none(name, value)
        elif name == "projection_units":
            check_positive_int_or_none(name, value)
        elif name == "layer_norm_epsilon":
            check_positive(name, value)
        elif name in _BOOLEANS:
            check_bool(name, value)
        elif name.rsplit("_", 1)[-1] in _GETTERS:
            _check_identifier(name, value)

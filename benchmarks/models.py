"""The models that the benchmarks time: their sizes, and each layer against
the built-in it is timed with, built alike.

``benchmarks.rnn`` times them, ``benchmarks.memory`` measures one in a
process of its own, ``benchmarks.export`` times them after export.
"""

# name: (batch, steps, features, units)
SIZES = {
    "S1": (32, 100, 32, 128),
    "S2": (128, 100, 64, 256),
    "S3": (1, 1000, 16, 64),
    "S4": (256, 50, 128, 512),
}
QUICK_SIZES = {"Q1": (8, 20, 8, 16)}
# name: (ours, built-in, gates, our extra arguments); "half" is units // 2.
LAYERS = {
    "simple_rnn": ("SimpleRNN", "SimpleRNN", 1, {}),
    "gru": ("GRU", "GRU", 3, {"reset_after": True}),
    "lstm": ("LSTM", "LSTM", 4, {"use_peepholes": False}),
    "peephole_lstm": ("LSTM", "LSTM", 4, {"use_peepholes": True}),
    "layer_norm_lstm": (
        "LSTM",
        "LSTM",
        4,
        {"use_peepholes": False, "use_layer_norm": True},
    ),
    "projection_lstm": (
        "LSTM",
        "LSTM",
        4,
        {"use_peepholes": False, "projection_units": "half"},
    ),
}
# The layers that compute the built-in's equations; the others (variants the
# built-ins lack) are timed against the built-in LSTM, to show what they cost.
SAME_AS_BUILTIN = ("simple_rnn", "gru", "lstm")


def resolve_size(name):
    if name in SIZES:
        return SIZES[name]
    if name in QUICK_SIZES:
        return QUICK_SIZES[name]
    try:
        batch, steps, features, units = (int(v) for v in name.split("/"))
    except ValueError:
        raise SystemExit(
            f"--sizes takes S1..S4 or B/T/F/H. Received: --sizes {name}"
        ) from None
    return batch, steps, features, units


def build_model(keras, kr, layer, size, jit_compile, side, masked=False):
    """The built-in model (``side="builtin"``) or ours: the layer and a Dense
    head, after a ``Masking`` layer when ``masked``, compiled with Adam and
    MSE."""
    ours_name, builtin_name, _, extra = LAYERS[layer]
    batch, steps, features, units = size
    if side == "builtin":
        recurrent = getattr(keras.layers, builtin_name)(units)
    else:
        extra = {k: units // 2 if v == "half" else v for k, v in extra.items()}
        recurrent = getattr(kr, ours_name)(units, **extra)
    masking = [keras.layers.Masking(0.0)] if masked else []
    model = keras.Sequential(
        [
            keras.Input((steps, features), batch_size=batch),
            *masking,
            recurrent,
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer="adam", loss="mse", jit_compile=jit_compile)
    return model


def build_models(keras, kr, layer, size, jit_compile, masked=False):
    """The built-in model and ours, alike, with the built-in's weights in ours."""
    builtin, ours = (
        build_model(keras, kr, layer, size, jit_compile, side, masked)
        for side in ("builtin", "ours")
    )
    # The built-in's kernel, recurrent kernel, bias and Dense head, where
    # ours has them in the same shape; a variant's own weights stay as drawn.
    theirs, weights = builtin.get_weights(), ours.get_weights()
    for index in (0, 1, 2, -2, -1):
        if weights[index].shape == theirs[index].shape:
            weights[index] = theirs[index]
    ours.set_weights(weights)
    return builtin, ours

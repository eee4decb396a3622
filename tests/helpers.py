"""Small helpers the tests share: building a layer next to its Keras built-in."""

import keras
import numpy as np

import keras_recurrent as kr

# name -> (ours, built-in, constructor arguments that make them the same layer)
PAIRS = {
    "simple_rnn": (kr.SimpleRNN, keras.layers.SimpleRNN, {}),
    "lstm": (kr.LSTM, keras.layers.LSTM, {"use_peepholes": False}),
    "gru": (kr.GRU, keras.layers.GRU, {"reset_after": True}),
    "gru_reset_before": (kr.GRU, keras.layers.GRU, {"reset_after": False}),
}
CELL_PAIRS = {
    "simple_rnn": (kr.SimpleRNNCell, keras.layers.SimpleRNNCell, {}),
    "lstm": (kr.LSTMCell, keras.layers.LSTMCell, {"use_peepholes": False}),
    "gru": (kr.GRUCell, keras.layers.GRUCell, {"reset_after": True}),
    "gru_reset_before": (kr.GRUCell, keras.layers.GRUCell, {"reset_after": False}),
}
NUM_STATES = {"simple_rnn": 1, "lstm": 2, "gru": 1, "gru_reset_before": 1}

ATOL = 1e-5


def builtin_kwargs(kwargs):
    """The arguments a Keras built-in accepts: ours minus the peephole ones."""
    return {k: v for k, v in kwargs.items() if not k.startswith(("use_peep", "peep"))}


def random_inputs(batch=3, time=6, features=5, seed=0, dtype="float32"):
    return (
        np.random.default_rng(seed).normal(size=(batch, time, features)).astype(dtype)
    )


def random_states(name, batch=3, units=4, seed=1):
    rng = np.random.default_rng(seed)
    return [
        rng.normal(size=(batch, units)).astype("float32")
        for _ in range(NUM_STATES[name])
    ]


def layer_pair(name, units=4, features=5, batch=None, **kwargs):
    """Ours and the built-in, configured alike, built, with the same weights.

    The built-in's weights (random, with a random nonzero bias) are copied
    into ours, so every comparison runs on weights that neither side chose.
    """
    ours_cls, builtin_cls, fixed = PAIRS[name]
    kwargs = {**fixed, **kwargs}
    builtin = builtin_cls(units, **builtin_kwargs(kwargs))
    ours = ours_cls(units, **kwargs)
    shape = (batch, None, features)  # stateful layers need a fixed batch
    builtin.build(shape)
    ours.build(shape)
    rng = np.random.default_rng(7)
    weights = [
        w + rng.normal(scale=0.1, size=w.shape).astype(w.dtype)
        for w in builtin.get_weights()
    ]
    builtin.set_weights(weights)
    ours.set_weights(weights)
    return ours, builtin


def assert_all_close(actual, expected, atol=ATOL, rtol=0.0):
    actual = actual if isinstance(actual, (list, tuple)) else [actual]
    expected = expected if isinstance(expected, (list, tuple)) else [expected]
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(a),
            keras.ops.convert_to_numpy(e),
            atol=atol,
            rtol=rtol,
        )


def gradients(loss_fn, tensors):
    """Gradients of the scalar ``loss_fn(*tensors)`` with respect to ``tensors``.

    ``tensors`` may hold arrays (inputs, states) and Keras variables (weights),
    as the backend's own autodiff sees them.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        values = [
            t if isinstance(t, keras.Variable) else tf.constant(t) for t in tensors
        ]
        with tf.GradientTape() as tape:
            for v in values:
                tape.watch(v.value if isinstance(v, keras.Variable) else v)
            loss = loss_fn(*values)
        targets = [v.value if isinstance(v, keras.Variable) else v for v in values]
        return [g.numpy() for g in tape.gradient(loss, targets)]
    raise NotImplementedError(f"No gradient helper for backend {backend!r} yet")

"""Mixed precision and float64: dtypes, long sequences, agreement with float32.

Under ``"mixed_float16"`` and ``"mixed_bfloat16"`` the variables are float32,
the matmuls and gates run in float16 / bfloat16, and the time loop carries
the states in float32 (see ``RecurrentLayer``): the LSTM cell state and the
GRU state are running sums, and in the low precision every step would round
away the part of the update below half a unit in the last place.

Tolerances against the same layer in float32 (same weights, same inputs):
five units in the last place at 1 of the compute dtype, ``5 * 2**-10``
(about 4.9e-3) for float16 and ``5 * 2**-7`` (about 3.9e-2) for bfloat16:
inputs, weights and every gate are rounded to it. On a 50-step sequence the
largest differences seen are about 2e-3 and 1.4e-2. In float64 the layers
must agree with float32 to ``helpers.ATOL`` (float32's own rounding).
"""

import keras
import ml_dtypes
import numpy as np
import pytest
import reference
from helpers import ATOL, LAYERS, assert_all_close, random_inputs

import keras_recurrent as kr

# policy -> (compute dtype, tolerance against float32)
MIXED = {
    "mixed_float16": ("float16", 5 * 2**-10),
    "mixed_bfloat16": ("bfloat16", 5 * 2**-7),
}
UNITS, FEATURES = 8, 5
NUMPY_DTYPES = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16}


def _dtype(x):
    return keras.backend.standardize_dtype(x.dtype)


def _layer(name, dtype, weights=None, **kwargs):
    config = LAYERS[name]
    layer = config.layer(
        UNITS,
        dtype=dtype,
        return_sequences=True,
        return_state=True,
        **config.kwargs,
        **kwargs,
    )
    layer.build((None, None, FEATURES))
    if weights is not None:
        layer.set_weights([w.astype(layer.variable_dtype) for w in weights])
    return layer


def _float32_twin(name, seed=3):
    """A float32 layer with random weights (biases and peepholes nonzero)."""
    layer = _layer(name, "float32")
    rng = np.random.default_rng(seed)
    layer.set_weights(
        [
            w + rng.normal(scale=0.1, size=w.shape).astype(w.dtype)
            for w in layer.get_weights()
        ]
    )
    return layer


def _as_float32(values):
    return [keras.ops.convert_to_numpy(keras.ops.cast(v, "float32")) for v in values]


# -- mixed precision ------------------------------------------------------------


@pytest.mark.parametrize("policy", list(MIXED))
@pytest.mark.parametrize("name", list(LAYERS))
def test_mixed_policy_keeps_float32_variables_and_matches_float32(name, policy):
    compute_dtype, tolerance = MIXED[policy]
    twin = _float32_twin(name)
    layer = _layer(name, policy, twin.get_weights())
    assert layer.compute_dtype == compute_dtype
    assert {_dtype(w) for w in layer.weights} == {"float32"}

    x = random_inputs(time=50, features=FEATURES)
    out = layer(x)
    assert {_dtype(o) for o in out} == {compute_dtype}
    expected = [keras.ops.convert_to_numpy(o) for o in twin(x)]
    assert_all_close(_as_float32(out), expected, atol=tolerance)


@pytest.mark.parametrize("policy", list(MIXED))
@pytest.mark.parametrize("name", list(LAYERS))
def test_cells_in_keras_rnn_under_mixed_policy(name, policy):
    """Keras's own loop carries the states in the compute dtype; the cell's
    step must hand them back in that dtype (JAX's scan insists on it)."""
    compute_dtype, tolerance = MIXED[policy]
    config = LAYERS[name]
    twin = _float32_twin(name)
    rnn = keras.layers.RNN(
        config.cell(UNITS, dtype=policy, **config.kwargs),
        return_sequences=True,
        return_state=True,
        dtype=policy,
    )
    rnn.build((None, None, FEATURES))
    rnn.set_weights(twin.get_weights())
    x = random_inputs(time=20, features=FEATURES)
    out = rnn(x)
    assert {_dtype(o) for o in out} == {compute_dtype}
    expected = [keras.ops.convert_to_numpy(o) for o in twin(x)]
    assert_all_close(_as_float32(out), expected, atol=tolerance)


# -- the state over a long sequence ------------------------------------------

T_LONG = 1000
DELTAS = np.array([3e-4, 7e-4, 1.1e-3])  # per-step growth of the LSTM cell state
RATE = 2.0**-8  # GRU: 1 - z


def _integrating_lstm(dtype):
    """Input and forget gates saturated at 1, the candidate tanh(delta): the
    cell state (state 2) grows by the same increment at every step."""
    units = len(DELTAS)
    kernel = np.zeros((1, 4 * units))
    kernel[0, 2 * units : 3 * units] = DELTAS
    bias = np.zeros(4 * units)
    bias[: 2 * units] = 30.0  # sigmoid(30) == 1 in every float dtype
    layer = kr.LSTM(units, dtype=dtype, return_state=True)
    layer.build((None, None, 1))
    layer.set_weights(
        [kernel, np.zeros((units, 4 * units)), bias] + [np.zeros(units)] * 3
    )
    return layer, 2


def _integrating_gru(dtype):
    """z close to 1 and a candidate of 1: h (state 1) creeps towards 1."""
    units = 3
    kernel = np.zeros((1, 3 * units))
    kernel[0, 2 * units :] = 20.0  # tanh(20) == 1
    bias = np.zeros((2, 3 * units))
    bias[0, :units] = np.log((1 - RATE) / RATE)
    layer = kr.GRU(units, dtype=dtype, return_state=True)
    layer.build((None, None, 1))
    layer.set_weights([kernel, np.zeros((units, 3 * units)), bias])
    return layer, 1


def _closed_form(kind, first, steps, dtype=None):
    """The state after ``steps`` steps, given the state after the first one
    (the increment of c, or the rate 1 - z, as the layer's gates compute it
    in the low precision). With ``dtype`` the state is rounded to it at every
    step: what a loop that carries the states in the compute dtype gets."""
    if dtype is None:
        return steps * first if kind == "lstm" else 1 - (1 - first) ** steps
    low = NUMPY_DTYPES[dtype]
    state = np.zeros_like(first, dtype=low)
    if kind == "lstm":
        for _ in range(steps):
            state = (state + first.astype(low)).astype(low)
    else:
        z = (1 - first).astype(low)
        for _ in range(steps):
            state = (z * state + (1 - z)).astype(low)
    return state.astype("float64")


@pytest.mark.parametrize("policy", list(MIXED))
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_state_survives_a_long_sequence(kind, policy):
    """Over 1,000 steps of small updates the state (the cell state c of the
    LSTM, h of the GRU) ends where the closed form says, to 1%. A state
    carried in the compute dtype ends far off (shown in NumPy), so the test
    can tell the two apart."""
    compute_dtype, _ = MIXED[policy]
    layer, index = (_integrating_lstm if kind == "lstm" else _integrating_gru)(policy)
    x = np.ones((2, T_LONG, 1), "float32")
    first = _as_float32([layer(x[:, :1])[index]])[0].astype("float64")
    assert np.all(first > 1e-4) and np.all(first < 1e-2), first
    expected = _closed_form(kind, first, T_LONG)
    state = _as_float32([layer(x)[index]])[0]
    rtol = 1e-2
    np.testing.assert_allclose(state, expected, rtol=rtol)
    carried_low = _closed_form(kind, first, T_LONG, compute_dtype)
    assert np.max(np.abs(carried_low - expected) / expected) > 3 * rtol


# -- training -----------------------------------------------------------------


def _deep_model(dtype):
    return keras.Sequential(
        [
            keras.Input((T_LONG, 3)),
            kr.LSTM(4, return_sequences=True, dtype=dtype),
            kr.GRU(4, return_sequences=True, dtype=dtype),
            kr.SimpleRNN(4, dtype=dtype),
            keras.layers.Dense(1, dtype=dtype),
        ]
    )


@pytest.mark.float64
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16", "float64"])
def test_trains_on_a_long_sequence_without_nan(policy):
    variable_dtype = "float64" if policy == "float64" else "float32"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, T_LONG, 3)).astype("float32")
    y = rng.normal(size=(2, 1)).astype("float32")
    model = _deep_model(policy)
    # Keras wraps the optimizer in a LossScaleOptimizer under mixed_float16.
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    before = model.get_weights()
    loss = float(model.train_on_batch(x, y))
    after = model.get_weights()
    prediction = keras.ops.convert_to_numpy(model.predict_on_batch(x))
    assert np.isfinite(loss)
    assert np.all(np.isfinite(prediction.astype("float32")))
    assert {_dtype(w) for w in model.weights} == {variable_dtype}
    for w_before, w_after in zip(before, after):
        assert np.all(np.isfinite(w_after))
        assert not np.array_equal(w_before, w_after)


# -- float64 ------------------------------------------------------------------


@pytest.mark.float64
@pytest.mark.parametrize("name", list(LAYERS))
def test_float64_layers_and_cells_compute_in_float64(name):
    twin = _float32_twin(name)
    layer = _layer(name, "float64", twin.get_weights())
    config = LAYERS[name]
    rnn = keras.layers.RNN(
        config.cell(UNITS, dtype="float64", **config.kwargs),
        return_sequences=True,
        return_state=True,
        dtype="float64",
    )
    rnn.build((None, None, FEATURES))
    rnn.set_weights(layer.get_weights())
    assert {_dtype(w) for w in layer.weights} == {"float64"}
    x = random_inputs(time=20, features=FEATURES)
    expected = [keras.ops.convert_to_numpy(o) for o in twin(x)]
    for model in (layer, rnn):
        out = model(x.astype("float64"))
        assert {_dtype(o) for o in out} == {"float64"}
        assert_all_close(list(out), expected, atol=ATOL)


@pytest.mark.float64
def test_float64_peephole_lstm_matches_the_float64_reference():
    layer = _layer("lstm_peepholes", "float64")
    rng = np.random.default_rng(5)
    weights = [rng.normal(scale=0.5, size=w.shape) for w in layer.get_weights()]
    layer.set_weights(weights)
    x = random_inputs(time=30, features=FEATURES, dtype="float64")
    expected = reference.lstm(x, weights)
    assert_all_close(list(layer(x)), list(expected), atol=1e-12)

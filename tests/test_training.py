"""Dropout and training.

Dropout masks are drawn once per sequence and reused at every time step;
inference ignores dropout; a seed fixes the masks; and each layer can learn a
task that needs memory. The dropout checks compare against constructions
whose correct output is known, or against a NumPy recomputation of the
documented equations with the masks the cell drew.
"""

import keras
import numpy as np
import pytest
from helpers import LAYER_CLASSES, LAYERS

import keras_recurrent as kr

RATES = {
    "dropout": {"dropout": 0.5},
    "recurrent_dropout": {"recurrent_dropout": 0.5},
    "both": {"dropout": 0.4, "recurrent_dropout": 0.4},
}

BATCH, TIME, FEATURES, UNITS = 4, 5, 3, 6


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def inputs(batch=BATCH, time=TIME, features=FEATURES, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, time, features)).astype("float32")


def randomize(layer, seed=7):
    """Random weights everywhere, including a nonzero bias and peepholes."""
    rng = np.random.default_rng(seed)
    layer.set_weights(
        [
            w + rng.normal(scale=0.4, size=w.shape).astype(w.dtype)
            for w in layer.get_weights()
        ]
    )


# -- NumPy reference (the equations in the cells' docstrings) -----------------


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def reference(cell, x, input_mask, recurrent_mask):
    """Runs ``cell``'s documented equations over ``x`` in float64 NumPy.

    ``input_mask`` multiplies every step's input, ``recurrent_mask`` the state
    entering the recurrent matmul: one mask for the whole sequence. Only the
    default activations (tanh, sigmoid) are handled.
    """
    x = x.astype("float64") * input_mask[:, None, :]
    weights = [w.astype("float64") for w in cell.get_weights()]
    kernel, recurrent_kernel, bias = weights[:3]
    units = cell.units
    h = np.zeros((x.shape[0], units))
    c = np.zeros((x.shape[0], units))
    outputs = []
    for t in range(x.shape[1]):
        h_in = h * recurrent_mask
        if isinstance(cell, kr.SimpleRNNCell):
            h = np.tanh(x[:, t] @ kernel + bias + h_in @ recurrent_kernel)
        elif isinstance(cell, kr.LSTMCell):
            z = x[:, t] @ kernel + bias + h_in @ recurrent_kernel
            z_i, z_f, z_c, z_o = np.split(z, 4, axis=-1)
            if cell.use_peepholes:
                p_i, p_f, p_o = weights[3:]
                z_i, z_f = z_i + p_i * c, z_f + p_f * c
            c = sigmoid(z_f) * c + sigmoid(z_i) * np.tanh(z_c)
            if cell.use_peepholes:
                z_o = z_o + p_o * c
            h = sigmoid(z_o) * np.tanh(c)
        else:  # GRU: the carried z * h_{t-1} is never dropped
            input_bias = bias[0] if cell.reset_after else bias
            x_z, x_r, x_h = np.split(x[:, t] @ kernel + input_bias, 3, axis=-1)
            if cell.reset_after:
                inner = h_in @ recurrent_kernel + bias[1]
                h_z, h_r, h_h = np.split(inner, 3, axis=-1)
                r = sigmoid(x_r + h_r)
                candidate = np.tanh(x_h + r * h_h)
            else:
                h_z, h_r = np.split(h_in @ recurrent_kernel[:, : 2 * units], 2, -1)
                r = sigmoid(x_r + h_r)
                candidate = np.tanh(x_h + (r * h_in) @ recurrent_kernel[:, 2 * units :])
            z = sigmoid(x_z + h_z)
            h = z * h + (1 - z) * candidate
        outputs.append(h)
    return np.stack(outputs, axis=1)


def record_masks(cell, monkeypatch):
    """Records the dropout masks ``cell`` hands out (it forgets them after
    each call). The masks are the cell's own; only a copy is kept."""
    drawn = {}

    def recorder(kind, original):
        def get(step_input):
            mask = original(step_input)
            drawn[kind] = mask
            return mask

        return get

    for kind, name in [
        ("input", "get_dropout_mask"),
        ("recurrent", "get_recurrent_dropout_mask"),
    ]:
        monkeypatch.setattr(cell, name, recorder(kind, getattr(cell, name)))
    return drawn


def checked_mask(drawn, kind, rate, shape):
    """The recorded mask as an array; ones where there is no dropout."""
    if not rate:
        assert drawn.get(kind) is None, f"{kind} mask drawn at rate 0"
        return np.ones(shape)
    mask = drawn.get(kind)
    assert mask is not None, f"no {kind} dropout mask was drawn"
    assert not isinstance(mask, (list, tuple)), (
        f"{kind} mask is a list of {len(mask)} masks, not one (batch, n) mask"
    )
    mask = to_numpy(mask)
    assert mask.shape == shape
    kept = 1.0 / (1.0 - rate)
    assert np.all(np.isclose(mask, 0.0) | np.isclose(mask, kept))
    assert np.any(mask == 0) and np.any(mask != 0)  # the check is not vacuous
    return mask.astype("float64")


@pytest.mark.parametrize("variant", LAYERS)
@pytest.mark.parametrize("how", ["layer", "rnn_cell"])
def test_training_output_matches_numpy_with_the_drawn_masks(variant, how, monkeypatch):
    config = LAYERS[variant]
    layer_cls, cell_cls, extra = config.layer, config.cell, config.kwargs
    x = inputs()
    failures = []
    for rates_name, rates in RATES.items():
        case = f"{variant} via {how}, {rates_name}"
        if how == "layer":
            layer = layer_cls(UNITS, return_sequences=True, seed=3, **rates, **extra)
        else:
            cell = cell_cls(UNITS, seed=3, **rates, **extra)
            layer = keras.layers.RNN(cell, return_sequences=True)
        layer.build((None, TIME, FEATURES))
        randomize(layer)
        cell = layer.cell
        with monkeypatch.context() as patch:
            drawn = record_masks(cell, patch)
            try:
                got = to_numpy(layer(x, training=True))
                input_mask = checked_mask(
                    drawn, "input", rates.get("dropout"), (BATCH, FEATURES)
                )
                recurrent_mask = checked_mask(
                    drawn, "recurrent", rates.get("recurrent_dropout"), (BATCH, UNITS)
                )
                assert got.shape == (BATCH, TIME, UNITS)
                expected = reference(cell, x, input_mask, recurrent_mask)
                np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
                # ... and dropout did change something.
                assert not np.allclose(got, to_numpy(layer(x, training=False)))
            except Exception as error:
                failures.append(f"[{case}] {type(error).__name__}: {error}"[:600])
    assert not failures, "\n".join(failures)


# -- masks constant over time, by construction ---------------------------------


def linear_simple_rnn(how, units, **kwargs):
    """A linear SimpleRNN (layer, or cell in keras.layers.RNN), all weights
    to be set by the test."""
    if how == "layer":
        return kr.SimpleRNN(units, activation=None, return_sequences=True, **kwargs)
    cell = kr.SimpleRNNCell(units, activation=None, **kwargs)
    return keras.layers.RNN(cell, return_sequences=True)


@pytest.mark.parametrize("how", ["layer", "rnn_cell"])
def test_input_dropout_mask_is_the_same_at_every_step(how):
    # h_t = (x_t * m) @ I + h_{t-1} @ 0 = x_t * m: with x constant over time,
    # every step's output is x * m, identical, if m is drawn once.
    units = 16
    layer = linear_simple_rnn(how, units, dropout=0.5, seed=1)
    layer.build((None, TIME, units))
    layer.set_weights([np.eye(units), np.zeros((units, units)), np.zeros(units)])
    step = np.random.default_rng(0).uniform(1.0, 2.0, size=(BATCH, 1, units))
    x = np.repeat(step, TIME, axis=1).astype("float32")

    got = to_numpy(layer(x, training=True))
    for t in range(1, TIME):
        np.testing.assert_array_equal(got[:, t], got[:, 0])
    # Each unit is dropped (0) or kept and scaled by 1 / (1 - 0.5).
    dropped = got[:, 0] == 0
    np.testing.assert_allclose(got[:, 0][~dropped], 2 * x[:, 0][~dropped], rtol=1e-6)
    assert dropped.any() and (~dropped).any()
    # Inference drops nothing.
    np.testing.assert_allclose(to_numpy(layer(x, training=False)), x, rtol=1e-6)


@pytest.mark.parametrize("how", ["layer", "rnn_cell"])
def test_recurrent_dropout_mask_is_the_same_at_every_step(how):
    # x = 1 at t = 0 and 0 after; kernel = recurrent kernel = I, no bias:
    # h_0 = 1 and h_t = h_{t-1} * m, so with one mask m in {0, 2} per
    # sequence and unit, h_t = m**t: each unit's outputs after t = 0 are
    # either all 0 or exactly 2, 4, 8, ... A mask redrawn at each step would
    # give some units 2 then 0.
    units = 16
    layer = linear_simple_rnn(how, units, recurrent_dropout=0.5, seed=2)
    layer.build((None, TIME, units))
    layer.set_weights([np.eye(units), np.eye(units), np.zeros(units)])
    x = np.zeros((BATCH, TIME, units), "float32")
    x[:, 0] = 1.0

    got = to_numpy(layer(x, training=True))
    np.testing.assert_array_equal(got[:, 0], 1.0)
    kept = got[:, 1] != 0
    powers = 2.0 ** np.arange(1, TIME)
    for b, u in np.ndindex(BATCH, units):
        expected = powers if kept[b, u] else np.zeros(TIME - 1)
        np.testing.assert_allclose(got[b, 1:, u], expected, rtol=1e-6)
    assert kept.any() and (~kept).any()
    np.testing.assert_array_equal(to_numpy(layer(x, training=False)), 1.0)


# -- seeds and inference ----------------------------------------------------------


def twin(layer_cls, weights, **kwargs):
    layer = layer_cls(UNITS, return_sequences=True, **kwargs)
    layer.build((None, TIME, FEATURES))
    layer.set_weights(weights)
    return layer


@pytest.mark.parametrize("name", LAYER_CLASSES)
def test_seed_fixes_the_dropout_masks(name):
    layer_cls = LAYER_CLASSES[name]
    x = inputs()
    failures = []
    for rates_name, rates in RATES.items():
        try:
            first = layer_cls(UNITS, return_sequences=True, seed=11, **rates)
            first.build((None, TIME, FEATURES))
            randomize(first)
            weights = first.get_weights()
            same = twin(layer_cls, weights, seed=11, **rates)
            other = twin(layer_cls, weights, seed=12, **rates)
            a = to_numpy(first(x, training=True))
            b = to_numpy(same(x, training=True))
            c = to_numpy(other(x, training=True))
            np.testing.assert_array_equal(a, b)
            assert not np.allclose(a, c), "different seeds, same masks"
            # A second call draws new masks (one mask per call, not per layer).
            assert not np.allclose(to_numpy(first(x, training=True)), a)
        except Exception as error:
            failures.append(f"{rates_name}: {type(error).__name__}: {error}"[:600])
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("variant", LAYERS)
def test_inference_ignores_dropout(variant):
    layer_cls, extra = LAYERS[variant].layer, LAYERS[variant].kwargs
    x = inputs()
    plain = layer_cls(UNITS, return_sequences=True, **extra)
    plain.build((None, TIME, FEATURES))
    randomize(plain)
    expected = to_numpy(plain(x))
    dropping = twin(
        layer_cls,
        plain.get_weights(),
        dropout=0.5,
        recurrent_dropout=0.5,
        seed=4,
        **extra,
    )
    np.testing.assert_array_equal(to_numpy(dropping(x, training=False)), expected)
    np.testing.assert_array_equal(to_numpy(dropping(x)), expected)  # default
    model = keras.Sequential([keras.Input((TIME, FEATURES)), dropping])
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-6, rtol=0)


# -- learning ---------------------------------------------------------------------


def sum_task(n, rng, time=10):
    """Sequences of uniform(-1, 1) numbers; the target is their sum."""
    x = rng.uniform(-1.0, 1.0, size=(n, time, 1)).astype("float32")
    return x, x.sum(axis=(1, 2))[:, None]


def baseline_mse(y_train, y_test):
    """The test MSE of always predicting the training mean."""
    return float(np.mean((y_test - y_train.mean()) ** 2))


def fit(model, x, y, epochs):
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-2), loss="mse")
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
    return model


@pytest.mark.parametrize("name", LAYER_CLASSES)
def test_learns_the_sum_of_a_sequence(name):
    rng = np.random.default_rng(0)
    x_train, y_train = sum_task(512, rng)
    x_test, y_test = sum_task(256, rng)
    baseline = baseline_mse(y_train, y_test)
    assert baseline > 2.0  # ~10 / 3: a real task, not a near-constant target

    model = keras.Sequential(
        [keras.Input((10, 1)), LAYER_CLASSES[name](8), keras.layers.Dense(1)]
    )
    fit(model, x_train, y_train, epochs=12)
    mse = model.evaluate(x_test, y_test, verbose=0)
    assert mse < 0.1 * baseline, f"test MSE {mse:.4f}, baseline {baseline:.4f}"


def padded_sum_task(n, rng, time=10):
    """Sums of sequences of 3 to ``time`` steps, zero-padded at the end."""
    x, _ = sum_task(n, rng, time)
    lengths = rng.integers(3, time + 1, size=n)
    x[np.arange(time)[None, :] >= lengths[:, None]] = 0.0
    return x, x.sum(axis=(1, 2))[:, None], lengths


@pytest.mark.parametrize("name", LAYER_CLASSES)
def test_learns_with_a_masking_layer(name):
    rng = np.random.default_rng(1)
    x_train, y_train, _ = padded_sum_task(512, rng)
    x_test, y_test, lengths = padded_sum_task(256, rng)
    baseline = baseline_mse(y_train, y_test)

    model = keras.Sequential(
        [
            keras.Input((None, 1)),
            keras.layers.Masking(mask_value=0.0),
            LAYER_CLASSES[name](8),
            keras.layers.Dense(1),
        ]
    )
    fit(model, x_train, y_train, epochs=15)
    mse = model.evaluate(x_test, y_test, verbose=0)
    assert mse < 0.1 * baseline, f"test MSE {mse:.4f}, baseline {baseline:.4f}"

    # The padding is really skipped: a padded sequence predicts what the same
    # sequence cut to its length does (the unmasked layer would not: its bias
    # moves the state on zero inputs).
    for i in range(5):
        padded = model(x_test[i : i + 1])
        cut = model(x_test[i : i + 1, : lengths[i]])
        np.testing.assert_allclose(to_numpy(padded), to_numpy(cut), atol=1e-5)

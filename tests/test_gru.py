"""GRU specifics: bias layouts, use_bias=False, documented recurrent dropout.

Tolerance: ``atol=1e-5`` (``helpers.ATOL``), float32 layer vs float64 NumPy.
"""

import helpers
import keras
import numpy as np
import pytest
import reference

import keras_recurrent as kr

B, T, F, H = 3, 6, 5, 4


def random_weights(cell, seed=5):
    rng = np.random.default_rng(seed)
    return [rng.normal(scale=0.6, size=w.shape).astype("float32") for w in cell.weights]


@pytest.mark.parametrize(
    "reset_after, bias_shape", [(True, (2, 3 * H)), (False, (3 * H,))]
)
def test_bias_shape_follows_reset_after(reset_after, bias_shape):
    layer = kr.GRU(H, reset_after=reset_after)
    layer.build((None, None, F))
    assert layer.reset_after is reset_after
    assert [tuple(w.shape) for w in layer.weights] == [
        (F, 3 * H),
        (H, 3 * H),
        bias_shape,
    ]
    builtin = keras.layers.GRU(H, reset_after=reset_after)
    builtin.build((None, None, F))
    assert [tuple(w.shape) for w in builtin.weights] == [
        tuple(w.shape) for w in layer.weights
    ]


@pytest.mark.parametrize("reset_after", [True, False])
def test_layer_matches_reference(reset_after):
    layer = kr.GRU(H, reset_after=reset_after, return_sequences=True)
    layer.build((None, None, F))
    weights = random_weights(layer)
    layer.set_weights(weights)
    x = helpers.random_inputs()
    (h0,) = helpers.random_states("gru")
    expected, _ = reference.run(
        lambda x_t, s: reference.gru_step(x_t, s, weights, reset_after),
        x,
        [h0],
    )
    helpers.assert_all_close(layer(x, initial_state=[h0]), expected)


@pytest.mark.parametrize("name", ["gru", "gru_reset_before"])
def test_use_bias_false_equals_builtin(name):
    ours, builtin = helpers.layer_pair(
        name, use_bias=False, return_sequences=True, return_state=True
    )
    assert [w.name for w in ours.weights] == ["kernel", "recurrent_kernel"]
    assert not ours.use_bias
    x = helpers.random_inputs()
    states = helpers.random_states("gru")
    helpers.assert_all_close(list(ours(x)), list(builtin(x)))
    helpers.assert_all_close(
        list(ours(x, initial_state=states)), list(builtin(x, initial_state=states))
    )
    reset_after = name == "gru"
    weights = ours.get_weights()
    expected, _ = reference.run(
        lambda x_t, s: reference.gru_step(x_t, s, weights, reset_after), x, states
    )
    helpers.assert_all_close(ours(x, initial_state=states)[0], expected)


@pytest.mark.parametrize("reset_after", [True, False])
def test_recurrent_dropout_spares_the_carried_state(reset_after):
    cell = kr.GRUCell(H, recurrent_dropout=0.5, reset_after=reset_after, seed=3)
    cell.build((None, F))
    weights = random_weights(cell)
    cell.set_weights(weights)
    x = helpers.random_inputs()[:, 0]
    (h,) = helpers.random_states("gru")
    # Keras cells cache the mask; the call below reuses this one.
    mask = keras.ops.convert_to_numpy(cell.get_recurrent_dropout_mask(h))
    assert set(np.unique(mask)) == {0.0, 2.0}  # rate 0.5: dropped or doubled
    output, (new_h,) = cell(x, [h], training=True)

    (expected,) = reference.gru_step(x, [h], weights, reset_after, mask)
    helpers.assert_all_close([output, new_h], [expected, expected])

    # The check can fail: Keras's own formula (the mask applied to the
    # carried z * h_{t-1} term too) and the undropped step both differ.
    (keras_style,) = reference.gru_step(x, [h * mask], weights, reset_after)
    (undropped,) = reference.gru_step(x, [h], weights, reset_after)
    for other in (keras_style, undropped):
        assert np.abs(keras.ops.convert_to_numpy(output) - other).max() > 1e-2


def test_recurrent_dropout_inactive_outside_training():
    cell = kr.GRUCell(H, recurrent_dropout=0.5, seed=3)
    cell.build((None, F))
    weights = random_weights(cell)
    cell.set_weights(weights)
    x = helpers.random_inputs()[:, 0]
    (h,) = helpers.random_states("gru")
    output, _ = cell(x, [h], training=False)
    (expected,) = reference.gru_step(x, [h], weights)
    helpers.assert_all_close(output, expected)

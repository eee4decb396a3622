"""SimpleRNN specifics: activity regularizer, legacy keyword, linear activation.

Tolerance: ``atol=1e-5`` (``helpers.ATOL``).
"""

import helpers
import keras
import numpy as np
import pytest
import reference

import keras_recurrent as kr

B, T, F, H = 3, 6, 5, 4


@pytest.mark.parametrize("return_sequences", [False, True])
def test_activity_regularizer_is_applied(return_sequences):
    layer = kr.SimpleRNN(
        H,
        activity_regularizer=keras.regularizers.L2(0.1),
        return_sequences=return_sequences,
    )
    assert layer.losses == []
    output = keras.ops.convert_to_numpy(layer(helpers.random_inputs()))
    assert len(layer.losses) == 1
    # Keras layers divide the activity penalty by the batch size.
    expected = 0.1 * np.sum(output.astype("float64") ** 2) / B
    assert expected > 1e-3
    np.testing.assert_allclose(float(layer.losses[0]), expected, rtol=1e-5)


def test_linear_activation_equals_builtin():
    ours, builtin = helpers.layer_pair(
        "simple_rnn", activation=None, return_sequences=True
    )
    x = 3.0 * helpers.random_inputs()
    actual = ours(x)
    helpers.assert_all_close(actual, builtin(x))
    weights = ours.get_weights()
    expected, _ = reference.run(
        lambda x_t, s: reference.simple_rnn_step(x_t, s, weights, lambda z: z),
        x,
        [np.zeros((B, H))],
    )
    helpers.assert_all_close(actual, expected)
    # Not secretly tanh: a linear recurrence leaves [-1, 1] on these inputs.
    assert np.abs(expected).max() > 1.0


@pytest.mark.parametrize("use_bias", [True, False])
def test_cell_stepped_by_hand_equals_layer(use_bias):
    layer = kr.SimpleRNN(H, use_bias=use_bias, return_sequences=True)
    layer.build((None, None, F))
    rng = np.random.default_rng(2)
    weights = [
        rng.normal(scale=0.6, size=w.shape).astype("float32") for w in layer.weights
    ]
    layer.set_weights(weights)
    cell = kr.SimpleRNNCell(H, use_bias=use_bias)
    cell.build((None, F))
    cell.set_weights(weights)
    x = helpers.random_inputs()
    (h,) = helpers.random_states("simple_rnn")
    expected = layer(x, initial_state=[h])
    outputs = []
    for t in range(T):
        output, (h,) = cell(x[:, t], [h])
        outputs.append(output)
    actual = keras.ops.stack(outputs, axis=1)
    helpers.assert_all_close(actual, expected)
    reference_outputs, _ = reference.run(
        lambda x_t, s: reference.simple_rnn_step(x_t, s, weights),
        x,
        helpers.random_states("simple_rnn"),
    )
    helpers.assert_all_close(actual, reference_outputs)

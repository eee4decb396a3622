"""The peephole LSTM against the float64 NumPy reference, and its weights.

Tolerances: float32 layer vs float64 reference, ``atol=1e-5``
(``helpers.ATOL``); the float64 gradient check uses central differences with
``eps=1e-6`` and ``rtol=1e-6, atol=1e-9``.
"""

import helpers
import keras
import numpy as np
import pytest
import reference
from helpers import MASKS, PEEPHOLES

import keras_recurrent as kr

B, T, F, H = 3, 6, 5, 4


def random_weights(use_peepholes=True, seed=3, dtype="float32", features=F):
    """Random weights in get_weights() order, peepholes nonzero and distinct."""
    rng = np.random.default_rng(seed)
    shapes = [(features, 4 * H), (H, 4 * H), (4 * H,)]
    if use_peepholes:
        shapes += [(H,)] * 3
    return [rng.normal(scale=0.6, size=s).astype(dtype) for s in shapes]


def make_lstm(weights=None, features=F, **kwargs):
    layer = kr.LSTM(H, **kwargs)
    layer.build((None, T, features))
    weights = random_weights(features=features) if weights is None else weights
    layer.set_weights(weights)
    return layer, weights


def as_list(result):
    return list(result) if isinstance(result, (list, tuple)) else [result]


@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("return_state", [False, True])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("unroll", [False, True])
def test_layer_matches_reference(return_sequences, return_state, go_backwards, unroll):
    x = helpers.random_inputs()
    layer, weights = make_lstm(
        return_sequences=return_sequences,
        return_state=return_state,
        go_backwards=go_backwards,
        unroll=unroll,
    )
    outputs, h, c = reference.lstm(x, weights, go_backwards=go_backwards)
    expected = [outputs if return_sequences else outputs[:, -1]]
    if return_state:
        expected += [h, c]
    helpers.assert_all_close(as_list(layer(x)), expected)


@pytest.mark.parametrize("unroll", [False, True])
def test_initial_state_matches_reference(unroll):
    x = helpers.random_inputs()
    states = helpers.random_states("lstm")
    layer, weights = make_lstm(return_sequences=True, return_state=True, unroll=unroll)
    expected = reference.lstm(x, weights, initial_state=states)
    helpers.assert_all_close(list(layer(x, initial_state=states)), list(expected))


@pytest.mark.parametrize("mask_name", sorted(MASKS))
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("unroll", [False, True])
def test_masked_layer_matches_reference(mask_name, go_backwards, unroll):
    x = helpers.random_inputs()
    mask = helpers.mask_array(mask_name)
    states = helpers.random_states("lstm")
    layer, weights = make_lstm(
        return_sequences=True,
        return_state=True,
        go_backwards=go_backwards,
        unroll=unroll,
    )
    expected = reference.lstm(
        x, weights, mask=mask, go_backwards=go_backwards, initial_state=states
    )
    actual = layer(x, initial_state=states, mask=mask)
    helpers.assert_all_close(list(actual), list(expected))
    for row in np.flatnonzero(~mask.any(axis=1)):
        # Nothing to process: zero outputs, states untouched.
        helpers.assert_all_close(actual[0][row], np.zeros((T, H)))
        helpers.assert_all_close(
            [actual[1][row], actual[2][row]], [s[row] for s in states]
        )


def test_masked_last_output_matches_reference():
    x = helpers.random_inputs()
    mask = helpers.mask_array("arbitrary")
    layer, weights = make_lstm()
    outputs, _, _ = reference.lstm(x, weights, mask=mask)
    helpers.assert_all_close(layer(x, mask=mask), outputs[:, -1])


def test_cell_stepped_by_hand_matches_reference():
    x = helpers.random_inputs()
    h, c = helpers.random_states("lstm")
    cell = kr.LSTMCell(H)
    cell.build((None, F))
    weights = random_weights()
    cell.set_weights(weights)
    expected, h_ref, c_ref = reference.lstm(x, weights, initial_state=[h, c])
    outputs = []
    for t in range(T):
        output, (h, c) = cell(x[:, t], [h, c])
        outputs.append(output)
    helpers.assert_all_close(
        [keras.ops.stack(outputs, axis=1), h, c], [expected, h_ref, c_ref]
    )


def test_zero_peepholes_equal_builtin_lstm():
    x = helpers.random_inputs()
    mask = helpers.mask_array("arbitrary")
    states = helpers.random_states("lstm")
    builtin = keras.layers.LSTM(H, return_sequences=True, return_state=True)
    builtin.build((None, None, F))
    weights = random_weights(use_peepholes=False)
    builtin.set_weights(weights)
    ours, _ = make_lstm(
        weights + [np.zeros(H, "float32")] * 3,
        return_sequences=True,
        return_state=True,
    )
    assert ours.use_peepholes and len(ours.weights) == 6
    for kwargs in ({}, {"initial_state": states, "mask": mask}):
        given = bool(kwargs)
        reference = helpers.builtin_reference(builtin, given, initial_state=given)
        helpers.assert_all_close(list(ours(x, **kwargs)), list(reference(x, **kwargs)))


def test_nonzero_peepholes_change_the_output():
    x = helpers.random_inputs()
    weights = random_weights()
    with_peepholes, _ = make_lstm(weights)
    zeroed, _ = make_lstm(weights[:3] + [np.zeros(H, "float32")] * 3)
    difference = np.abs(keras.ops.convert_to_numpy(with_peepholes(x) - zeroed(x))).max()
    assert difference > 1e-2


def test_weight_names_shapes_and_order():
    layer, weights = make_lstm()
    assert [w.name for w in layer.weights] == [
        "kernel",
        "recurrent_kernel",
        "bias",
        *PEEPHOLES,
    ]
    assert [tuple(w.shape) for w in layer.weights] == [
        (F, 4 * H),
        (H, 4 * H),
        (4 * H,),
        (H,),
        (H,),
        (H,),
    ]
    helpers.assert_all_close(layer.get_weights(), weights, atol=0)
    for name, value in zip(PEEPHOLES, weights[3:]):
        variable = getattr(layer.cell, name)
        assert variable.name == name
        helpers.assert_all_close(variable.numpy(), value, atol=0)
    assert all(w.trainable for w in layer.weights)


def test_without_peepholes_has_the_keras_weights():
    ours, builtin = helpers.layer_pair("lstm", return_sequences=True)
    assert not ours.use_peepholes
    assert [w.name for w in ours.weights] == ["kernel", "recurrent_kernel", "bias"]
    assert [tuple(w.shape) for w in ours.weights] == [
        tuple(w.shape) for w in builtin.weights
    ]
    assert not any(hasattr(ours.cell, name) for name in PEEPHOLES)
    x = helpers.random_inputs()
    helpers.assert_all_close(ours(x), builtin(x))
    weights = builtin.get_weights()
    expected = reference.lstm(x, weights, use_peepholes=False)[0]
    helpers.assert_all_close(ours(x), expected)


def test_peephole_regularizer_adds_a_loss():
    layer, weights = make_lstm(peephole_regularizer=keras.regularizers.L2(0.1))
    layer(helpers.random_inputs())
    assert len(layer.losses) == 3
    expected = 0.1 * sum(float(np.sum(p.astype("float64") ** 2)) for p in weights[3:])
    np.testing.assert_allclose(
        float(keras.ops.sum(keras.ops.stack(layer.losses))), expected, rtol=1e-5
    )


def test_no_regularizer_no_loss():
    layer, _ = make_lstm()
    layer(helpers.random_inputs())
    assert layer.losses == []


def test_peephole_constraint_is_applied_after_an_optimizer_step():
    weights = random_weights()
    weights[3:] = [np.array([-1.0, 0.5, -0.25, 2.0], "float32")] * 3
    layer, _ = make_lstm(weights, peephole_constraint=keras.constraints.NonNeg())
    for name in PEEPHOLES:
        assert isinstance(
            getattr(layer.cell, name).constraint, keras.constraints.NonNeg
        )
    assert layer.cell.kernel.constraint is None
    optimizer = keras.optimizers.SGD(learning_rate=0.0)
    optimizer.apply(
        [keras.ops.zeros_like(w.value) for w in layer.trainable_weights],
        layer.trainable_weights,
    )
    after = layer.get_weights()
    for p in after[3:]:
        np.testing.assert_array_equal(p, [0.0, 0.5, 0.0, 2.0])
    # The other weights keep their negative entries.
    helpers.assert_all_close(after[:3], weights[:3], atol=0)
    assert (after[0] < 0).any()


def test_default_peephole_initializer_is_glorot_uniform():
    layer = kr.LSTM(H)
    layer.build((None, None, F))
    assert isinstance(layer.peephole_initializer, keras.initializers.GlorotUniform)
    limit = np.sqrt(6.0 / (2 * H))
    values = layer.get_weights()[3:]
    assert len(values) == 3
    for p in values:
        assert p.shape == (H,)
        assert np.all(p != 0)
        assert np.all(np.abs(p) <= limit)


@pytest.mark.parametrize("initializer", ["glorot_uniform", "random_normal"])
def test_peephole_vectors_are_independent_draws(initializer):
    # The three peephole vectors share one initializer; each must still get
    # its own random values, not one vector repeated three times.
    cell = kr.LSTMCell(H, peephole_initializer=initializer)
    cell.build((None, F))
    p_i, p_f, p_o = cell.get_weights()[3:]
    assert not np.array_equal(p_i, p_f)
    assert not np.array_equal(p_f, p_o)
    assert not np.array_equal(p_i, p_o)


# -- gradient check, float64 -------------------------------------------------

EPS = 1e-6
GRAD_RTOL, GRAD_ATOL = 1e-6, 1e-9


def _float64_lstm():
    weights = random_weights(dtype="float64")
    layer, _ = make_lstm(weights, dtype="float64", return_sequences=True)
    assert all(w.dtype == "float64" for w in layer.weights)
    # A fixed random projection of the outputs, so every output counts.
    projection = np.random.default_rng(11).normal(size=(T, H))
    return layer, projection


def _row_losses(layer, projection, x):
    outputs = keras.ops.convert_to_numpy(layer(x))
    assert outputs.dtype == np.float64
    return np.sum(outputs * projection, axis=(1, 2))


def _assert_gradients_close(autodiff, numeric):
    assert np.abs(numeric).max() > 1e-3  # not a vacuous check
    np.testing.assert_allclose(autodiff, numeric, rtol=GRAD_RTOL, atol=GRAD_ATOL)


@pytest.mark.float64  # on JAX: with jax_enable_x64 (conftest.py)
def test_input_gradient_matches_finite_differences():
    layer, projection = _float64_lstm()
    x = helpers.random_inputs(dtype="float64")
    (autodiff,) = helpers.gradients(
        # keras.ops.multiply: on PyTorch, `*` would hand the output to NumPy.
        lambda xs: keras.ops.sum(keras.ops.multiply(layer(xs), projection)),
        [x],
    )
    # Rows are independent, so every perturbed copy of a row goes into one
    # batch: row b of x perturbed at (t, f) by +eps, then by -eps.
    index = list(np.ndindex(B, T, F))
    plus, minus = [], []
    for b, t, f in index:
        for sign, batch in ((1, plus), (-1, minus)):
            row = x[b].copy()
            row[t, f] += sign * EPS
            batch.append(row)
    numeric = (
        _row_losses(layer, projection, np.array(plus))
        - _row_losses(layer, projection, np.array(minus))
    ) / (2 * EPS)
    _assert_gradients_close(autodiff, numeric.reshape(B, T, F))


@pytest.mark.float64
@pytest.mark.parametrize("name", PEEPHOLES)
def test_peephole_gradient_matches_finite_differences(name):
    layer, projection = _float64_lstm()
    x = helpers.random_inputs(dtype="float64")
    states = [s.astype("float64") for s in helpers.random_states("lstm")]
    variable = getattr(layer.cell, name)

    def loss():
        outputs = layer(x, initial_state=states)
        return keras.ops.sum(keras.ops.multiply(outputs, projection))

    (autodiff,) = helpers.gradients(lambda _: loss(), [variable])
    original = variable.numpy().copy()
    numeric = np.zeros(H)
    for k in range(H):
        values = []
        for sign in (1, -1):
            perturbed = original.copy()
            perturbed[k] += sign * EPS
            variable.assign(perturbed)
            values.append(float(loss()))
        numeric[k] = (values[0] - values[1]) / (2 * EPS)
    variable.assign(original)
    _assert_gradients_close(autodiff, numeric)

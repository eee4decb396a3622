"""Shared behaviour: every layer and cell matches its Keras built-in.

Each check runs ours and ``keras.layers.X`` configured alike, with the same
(randomly perturbed) weights, on the same inputs, and compares outputs,
returned states and gradients. Options that only change how a layer is
called (masks, initial states, ``training``) are looped over inside one
test, on one pair of layers; every failure message names the case.
"""

import keras
import numpy as np
import pytest
from helpers import (
    PAIRS,
    assert_all_close,
    builtin_kwargs,
    builtin_reference,
    gradients,
    layer_pair,
    num_states,
    random_inputs,
    random_states,
)
from helpers import mask_array as _mask

import keras_recurrent as kr

NAMES = list(PAIRS)
BATCH, TIME, FEATURES, UNITS = 3, 6, 5, 4

# Time-loop variants; each needs its own layers.
LOOPS = {
    "default": {},
    "go_backwards": {"go_backwards": True},
    "unroll": {"unroll": True},
    "go_backwards_unroll": {"go_backwards": True, "unroll": True},
}


def _assert_match(ours, builtin, case=""):
    """Outputs (possibly nested: outputs, states, per-cell states) agree."""
    try:
        assert_all_close(keras.tree.flatten(ours), keras.tree.flatten(builtin))
    except AssertionError as error:
        raise AssertionError(f"case: {case}\n{error}") from None


def _new_layers(name, **kwargs):
    """Ours and the built-in, configured alike, not built."""
    config = PAIRS[name]
    kwargs = {**config.kwargs, **kwargs}
    return config.layer(UNITS, **kwargs), config.builtin(
        UNITS, **builtin_kwargs(kwargs)
    )


def _new_cells(name, count):
    config = PAIRS[name]
    ours = [config.cell(UNITS, **config.kwargs) for _ in range(count)]
    builtin = [
        config.builtin_cell(UNITS, **builtin_kwargs(config.kwargs))
        for _ in range(count)
    ]
    return ours, builtin


def _share_weights(source, target, seed=7):
    """Perturbs ``source``'s weights, then copies them into ``target``."""
    rng = np.random.default_rng(seed)
    weights = [
        w + rng.normal(scale=0.1, size=w.shape).astype(w.dtype)
        for w in source.get_weights()
    ]
    assert weights, "nothing to share: the source is not built"
    source.set_weights(weights)
    target.set_weights(source.get_weights())


def _pair(name, **kwargs):
    """``layer_pair``, except that unrolled layers are built with a static time
    axis (see ``test_unrolled_layer_builds_with_unknown_time_axis``)."""
    if not kwargs.get("unroll"):
        return layer_pair(name, **kwargs)
    ours, builtin = _new_layers(name, **kwargs)
    ours.build((None, TIME, FEATURES))
    builtin.build((None, TIME, FEATURES))
    _share_weights(builtin, ours)
    return ours, builtin


def _sum_of_squares(outputs):
    return sum(keras.ops.sum(keras.ops.square(o)) for o in keras.tree.flatten(outputs))


# -- outputs and returned states ------------------------------------------


@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_outputs_and_states_match(name, return_sequences):
    x = random_inputs()
    for return_state in (False, True):
        ours, builtin = layer_pair(
            name, return_sequences=return_sequences, return_state=return_state
        )
        out = ours(x)
        expected_len = 1 + num_states(name) if return_state else 1
        assert len(keras.tree.flatten(out)) == expected_len
        _assert_match(out, builtin(x), f"return_state={return_state}")


@pytest.mark.parametrize("loop", list(LOOPS))
@pytest.mark.parametrize("name", NAMES)
def test_loop_options_match(name, loop):
    ours, builtin = _pair(name, return_sequences=True, return_state=True, **LOOPS[loop])
    x = random_inputs()
    _assert_match(ours(x), builtin(x), "zero initial state")
    states = random_states(name)
    _assert_match(
        ours(x, initial_state=states),
        builtin(x, initial_state=states),
        "initial_state given",
    )


# mask kind -> whether a nonzero initial state is given with it
MASK_CASES = {
    "right_padded": False,
    "holes": False,
    "fully_masked_row": True,
    "leading_masked": True,
}


@pytest.mark.parametrize("loop", list(LOOPS))
@pytest.mark.parametrize("name", NAMES)
def test_masked_outputs_match(name, loop):
    """Masked steps carry the states over; with leading masked steps and a
    nonzero initial state, outputs before the first valid step are zeros."""
    x = random_inputs()
    for return_sequences in (False, True):
        ours, builtin = _pair(
            name, return_sequences=return_sequences, return_state=True, **LOOPS[loop]
        )
        for kind, with_initial_state in MASK_CASES.items():
            mask = _mask(kind)
            states = random_states(name) if with_initial_state else None
            out = ours(x, initial_state=states, mask=mask)
            case = f"return_sequences={return_sequences}, mask={kind}"
            reference = builtin_reference(builtin, True, with_initial_state)
            _assert_match(out, reference(x, initial_state=states, mask=mask), case)
            if kind == "fully_masked_row":
                # That row never steps: its final states are the initial ones.
                assert_all_close([s[1] for s in out[1:]], [s[1] for s in states])


@pytest.mark.parametrize("name", NAMES)
def test_unrolled_layer_builds_with_unknown_time_axis(name):
    """The built-in builds an unrolled layer for ``(batch, None, features)``
    and only needs static time steps when called; so must ours."""
    ours, builtin = layer_pair(name, unroll=True, return_sequences=True)
    x = random_inputs()
    _assert_match(ours(x), builtin(x))


@pytest.mark.parametrize("name", NAMES)
def test_legacy_implementation_keyword_is_accepted(name):
    """Accepted from the constructor and from an old config, and ignored:
    not in the config, not forwarded to the cell, the same numbers."""
    ours, builtin = layer_pair(name, return_sequences=True)
    config = {**ours.get_config(), "implementation": 1}
    kwargs = {**PAIRS[name].kwargs, "return_sequences": True}
    for legacy in (
        type(ours)(UNITS, implementation=1, **kwargs),
        type(ours).from_config(config),
    ):
        legacy.build((None, None, FEATURES))
        legacy.set_weights(ours.get_weights())
        assert "implementation" not in legacy.get_config()
        assert getattr(legacy.cell, "implementation", 2) == 2
        x = random_inputs()
        assert_all_close(legacy(x), builtin(x))


# -- gradients ------------------------------------------------------------

# case -> (mask kind, initial state given)
GRADIENT_CASES = {
    "plain": (None, False),
    "mask": ("holes", False),
    "initial_state": (None, True),
    "mask_initial_state": ("leading_masked", True),
}


@pytest.mark.parametrize("case", list(GRADIENT_CASES))
@pytest.mark.parametrize("name", NAMES)
def test_gradients_match(name, case):
    """Gradients of a sum of squares of all outputs and states, with respect
    to the inputs, the initial states and every trainable weight."""
    mask_kind, with_initial_state = GRADIENT_CASES[case]
    mask = _mask(mask_kind)
    x = random_inputs()
    states = random_states(name) if with_initial_state else []

    def grads(layer):
        def loss(inputs, *rest):
            initial_state = list(rest[: len(states)]) or None
            outputs = layer(inputs, initial_state=initial_state, mask=mask)
            return _sum_of_squares(outputs)

        return gradients(loss, [x, *states, *layer.trainable_weights])

    for loop, options in LOOPS.items():
        ours, builtin = _pair(name, return_sequences=True, return_state=True, **options)
        ours_grads = grads(ours)
        assert len(ours_grads) == 1 + len(states) + len(builtin.trainable_weights)
        reference = builtin_reference(builtin, mask is not None, bool(states))
        _assert_match(ours_grads, grads(reference), f"loop={loop}")


# -- stateful -------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_stateful_matches_across_batches_and_reset(name):
    ours, builtin = layer_pair(
        name, batch=BATCH, stateful=True, return_sequences=True, return_state=True
    )
    batches = [random_inputs(seed=seed) for seed in range(3)]
    first = ours(batches[0])
    for index, x in enumerate(batches):
        out = first if index == 0 else ours(x)
        _assert_match(out, builtin(x), f"outputs of batch {index}")
        _assert_match(ours.states, builtin.states, f"states after batch {index}")
    ours.reset_state()
    builtin.reset_state()
    _assert_match(ours.states, builtin.states, "states after reset_state()")
    again = ours(batches[0])
    _assert_match(again, builtin(batches[0]), "first batch after reset_state()")
    _assert_match(again, first, "ours after reset_state() starts over")


# -- inside models --------------------------------------------------------


def _masked_inputs():
    """Inputs whose masked steps are all zeros, for keras.layers.Masking."""
    return random_inputs() * _mask("holes")[..., None].astype("float32")


def _compare_predictions(ours_model, builtin_model, x):
    _share_weights(builtin_model, ours_model)
    _assert_match(ours_model.predict(x, verbose=0), builtin_model.predict(x, verbose=0))


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_sequential_model_matches(name, masked):
    def model(layer):
        model = keras.Sequential()
        model.add(keras.Input((TIME, FEATURES)))
        if masked:
            model.add(keras.layers.Masking(0.0))
        model.add(layer)
        model.add(keras.layers.Dense(2))
        return model

    ours, builtin = _new_layers(name, return_sequences=True)
    x = _masked_inputs() if masked else random_inputs()
    _compare_predictions(model(ours), model(builtin), x)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_functional_model_matches(name, masked):
    def model(layer):
        inputs = keras.Input((TIME, FEATURES))
        hidden = keras.layers.Masking(0.0)(inputs) if masked else inputs
        outputs, *states = layer(hidden)
        return keras.Model(inputs, [keras.layers.Dense(2)(outputs), *states])

    ours, builtin = _new_layers(name, return_sequences=True, return_state=True)
    x = _masked_inputs() if masked else random_inputs()
    _compare_predictions(model(ours), model(builtin), x)


def _bidirectional_pair(name, merge_mode="concat", **kwargs):
    ours, builtin = (
        keras.layers.Bidirectional(layer, merge_mode=merge_mode)
        for layer in _new_layers(name, **kwargs)
    )
    x = random_inputs()
    ours(x)
    builtin(x)
    _share_weights(builtin, ours)
    return ours, builtin, x


@pytest.mark.parametrize("name", NAMES)
def test_bidirectional_merge_modes_match(name):
    for merge_mode in ("concat", "sum", "mul", "ave", None):
        ours, builtin, x = _bidirectional_pair(name, merge_mode, return_sequences=True)
        for kind in (None, "holes"):
            mask = _mask(kind)
            case = f"merge_mode={merge_mode}, mask={kind}"
            _assert_match(ours(x, mask=mask), builtin(x, mask=mask), case)


@pytest.mark.parametrize("name", NAMES)
def test_bidirectional_return_state_matches(name):
    for return_sequences in (False, True):
        ours, builtin, x = _bidirectional_pair(
            name, return_sequences=return_sequences, return_state=True
        )
        for kind in (None, "right_padded"):
            mask = _mask(kind)
            out = ours(x, mask=mask)
            assert len(out) == 1 + 2 * num_states(name)
            case = f"return_sequences={return_sequences}, mask={kind}"
            _assert_match(out, builtin(x, mask=mask), case)


@pytest.mark.parametrize("name", NAMES)
def test_bidirectional_in_masked_model_matches(name):
    def model(layer):
        inputs = keras.Input((TIME, FEATURES))
        hidden = keras.layers.Masking(0.0)(inputs)
        outputs = keras.layers.Bidirectional(layer, merge_mode="sum")(hidden)
        return keras.Model(inputs, keras.layers.Dense(2)(outputs))

    ours, builtin = _new_layers(name, return_sequences=True)
    _compare_predictions(model(ours), model(builtin), _masked_inputs())


# -- cells in keras.layers.RNN ----------------------------------------------

WRAPPERS = {
    "rnn_cell": lambda cells: keras.layers.RNN(
        cells[0], return_sequences=True, return_state=True
    ),
    "rnn_list": lambda cells: keras.layers.RNN(
        cells, return_sequences=True, return_state=True
    ),
    "stacked_rnn_cells": lambda cells: keras.layers.RNN(
        keras.layers.StackedRNNCells(cells), return_sequences=True, return_state=True
    ),
}


@pytest.mark.parametrize("wrapper", list(WRAPPERS))
@pytest.mark.parametrize("name", NAMES)
def test_cells_in_rnn_wrappers_match(name, wrapper):
    ours_cells, builtin_cells = _new_cells(name, 1 if wrapper == "rnn_cell" else 2)
    ours = WRAPPERS[wrapper](ours_cells)
    builtin = WRAPPERS[wrapper](builtin_cells)
    x = random_inputs()
    ours(x)
    builtin(x)
    _share_weights(builtin, ours)
    for kind in (None, "holes"):
        mask = _mask(kind)
        _assert_match(ours(x, mask=mask), builtin(x, mask=mask), f"mask={kind}")


@pytest.mark.parametrize("loop", ["default", "go_backwards"])
def test_peephole_cell_in_rnn_matches_peephole_layer(loop):
    options = {"return_sequences": True, "return_state": True, **LOOPS[loop]}
    rnn = keras.layers.RNN(kr.LSTMCell(UNITS), **options)
    layer = kr.LSTM(UNITS, **options)
    x = random_inputs()
    out = rnn(x)
    assert [tuple(o.shape) for o in out] == [
        (BATCH, TIME, UNITS),
        (BATCH, UNITS),
        (BATCH, UNITS),
    ]
    layer(x)
    _share_weights(layer, rnn)
    assert len(rnn.get_weights()) == 6  # kernel, recurrent, bias, 3 peepholes
    for kind in (None, "holes"):
        mask = _mask(kind)
        _assert_match(rnn(x, mask=mask), layer(x, mask=mask), f"mask={kind}")


# -- dropout ----------------------------------------------------------------


def _dropout_pair(name):
    return layer_pair(
        name,
        dropout=0.3,
        recurrent_dropout=0.3,
        return_sequences=True,
        return_state=True,
    )


@pytest.mark.parametrize("name", NAMES)
def test_dropout_inactive_at_inference(name):
    ours, builtin = _dropout_pair(name)
    x = random_inputs()
    _assert_match(ours(x, training=False), builtin(x, training=False))


@pytest.mark.parametrize("name", NAMES)
def test_dropout_active_in_training(name):
    """Dropout plus recurrent dropout runs in training and changes the
    outputs, so the inference match above is not vacuous."""
    ours, _ = _dropout_pair(name)
    x = random_inputs()
    training, *states = ours(x, training=True)
    assert tuple(training.shape) == (BATCH, TIME, UNITS)
    assert [tuple(s.shape) for s in states] == [(BATCH, UNITS)] * num_states(name)
    assert not np.allclose(
        keras.ops.convert_to_numpy(training),
        keras.ops.convert_to_numpy(ours(x, training=False)[0]),
        atol=1e-3,
    )


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "rates", [(0.0, 0.0), (0.3, 0.0), (0.0, 0.3)], ids=["none", "input", "recurrent"]
)
def test_only_dropout_keeps_a_seed_state(name, rates):
    """Keras's cells keep a SeedGenerator (a variable, uint32 on JAX)
    whatever their dropout; ours keep one only when they draw masks, so that
    a model without dropout holds its weights alone (TFLite's converter
    refuses a uint32 variable). The built-in keeps it in every case."""
    dropout, recurrent_dropout = rates
    ours, builtin = _new_layers(
        name, dropout=dropout, recurrent_dropout=recurrent_dropout
    )
    for layer in (ours, builtin):
        layer(random_inputs())

    def seeds(layer):
        return [v.name for v in layer.variables].count("seed_generator_state")

    assert seeds(ours) == (1 if dropout or recurrent_dropout else 0)
    assert seeds(builtin) == 1

"""Bad arguments and bad inputs fail early with a clear message.

Every error must name the offending argument and show what was received, in
Keras's own style (``"... Received: units=-3"``), and must be raised before
any computation: no weights built, no state changed.

(Each test costs ~0.4 s of ``clear_session`` in conftest's teardown, so cases
of one kind are looped inside a test; a failure names the case.)
"""

import itertools
import re

import keras
import numpy as np
import pytest
from helpers import CELL_CLASSES as CELLS
from helpers import LAYER_CLASSES as LAYERS
from helpers import num_states

import keras_recurrent as kr

ALL = {**LAYERS, **CELLS}

# An argument error may fairly be either; the message is what is checked.
BAD = (ValueError, TypeError)

UNITS, FEATURES, BATCH, TIME = 4, 5, 2, 3

LAYER_FLAGS = ["return_sequences", "return_state", "go_backwards", "stateful", "unroll"]
IDENTIFIERS = [
    "activation",
    "kernel_initializer",
    "recurrent_initializer",
    "bias_initializer",
    "kernel_regularizer",
    "recurrent_regularizer",
    "bias_constraint",
]
PEEPHOLE_IDENTIFIERS = [
    "peephole_initializer",
    "peephole_regularizer",
    "peephole_constraint",
]


def message(*fragments):
    """A ``match`` pattern: every fragment, literally and in this order."""
    return "(?s)" + ".*".join(re.escape(f) for f in fragments)


def expect_error(case, fn, *fragments):
    """``fn()`` raises a ValueError/TypeError whose message has ``fragments``.

    ``case`` is added to a failure, since loops share one test.
    """
    try:
        with pytest.raises(BAD, match=message(*fragments)):
            fn()
    except (AssertionError, pytest.fail.Exception) as failure:
        raise AssertionError(f"[{case}] {failure}") from None
    except Exception as error:  # e.g. an error from deep inside TensorFlow
        raise AssertionError(
            f"[{case}] expected a clear ValueError/TypeError matching "
            f"{fragments}, got {type(error).__name__}: {error}"
        ) from error


def sequences(batch=BATCH, time=TIME, features=FEATURES):
    rng = np.random.default_rng(0)
    return rng.normal(size=(batch, time, features)).astype("float32")


def zero_states(cls, batch=BATCH, units=UNITS, count=None):
    count = num_states(cls) if count is None else count
    return [np.zeros((batch, units), "float32") for _ in range(count)]


def built_layer(cls, **kwargs):
    layer = cls(UNITS, **kwargs)
    layer(sequences())
    return layer


def assert_unchanged(variables, before):
    assert len(variables) == len(before)
    for variable, value in zip(variables, before):
        np.testing.assert_array_equal(variable.numpy(), value)


def snapshot(variables):
    return [np.array(v.numpy()) for v in variables]


def run(obj, units, batch=BATCH):
    """Calls a layer, or a cell wrapped in ``keras.layers.RNN``, on sequences."""
    layer = keras.layers.RNN(obj) if isinstance(obj, tuple(CELLS.values())) else obj
    output = layer(sequences(batch=batch))
    assert tuple(output.shape) == (batch, units)


# -- constructor arguments --------------------------------------------------


def test_units_must_be_a_positive_integer():
    for cls, units in itertools.product(
        ALL.values(), [0, -3, 2.5, "4", True, None, np.float32(3.0)]
    ):
        expect_error(
            f"{cls.__name__}(units={units!r})",
            lambda: cls(units),  # noqa: B023
            "`units`",
            f"Received: units={units!r}",
        )


def test_dropout_rates_must_be_in_unit_interval():
    for cls, name, rate in itertools.product(
        ALL.values(), ["dropout", "recurrent_dropout"], [-0.1, 1.0, 1.5, "x", None]
    ):
        expect_error(
            f"{cls.__name__}({name}={rate!r})",
            lambda: cls(UNITS, **{name: rate}),  # noqa: B023
            f"`{name}`",
            f"Received: {name}={rate!r}",
        )


def test_unknown_activations_initializers_regularizers_constraints():
    for cls in ALL.values():
        names = list(IDENTIFIERS)
        if cls not in (kr.SimpleRNN, kr.SimpleRNNCell):
            names.append("recurrent_activation")
        if cls in (kr.LSTM, kr.LSTMCell):
            names += PEEPHOLE_IDENTIFIERS
        for name in names:
            expect_error(
                f"{cls.__name__}({name}='no_such_thing')",
                lambda: cls(UNITS, **{name: "no_such_thing"}),  # noqa: B023
                f"`{name}`",
                f"Received: {name}='no_such_thing'",
            )


def test_boolean_arguments_must_be_booleans():
    for cls in ALL.values():
        names = ["use_bias"]
        if cls in LAYERS.values():
            names += LAYER_FLAGS
        if cls in (kr.LSTM, kr.LSTMCell):
            names += ["unit_forget_bias", "use_peepholes"]
        if cls in (kr.GRU, kr.GRUCell):
            names += ["reset_after"]
        for name in names:
            for value in [1, "yes", None]:
                expect_error(
                    f"{cls.__name__}({name}={value!r})",
                    lambda: cls(UNITS, **{name: value}),  # noqa: B023
                    f"`{name}`",
                    f"Received: {name}={value!r}",
                )


def test_layer_norm_arguments():
    for cls in ALL.values():
        for value in [0, 0.0, -1, -1e-3, "x", None, True]:
            expect_error(
                f"{cls.__name__}(layer_norm_epsilon={value!r})",
                lambda: cls(UNITS, layer_norm_epsilon=value),  # noqa: B023
                "`layer_norm_epsilon`",
                f"Received: layer_norm_epsilon={value!r}",
            )
        for value in ["yes", 1, None]:
            expect_error(
                f"{cls.__name__}(use_layer_norm={value!r})",
                lambda: cls(UNITS, use_layer_norm=value),  # noqa: B023
                "`use_layer_norm`",
                f"Received: use_layer_norm={value!r}",
            )
        obj = cls(UNITS, use_layer_norm=True, layer_norm_epsilon=1e-5)
        assert obj.use_layer_norm is True and obj.layer_norm_epsilon == 1e-5


def test_use_cudnn():
    for cls in LAYERS.values():
        # There is no cuDNN path: True must be refused, not silently ignored.
        expect_error(
            f"{cls.__name__}(use_cudnn=True)",
            lambda: cls(UNITS, use_cudnn=True),  # noqa: B023
            "use_cudnn",
            "Received: use_cudnn=True",
        )
        for value in ["yes", None]:
            expect_error(
                f"{cls.__name__}(use_cudnn={value!r})",
                lambda: cls(UNITS, use_cudnn=value),  # noqa: B023
                "`use_cudnn`",
                f"Received: use_cudnn={value!r}",
            )
        for value in ["auto", False]:
            layer = cls(UNITS, use_cudnn=value)
            assert layer.use_cudnn == value
            run(layer, UNITS)
    # The LSTM says why twice over: cuDNN has no peephole LSTM at all.
    expect_error(
        "LSTM(use_cudnn=True)",
        lambda: kr.LSTM(UNITS, use_cudnn=True),
        "use_cudnn",
        "peephole",
        "Received: use_cudnn=True",
    )


# -- valid edge values are accepted -----------------------------------------


def test_valid_edge_values_accepted():
    for cls in ALL.values():
        for dropout, recurrent_dropout in [(0.0, 0.0), (0, 0), (0.99, 0.0)]:
            obj = cls(UNITS, dropout=dropout, recurrent_dropout=recurrent_dropout)
            assert obj.dropout == dropout
            assert obj.recurrent_dropout == recurrent_dropout
            run(obj, UNITS)
        run(cls(1), 1)
        run(cls(UNITS, activation=None), UNITS)


def test_numpy_integer_units_accepted():
    failures = []
    for cls, np_int in itertools.product(ALL.values(), [np.int64, np.int32]):
        try:
            obj = cls(np_int(3))
            assert obj.units == 3
            run(obj, 3)
            # ... and in a model, where Keras computes the output shape.
            obj = cls(np_int(3))
            layer = keras.layers.RNN(obj) if cls in CELLS.values() else obj
            model = keras.Sequential([keras.Input((TIME, FEATURES)), layer])
            assert tuple(model.output_shape) == (None, 3)
        except Exception as error:
            failures.append(f"{cls.__name__}({np_int.__name__}(3)): {error!r}")
    assert not failures, "\n".join(failures)


# -- input rank and feature size --------------------------------------------

BAD_RANKS = [(BATCH, FEATURES), (BATCH, TIME, FEATURES, 1)]


@pytest.mark.parametrize("cls", LAYERS.values(), ids=LAYERS.keys())
def test_input_rank_and_feature_size(cls):
    for shape in BAD_RANKS:
        # On the first call, before anything is built ...
        layer = cls(UNITS)
        expect_error(
            f"first call, {shape}",
            lambda: layer(np.zeros(shape, "float32")),  # noqa: B023
            "rank 3",
            f"Received: inputs.shape={shape}",
        )
        assert not layer.built
        assert layer.weights == []
        # ... on a first symbolic call (functional model) ...
        expect_error(
            f"first symbolic call, {shape}",
            lambda: cls(UNITS)(keras.Input(shape[1:])),  # noqa: B023
            "rank 3",
            f"Received: inputs.shape={(None, *shape[1:])}",
        )
        # ... and on a built layer, leaving its weights alone.
        layer = built_layer(cls)
        before = snapshot(layer.weights)
        expect_error(
            f"built layer, {shape}",
            lambda: layer(np.zeros(shape, "float32")),  # noqa: B023
            "rank 3",
            f"Received: inputs.shape={shape}",
        )
        assert_unchanged(layer.weights, before)
    # A feature size other than the built one, or none at all.
    layer = built_layer(cls)
    before = snapshot(layer.weights)
    expect_error(
        "7 features",
        lambda: layer(sequences(features=7)),
        f"built for {FEATURES} input features",
        f"Received: inputs.shape={(BATCH, TIME, 7)}",
    )
    assert_unchanged(layer.weights, before)
    expect_error(
        "unknown feature size",
        lambda: cls(UNITS)(keras.Input((TIME, None))),
        "feature size",
        "Received: inputs.shape=(None, 3, None)",
    )


@pytest.mark.parametrize("cls", LAYERS.values(), ids=LAYERS.keys())
def test_built_layer_reused_in_functional_model_checks_its_input(cls):
    # A built layer applied to a Keras Input must refuse a wrong shape when
    # the model is made (keras.layers.LSTM refuses a wrong rank there), not
    # at the first predict.
    layer = built_layer(cls)
    for shape in BAD_RANKS:
        expect_error(
            f"symbolic {shape}",
            lambda: layer(keras.Input(shape[1:])),  # noqa: B023
            "rank 3",
            f"Received: inputs.shape={(None, *shape[1:])}",
        )
    expect_error(
        "7 features",
        lambda: layer(keras.Input((TIME, 7))),
        f"built for {FEATURES} input features",
        "Received: inputs.shape=(None, 3, 7)",
    )


@pytest.mark.parametrize("cls", CELLS.values(), ids=CELLS.keys())
def test_cell_checks_its_step_input(cls):
    # A cell does one step on (batch, features): the analogue of the layer's
    # rank and feature-size checks. (Rank 1 broadcasts silently today.)
    cell = cls(UNITS)
    cell.build((None, FEATURES))
    states = [np.zeros((BATCH, UNITS), "float32")] * (2 if cls is kr.LSTMCell else 1)
    expect_error(
        "7 features",
        lambda: cell(np.zeros((BATCH, 7), "float32"), states),
        f"{FEATURES}",
        f"Received: inputs.shape={(BATCH, 7)}",
    )
    for shape in [(FEATURES,), (BATCH, TIME, FEATURES)]:
        expect_error(
            f"rank {len(shape)}",
            lambda: cell(np.zeros(shape, "float32"), states),  # noqa: B023
            "rank 2",
            f"Received: inputs.shape={shape}",
        )


# -- mask -------------------------------------------------------------------


@pytest.mark.parametrize("cls", LAYERS.values(), ids=LAYERS.keys())
def test_mask_shape_must_match(cls):
    layer = built_layer(cls)
    for mask_shape in [(BATCH, TIME + 1), (BATCH, TIME, 1), (BATCH + 1, TIME)]:
        expect_error(
            f"mask {mask_shape}",
            lambda: layer(sequences(), mask=np.ones(mask_shape, bool)),  # noqa: B023
            "mask",
            f"Received: mask.shape={mask_shape}",
        )
    mask = np.array([[True, True, False], [True, False, False]])
    assert tuple(layer(sequences(), mask=mask).shape) == (BATCH, UNITS)


# -- initial_state ----------------------------------------------------------


@pytest.mark.parametrize("cls", LAYERS.values(), ids=LAYERS.keys())
def test_initial_state_number_and_shape(cls):
    layer = built_layer(cls)
    expected = num_states(cls)
    wrong = 3 - expected  # 1 state for LSTM, 2 for SimpleRNN and GRU
    expect_error(
        f"{wrong} states",
        lambda: layer(sequences(), initial_state=zero_states(cls, count=wrong)),
        f"{expected} initial state",
        f"Received: len(initial_state)={wrong}",
    )
    for batch, units in [(BATCH, UNITS + 1), (BATCH + 1, UNITS)]:
        states = zero_states(cls, batch=batch, units=units)
        expect_error(
            f"states of shape {(batch, units)}",
            lambda: layer(sequences(), initial_state=states),  # noqa: B023
            f"initial_state[0] of shape {(BATCH, UNITS)}",
            f"Received: initial_state[0].shape={(batch, units)}",
        )
    states = [s[:, None, :] for s in zero_states(cls)]
    expect_error(
        "rank-3 states",
        lambda: layer(sequences(), initial_state=states),
        "initial_state[0]",
        f"Received: initial_state[0].shape={(BATCH, 1, UNITS)}",
    )
    if cls is kr.LSTM:
        h = np.zeros((BATCH, UNITS), "float32")
        c = np.zeros((BATCH, UNITS + 2), "float32")
        expect_error(
            "wrong c",
            lambda: layer(sequences(), initial_state=[h, c]),
            "initial_state[1]",
            f"Received: initial_state[1].shape={c.shape}",
        )
    good = zero_states(cls)
    assert tuple(layer(sequences(), initial_state=good).shape) == (BATCH, UNITS)


# -- stateful, unroll, reset_state ------------------------------------------


@pytest.mark.parametrize("cls", LAYERS.values(), ids=LAYERS.keys())
def test_unroll_needs_known_time_steps(cls):
    inputs = keras.Input((None, FEATURES))
    expect_error(
        "Input((None, 5))",
        lambda: keras.Model(inputs, cls(UNITS, unroll=True)(inputs)),
        "unroll=True",
        "Received: inputs.shape=(None, None, 5)",
    )
    inputs = keras.Input((TIME, FEATURES))
    model = keras.Model(inputs, cls(UNITS, unroll=True)(inputs))
    assert tuple(model(sequences()).shape) == (BATCH, UNITS)


@pytest.mark.parametrize("cls", LAYERS.values(), ids=LAYERS.keys())
def test_stateful_batch_size_and_reset_state(cls):
    layer = built_layer(cls, stateful=True)
    before = snapshot(layer.states)
    assert any(np.any(b != 0) for b in before)
    expect_error(
        "batch 3",
        lambda: layer(sequences(batch=3)),
        "stateful",
        f"batch of {BATCH}",
        "Received: inputs.shape=(3, 3, 5)",
    )
    assert_unchanged(layer.states, before)
    count = num_states(cls)
    for batch, units in [(BATCH, UNITS + 1), (BATCH + 1, UNITS)]:
        # Only the last state is wrong (for LSTM, c): nothing may be assigned
        # before every state is checked.
        states = zero_states(cls, count=count - 1) + zero_states(
            cls, batch=batch, units=units, count=1
        )
        expect_error(
            f"states of shape {(batch, units)}",
            lambda: layer.reset_state(states=states),  # noqa: B023
            f"initial_state[{count - 1}] of shape {(BATCH, UNITS)}",
            f"Received: initial_state[{count - 1}].shape={(batch, units)}",
        )
        assert_unchanged(layer.states, before)
    expect_error(
        "wrong number of states",
        lambda: layer.reset_state(states=zero_states(cls, count=3 - count)),
        f"{count} initial state",
        f"Received: len(initial_state)={3 - count}",
    )
    assert_unchanged(layer.states, before)

    values = [np.full((BATCH, UNITS), i + 0.5, "float32") for i in range(count)]
    layer.reset_state(states=values)
    assert_unchanged(layer.states, values)
    if count == 1:  # a single array is accepted for a single state
        layer.reset_state(states=values[0] * 2)
        assert_unchanged(layer.states, [values[0] * 2])
    layer.reset_state()
    assert_unchanged(layer.states, [np.zeros((BATCH, UNITS))] * count)

    for non_stateful in [cls(UNITS), built_layer(cls)]:
        expect_error(
            f"non-stateful, built={non_stateful.built}",
            lambda: non_stateful.reset_state(states=zero_states(cls)),  # noqa: B023
            "reset_state(states=",
            "Received: stateful=False",
        )

"""Saving: ``.keras`` files, configs and weights give back the same model.

Every ``.keras`` file is loaded with ``keras.models.load_model`` as a user
would: ``safe_mode`` on, no ``custom_objects``; the package's registration
under ``"keras_recurrent"`` is what must make it work.
"""

import inspect
import textwrap

import keras
import numpy as np
import pytest
from helpers import CELL_CLASSES as CELLS
from helpers import LAYER_CLASSES as LAYERS
from helpers import assert_all_close, num_states, random_inputs, run_fresh

import keras_recurrent as kr

ALL = {**LAYERS, **CELLS}

FEATURES, TIME = 5, 6

# Non-default arguments, so that a round trip that forgets one shows it.
NON_DEFAULT = {
    kr.SimpleRNNCell: dict(
        activation="relu",
        use_bias=True,
        kernel_initializer="he_normal",
        recurrent_initializer="glorot_normal",
        bias_initializer="random_normal",
        kernel_regularizer="l2",
        recurrent_regularizer=keras.regularizers.L1(0.02),
        bias_regularizer="l1",
        kernel_constraint=keras.constraints.MaxNorm(3.0),
        recurrent_constraint="unit_norm",
        bias_constraint="non_neg",
        dropout=0.25,
        recurrent_dropout=0.125,
        seed=17,
    ),
    kr.LSTMCell: dict(
        activation="relu",
        recurrent_activation="hard_sigmoid",
        use_bias=True,
        kernel_initializer="he_normal",
        recurrent_initializer="glorot_normal",
        bias_initializer="random_normal",
        unit_forget_bias=False,
        kernel_regularizer="l2",
        recurrent_regularizer=keras.regularizers.L1(0.02),
        bias_regularizer="l1",
        kernel_constraint=keras.constraints.MaxNorm(3.0),
        recurrent_constraint="unit_norm",
        bias_constraint="non_neg",
        dropout=0.25,
        recurrent_dropout=0.125,
        seed=17,
        use_peepholes=True,
        peephole_initializer=keras.initializers.RandomNormal(stddev=0.7, seed=3),
        peephole_regularizer=keras.regularizers.L2(0.03),
        peephole_constraint=keras.constraints.MaxNorm(2.0),
    ),
    kr.GRUCell: dict(
        activation="relu",
        recurrent_activation="hard_sigmoid",
        use_bias=True,
        kernel_initializer="he_normal",
        recurrent_initializer="glorot_normal",
        bias_initializer="random_normal",
        kernel_regularizer="l2",
        recurrent_regularizer=keras.regularizers.L1(0.02),
        bias_regularizer="l1",
        kernel_constraint=keras.constraints.MaxNorm(3.0),
        recurrent_constraint="unit_norm",
        bias_constraint="non_neg",
        dropout=0.25,
        recurrent_dropout=0.125,
        reset_after=False,
        seed=17,
    ),
}
LAYER_ONLY = dict(
    activity_regularizer="l2",
    return_sequences=True,
    return_state=True,
    go_backwards=True,
    stateful=False,
    unroll=True,
    use_cudnn=False,
)
NON_DEFAULT[kr.SimpleRNN] = {**NON_DEFAULT[kr.SimpleRNNCell], **LAYER_ONLY}
NON_DEFAULT[kr.LSTM] = {**NON_DEFAULT[kr.LSTMCell], **LAYER_ONLY}
NON_DEFAULT[kr.GRU] = {**NON_DEFAULT[kr.GRUCell], **LAYER_ONLY}

PEEPHOLE_ARGS = dict(
    peephole_initializer=keras.initializers.RandomUniform(-0.9, 0.9, seed=11),
    peephole_regularizer=keras.regularizers.L1L2(l1=0.01, l2=0.02),
    peephole_constraint=keras.constraints.MinMaxNorm(0.1, 0.8),
)


def inputs(batch=3, seed=0):
    return random_inputs(batch=batch, time=TIME, features=FEATURES, seed=seed)


def outputs(model, x):
    """The model's outputs in inference, as a list of NumPy arrays."""
    return [keras.ops.convert_to_numpy(y) for y in keras.tree.flatten(model(x))]


def assert_same(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_array_equal(a, e)


def perturb_weights(model, seed=5):
    """Random weights everywhere, including biases and peepholes.

    Zero-initialized biases would let a load that drops them pass unnoticed.
    """
    rng = np.random.default_rng(seed)
    model.set_weights(
        [
            w + rng.normal(scale=0.3, size=w.shape).astype(w.dtype)
            for w in model.get_weights()
        ]
    )
    return model


def save_and_load(model, path):
    model.save(path)
    return keras.models.load_model(path)  # safe_mode=True, no custom_objects


def layer_classes(model):
    found = []
    for layer in model.layers:
        found.append(type(layer))
        for attr in ("forward_layer", "backward_layer", "cell"):
            inner = getattr(layer, attr, None)
            if inner is not None:
                found.append(type(inner))
        for cell in getattr(getattr(layer, "cell", None), "cells", []):
            found.append(type(cell))
    return found


# -- models -------------------------------------------------------------------


def sequential_model(cls):
    return keras.Sequential(
        [keras.Input((TIME, FEATURES)), cls(4), keras.layers.Dense(2)]
    )


def functional_model(cls):
    x = keras.Input((None, FEATURES))
    sequence, *states = cls(4, return_sequences=True, return_state=True)(x)
    return keras.Model(x, [keras.layers.Dense(2)(sequence), *states])


def bidirectional_model(cls):
    return keras.Sequential(
        [
            keras.Input((TIME, FEATURES)),
            keras.layers.Bidirectional(cls(4, return_sequences=True)),
            keras.layers.Bidirectional(cls(3), merge_mode="sum"),
        ]
    )


def stacked_model():
    return keras.Sequential(
        [
            keras.Input((TIME, FEATURES)),
            kr.LSTM(4, return_sequences=True),
            kr.GRU(3),
            keras.layers.Dense(1),
        ]
    )


def cells_model(cls):
    return keras.Sequential(
        [keras.Input((TIME, FEATURES)), keras.layers.RNN(cls(4), return_sequences=True)]
    )


def stacked_cells_model():
    cells = [kr.LSTMCell(4), kr.GRUCell(3), kr.SimpleRNNCell(2)]
    return keras.Sequential([keras.Input((TIME, FEATURES)), keras.layers.RNN(cells)])


def peephole_model():
    return keras.Sequential(
        [keras.Input((TIME, FEATURES)), kr.LSTM(4, **PEEPHOLE_ARGS)]
    )


MODELS = {
    **{f"sequential-{k}": (lambda c=c: sequential_model(c)) for k, c in LAYERS.items()},
    **{f"functional-{k}": (lambda c=c: functional_model(c)) for k, c in LAYERS.items()},
    **{
        f"bidirectional-{k}": (lambda c=c: bidirectional_model(c))
        for k, c in LAYERS.items()
    },
    "stacked": stacked_model,
    **{f"rnn-{k}": (lambda c=c: cells_model(c)) for k, c in CELLS.items()},
    "rnn-stacked-cells": stacked_cells_model,
    "peephole": peephole_model,
}


# -- .keras files -------------------------------------------------------------


def test_keras_file_round_trip(tmp_path):
    x = inputs()
    for name, make in MODELS.items():
        model = perturb_weights(make())
        expected = outputs(model, x)
        loaded = save_and_load(model, tmp_path / f"{name}.keras")
        try:
            assert_same(outputs(loaded, x), expected)
            assert layer_classes(loaded) == layer_classes(model)
            assert any(
                c.__module__.startswith("keras_recurrent")
                for c in layer_classes(loaded)
            )
        except AssertionError as failure:
            raise AssertionError(f"[{name}] {failure}") from None


def test_keras_file_keeps_peephole_arguments(tmp_path):
    model = perturb_weights(peephole_model())
    loaded = save_and_load(model, tmp_path / "peephole.keras")
    layer, original = loaded.layers[0], model.layers[0]
    assert layer.use_peepholes is True
    for name, value in PEEPHOLE_ARGS.items():
        assert getattr(layer, name).get_config() == value.get_config(), name
        assert type(getattr(layer, name)) is type(value), name
    # Peephole weights came back, and their regularizer still adds its loss.
    peepholes = [w for w in layer.weights if "peephole" in w.path]
    assert len(peepholes) == 3
    for w, v in zip(peepholes, [w for w in original.weights if "peephole" in w.path]):
        np.testing.assert_array_equal(w.numpy(), v.numpy())
    model(inputs())
    loaded(inputs())
    assert len(loaded.losses) == len(model.losses) > 0
    assert_same(
        [keras.ops.convert_to_numpy(v) for v in loaded.losses],
        [keras.ops.convert_to_numpy(v) for v in model.losses],
    )


def test_keras_file_loads_in_a_fresh_process(tmp_path):
    x = inputs()
    names = [
        "sequential-simple_rnn",
        "functional-lstm",
        "bidirectional-gru",
        "rnn-stacked-cells",
        "peephole",
    ]
    expected = {}
    for name in names:
        model = perturb_weights(MODELS[name]())
        model.save(tmp_path / f"{name}.keras")
        expected[name] = outputs(model, x)
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path

        import keras
        import numpy as np

        import keras_recurrent  # noqa: F401  (registers the classes, nothing else)

        folder = Path(sys.argv[1])
        x = np.load(folder / "x.npy")
        for name in sys.argv[2:]:
            model = keras.models.load_model(folder / f"{name}.keras")
            ys = [keras.ops.convert_to_numpy(y) for y in keras.tree.flatten(model(x))]
            np.savez(folder / f"{name}.out.npz", *ys)
        """
    )
    run_fresh(["-c", script, str(tmp_path), *names], cwd=tmp_path, timeout=120)
    for name in names:
        with np.load(tmp_path / f"{name}.out.npz") as saved:
            got = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        try:
            assert_same(got, expected[name])
        except AssertionError as failure:
            raise AssertionError(f"[{name}] {failure}") from None


# -- configs ------------------------------------------------------------------


def init_parameters(cls):
    return [
        name
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    ]


@pytest.mark.parametrize("cls", ALL.values(), ids=ALL.keys())
def test_config_is_complete(cls):
    for obj in [cls(3), cls(3, **NON_DEFAULT[cls])]:
        config = obj.get_config()
        missing = [name for name in init_parameters(cls) if name not in config]
        assert missing == [], f"{cls.__name__}.get_config() lacks {missing}"


def step_outputs(cell, x):
    """One step of a cell on the first time step of ``x``."""
    rng = np.random.default_rng(3)
    states = [
        rng.normal(size=(x.shape[0], cell.units)).astype("float32")
        for _ in range(num_states(cell))
    ]
    output, new_states = cell(x[:, 0, :], states)
    return [keras.ops.convert_to_numpy(y) for y in [output, *new_states]]


@pytest.mark.parametrize("cls", ALL.values(), ids=ALL.keys())
def test_config_round_trip(cls):
    x = inputs()
    for kwargs in [{}, NON_DEFAULT[cls]]:
        original = cls(3, **kwargs)
        config = original.get_config()
        clone = cls.from_config(config)
        assert type(clone) is cls
        assert clone.get_config() == config
        # Through the registered name, as load_model resolves it.
        serialized = keras.saving.serialize_keras_object(original)
        assert serialized["registered_name"] == f"keras_recurrent>{cls.__name__}"
        revived = keras.saving.deserialize_keras_object(serialized)
        assert type(revived) is cls
        assert revived.get_config() == config

        shape = (None, FEATURES) if cls in CELLS.values() else (None, TIME, FEATURES)
        original.build(shape)
        clone.build(shape)
        weights = [
            w + np.random.default_rng(1).normal(scale=0.2, size=w.shape)
            for w in original.get_weights()
        ]
        original.set_weights(weights)
        clone.set_weights(original.get_weights())
        if cls in CELLS.values():
            expected, got = step_outputs(original, x), step_outputs(clone, x)
        else:
            expected, got = outputs(original, x), outputs(clone, x)
        assert_same(got, expected)


# -- weights ------------------------------------------------------------------


def test_weights_file_round_trip(tmp_path):
    x = inputs()
    for name in [
        "sequential-simple_rnn",
        "sequential-lstm",
        "sequential-gru",
        "bidirectional-lstm",
        "rnn-stacked-cells",
        "peephole",
    ]:
        model = perturb_weights(MODELS[name](), seed=1)
        path = tmp_path / f"{name}.weights.h5"
        model.save_weights(path)
        fresh = perturb_weights(MODELS[name](), seed=2)
        try:
            with pytest.raises(AssertionError):  # the test can tell them apart
                assert_same(outputs(fresh, x), outputs(model, x))
            fresh.load_weights(path)
            assert_same(outputs(fresh, x), outputs(model, x))
        except AssertionError as failure:
            raise AssertionError(f"[{name}] {failure}") from None


def test_builtin_lstm_weights_load_into_lstm_without_peepholes(tmp_path):
    x = inputs()
    builtin = keras.layers.LSTM(4, return_sequences=True, return_state=True)
    ours = kr.LSTM(4, use_peepholes=False, return_sequences=True, return_state=True)
    builtin.build((None, TIME, FEATURES))
    ours.build((None, TIME, FEATURES))
    rng = np.random.default_rng(2)
    builtin.set_weights(
        [
            w + rng.normal(scale=0.3, size=w.shape).astype(w.dtype)
            for w in builtin.get_weights()
        ]
    )
    ours.set_weights(builtin.get_weights())
    assert [w.shape for w in ours.weights] == [w.shape for w in builtin.weights]
    assert_all_close(ours(x), builtin(x))

    # A built-in model's weights file loads into the same model made with ours.
    builtin_model = perturb_weights(
        keras.Sequential([keras.Input((TIME, FEATURES)), keras.layers.LSTM(4)])
    )
    builtin_model.save_weights(tmp_path / "builtin.weights.h5")
    ours_model = keras.Sequential(
        [keras.Input((TIME, FEATURES)), kr.LSTM(4, use_peepholes=False)]
    )
    ours_model.load_weights(tmp_path / "builtin.weights.h5")
    for a, b in zip(ours_model.get_weights(), builtin_model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert_all_close(ours_model(x), builtin_model(x))

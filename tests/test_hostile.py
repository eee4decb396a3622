"""Hostile and broken input: clear errors, never code execution, no crashes.

Saved files (copies of the committed fixtures, altered):
- a config naming an unknown class, a weight of the wrong shape, a missing or
  an extra weight, a non-numeric or non-positive unit count, an unknown
  config key: ``load_model`` raises an error that names the problem;
- a config carrying code, a Python lambda as activation or any importable
  callable as a layer: refused while ``safe_mode`` is on (the default), and
  the code never runs.

Values (ours beside the built-in, or the float64 reference for peepholes):
- NaN and Inf inputs propagate, as in the built-ins, without an error: a NaN
  at step t makes that sequence's outputs and states NaN from t on (other
  sequences are untouched); an Inf saturates the activations and can give
  NaN. A NaN at a masked step does not reach the outputs or states; it still
  makes the gradients NaN (0 * NaN), as in the built-ins.
- float16, float64, integer and boolean inputs are cast to the layer's
  compute dtype, as by the built-ins; float16 and mixed_float16 layers match
  the built-ins to float16 precision.
- an empty batch (B=0) gives empty outputs and states, and zero weight
  gradients (``keras.layers.LSTM`` fails there instead; see the test);
  zero time steps (T=0) raise a ``ValueError`` that names the shape.
"""

import functools
import json
import warnings
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
import reference
from helpers import LAYERS, builtin_kwargs, builtin_reference, gradients

import keras_recurrent as kr

FIXTURES = Path(__file__).resolve().parent / "fixtures"

NAMES = list(LAYERS)
B, T, F, H = 3, 5, 4, 3
BACKEND = keras.backend.backend()


# -- hostile saved files --------------------------------------------------------

# peephole_lstm.keras: Sequential[InputLayer, keras_recurrent LSTM(4), Dense(2)]
SOURCE = FIXTURES / "peephole_lstm.keras"
LSTM_CONFIG = ("config", "layers", 1)
LSTM_WEIGHTS = "layers/lstm/cell/vars"


def altered_copy(tmp_path, config=None, weights=None):
    """A copy of ``SOURCE`` with its config.json and/or weights altered."""
    with zipfile.ZipFile(SOURCE) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    if config is not None:
        tree = json.loads(files["config.json"])
        node = tree
        for key in LSTM_CONFIG:
            node = node[key]
        config(node)
        files["config.json"] = json.dumps(tree).encode()
    if weights is not None:
        h5 = tmp_path / "model.weights.h5"
        h5.write_bytes(files["model.weights.h5"])
        with h5py.File(h5, "r+") as store:
            weights(store[LSTM_WEIGHTS])
        files["model.weights.h5"] = h5.read_bytes()
    path = tmp_path / "altered.keras"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def assert_load_fails(path, error, *parts):
    with pytest.raises(error) as raised:
        keras.models.load_model(path)
    message = str(raised.value)
    for part in parts:
        assert part in message, f"{part!r} not in the error:\n{message[:3000]}"


def test_unaltered_copy_loads(tmp_path):
    """The alterations below are all that is wrong with those files."""
    model = keras.models.load_model(altered_copy(tmp_path, config=lambda c: None))
    assert type(model.layers[0]) is kr.LSTM


def test_unknown_class(tmp_path):
    def rename(layer):
        layer["class_name"] = "NoSuchLSTM"
        layer["registered_name"] = "keras_recurrent>NoSuchLSTM"

    assert_load_fails(altered_copy(tmp_path, config=rename), TypeError, "NoSuchLSTM")


def test_wrong_weight_shape(tmp_path):
    def reshape(vars_):
        del vars_["1"]  # recurrent_kernel, (4, 16)
        vars_["1"] = np.zeros((4, 12), "float32")

    # Keras prints the value's shape as the backend gives it: a tuple, or
    # torch.Size([4, 12]) on PyTorch.
    value_shape = "torch.Size([4, 12])" if BACKEND == "torch" else "(4, 12)"
    assert_load_fails(
        altered_copy(tmp_path, weights=reshape),
        ValueError,
        "recurrent_kernel",
        "variable.shape=(4, 16)",
        f"value.shape={value_shape}",
    )


@pytest.mark.parametrize("change", ["missing", "extra"])
def test_missing_or_extra_weight(tmp_path, change):
    def alter(vars_):
        if change == "missing":
            del vars_["5"]  # output_gate_peephole_weights
        else:
            vars_["6"] = np.zeros((4,), "float32")

    received = 5 if change == "missing" else 7
    assert_load_fails(
        altered_copy(tmp_path, weights=alter),
        ValueError,
        "expected 6 variables",
        f"received {received} variables",
        "output_gate_peephole_weights",
    )


@pytest.mark.parametrize("units", ["four", "4", 2.5, -3, 0, None, True, [4]])
def test_bad_unit_count(tmp_path, units):
    def set_units(layer):
        layer["config"]["units"] = units

    assert_load_fails(
        altered_copy(tmp_path, config=set_units),
        ValueError,
        "`units` must be a positive integer",
        f"Received: units={units!r}",
    )


def test_unknown_config_key(tmp_path):
    def add_key(layer):
        layer["config"]["peephole_mode"] = "full"

    assert_load_fails(
        altered_copy(tmp_path, config=add_key), (TypeError, ValueError), "peephole_mode"
    )


def _lambda_writing(marker):
    """A serialized lambda that creates ``marker`` when it runs."""
    with warnings.catch_warnings():  # Keras warns that lambdas are unsafe
        warnings.simplefilter("ignore")
        return keras.saving.serialize_keras_object(
            lambda x, path=str(marker): (open(path, "w").close(), x)[1]
        )


def test_lambda_activation_never_runs(tmp_path):
    marker = tmp_path / "lambda_ran"
    payload = _lambda_writing(marker)

    def inject(layer):
        layer["config"]["activation"] = payload

    path = altered_copy(tmp_path, config=inject)
    assert_load_fails(path, ValueError, "lambda", "safe_mode")
    assert not marker.exists()

    # The payload is live: with safe_mode off (never do this with an untrusted
    # file) the layer loads and the lambda runs when called.
    model = keras.models.load_model(path, safe_mode=False)
    model(np.zeros((1, 6, 3), "float32"))
    assert marker.exists()


@pytest.mark.parametrize("where", ["layer", "activation"])
def test_importable_callable_never_runs(tmp_path, where):
    marker = tmp_path / "system_ran"
    payload = {
        "module": "os",
        "class_name": "system",
        "config": {"command": f"touch {marker}"},
        "registered_name": None,
    }

    def inject(layer):
        if where == "layer":
            layer.clear()
            layer.update(payload)
        else:
            layer["config"]["activation"] = payload

    with pytest.raises((TypeError, ValueError)):
        keras.models.load_model(altered_copy(tmp_path, config=inject))
    assert not marker.exists()


def test_not_a_keras_file(tmp_path):
    path = tmp_path / "garbage.keras"
    path.write_bytes(b"PK\x03\x04 not really a zip archive")
    with pytest.raises((ValueError, OSError, zipfile.BadZipFile)):
        keras.models.load_model(path)


# -- values ----------------------------------------------------------------------


@functools.cache
def default_pair(name):
    """``pair(name)``, shared by the tests: each new layer compiles its loop."""
    return pair(name)


def pair(name, **kwargs):
    """Ours and the built-in (None for peepholes), built, same random weights."""
    config = LAYERS[name]
    options = {"return_sequences": True, "return_state": True, **kwargs}
    ours = config.layer(H, **config.kwargs, **options)
    ours.build((None, T, F))
    rng = np.random.default_rng(NAMES.index(name))
    weights = [rng.normal(scale=0.5, size=w.shape) for w in ours.get_weights()]
    ours.set_weights(weights)
    builtin = None
    if config.builtin is not None:
        builtin = config.builtin(H, **builtin_kwargs(config.kwargs), **options)
        builtin.build((None, T, F))
        builtin.set_weights(ours.get_weights())
    return ours, builtin


def numpy(values):
    return [keras.ops.convert_to_numpy(v) for v in keras.tree.flatten(values)]


def expected_outputs(name, ours, builtin, x, mask=None):
    """The built-in's outputs, or the float64 reference's for peepholes."""
    if builtin is not None:
        return numpy(builtin(x, mask=mask))
    with np.errstate(all="ignore"):  # NaN and Inf pass through NumPy too
        sequence, h, c = reference.lstm(x, ours.get_weights(), mask=mask)
    return [sequence, h, c]


def assert_same(actual, expected, atol=1e-5):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.shape == e.shape
        np.testing.assert_array_equal(np.isnan(a), np.isnan(e))
        np.testing.assert_allclose(a, e, atol=atol, rtol=atol, equal_nan=True)


def poisoned_inputs():
    x = np.random.default_rng(5).normal(size=(B, T, F)).astype("float32")
    x[0, 2, 1] = np.nan
    x[1, 3, 0] = np.inf
    x[2, 1, 3] = -np.inf
    return x


@pytest.mark.parametrize("name", NAMES)
def test_nan_and_inf_propagate(name):
    ours, builtin = default_pair(name)
    x = poisoned_inputs()
    out = numpy(ours(x))
    assert_same(out, expected_outputs(name, ours, builtin, x))
    sequence = out[0]
    assert np.isnan(sequence[0, 2:]).all() and not np.isnan(sequence[0, :2]).any()
    assert all(np.isnan(state[0]).all() for state in out[1:])


def masked_poison():
    mask = np.ones((B, T), bool)
    mask[0, 2] = mask[1, 3] = mask[2, 1] = False  # where poisoned_inputs are
    return mask


@pytest.mark.parametrize("name", NAMES)
def test_nan_at_a_masked_step_stays_out_of_outputs(name):
    ours, builtin = default_pair(name)
    x, mask = poisoned_inputs(), masked_poison()
    out = numpy(ours(x, mask=mask))
    assert all(np.isfinite(o).all() for o in out)
    assert_same(out, expected_outputs(name, ours, builtin, x, mask))


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_nan_at_a_masked_step_makes_gradients_nan_as_builtin(name):
    """0 * NaN where the mask selects: documented, and the built-ins' too."""
    x, mask = poisoned_inputs(), masked_poison()
    nan_gradients = []
    for layer in default_pair(name):

        def loss(inputs, *_, layer=layer):
            return sum(keras.ops.sum(o) for o in layer(inputs, mask=mask))

        grads = gradients(loss, [x, *layer.trainable_weights])
        nan_gradients.append([bool(np.isnan(g).any()) for g in grads])
    assert nan_gradients[0] == nan_gradients[1] == [True] * 4


@pytest.mark.parametrize("dtype", ["float16", "float64", "int32", "int64", "bool"])
@pytest.mark.parametrize("name", NAMES)
def test_input_dtypes_are_cast(name, dtype):
    ours, builtin = default_pair(name)
    values = np.random.default_rng(6).normal(size=(B, T, F)) * 3
    x = values > 0 if dtype == "bool" else values.astype(dtype)
    out = numpy(ours(x))
    assert all(o.dtype == np.float32 for o in out)
    assert_same(out, numpy(ours(x.astype("float32"))), atol=0)
    assert_same(out, expected_outputs(name, ours, builtin, x.astype("float32")))


@pytest.mark.parametrize("policy", ["float16", "mixed_float16"])
@pytest.mark.parametrize("name", ["simple_rnn", "lstm", "gru", "gru_reset_before"])
def test_float16_layers_match_builtin(name, policy):
    config = LAYERS[name]
    options = {"dtype": policy, "return_sequences": True}
    if policy == "float16" and BACKEND != "tensorflow":
        # The default recurrent initializer, Orthogonal, takes a QR
        # decomposition in the variable dtype, and JAX and PyTorch have no
        # float16 QR on CPU: ours and the built-ins fail to build alike
        # (Keras 3.15). The weights are the built-in's, copied, either way.
        options["recurrent_initializer"] = "glorot_uniform"
    ours = config.layer(H, **options, **config.kwargs)
    builtin = config.builtin(H, **options, **builtin_kwargs(config.kwargs))
    ours.build((None, T, F))
    builtin.build((None, T, F))
    ours.set_weights(builtin.get_weights())
    x = np.random.default_rng(7).normal(size=(B, T, F)).astype("float16")
    out, expected = numpy(ours(x)), numpy(builtin(x))
    assert out[0].dtype == expected[0].dtype == np.float16
    np.testing.assert_allclose(
        out[0].astype("float32"), expected[0].astype("float32"), atol=2e-3
    )


EMPTY_MASK = np.zeros((0, T), bool)
EMPTY_CASES = {  # case -> (layer options, mask)
    "default": (None, None),
    "masked": (None, EMPTY_MASK),
    "unroll_backwards_masked": ({"unroll": True, "go_backwards": True}, EMPTY_MASK),
}


@pytest.mark.parametrize("case", list(EMPTY_CASES))
@pytest.mark.parametrize("name", NAMES)
def test_empty_batch(name, case):
    options, mask = EMPTY_CASES[case]
    ours, builtin = default_pair(name) if options is None else pair(name, **options)
    x = np.zeros((0, T, F), "float32")
    out = numpy(ours(x, mask=mask))
    shapes = [(0, T, H)] + [(0, H)] * (len(out) - 1)
    assert [o.shape for o in out] == shapes
    if builtin is not None and name != "lstm":
        # keras.layers.LSTM fails on an empty batch ("Biases must be 1D"
        # from TensorFlow's BiasAdd); SimpleRNN and GRU give these outputs.
        # builtin_reference: on PyTorch the built-in's unrolled backwards
        # masked loop raises, so its rolled loop is the reference there.
        reference_layer = builtin_reference(builtin, masked=mask is not None)
        assert_same(out, numpy(reference_layer(x, mask=mask)))

    def loss(inputs, *_):
        return sum(keras.ops.sum(o) for o in ours(inputs, mask=mask))

    grads = gradients(loss, [x, *ours.trainable_weights])
    assert grads[0].shape == x.shape
    assert all(np.all(g == 0) for g in grads[1:])


@pytest.mark.parametrize("name", ["simple_rnn", "lstm_peepholes", "gru"])
def test_zero_time_steps_raise_a_clear_error(name):
    """The built-ins fail inside TensorFlow ("slice index 0 of dimension 1 out
    of bounds"); ours must say what is wrong, in the style of its other
    input checks."""
    for unroll in (False, True):
        ours, _ = pair(name, unroll=unroll)
        with pytest.raises(ValueError) as raised:
            ours(np.zeros((2, 0, F), "float32"))
        message = str(raised.value)
        assert f"Received: inputs.shape=(2, 0, {F})" in message, message
        assert ours.name in message, message

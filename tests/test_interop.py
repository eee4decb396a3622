"""keras_recurrent.interop: PyTorch modules in and out, and Keras 2 weights.

References: the ``torch.nn`` modules themselves, run on the same inputs,
and Keras 2's own cells (``tensorflow.python.keras``, shipped inside
TensorFlow). Tolerances: ``1e-5`` against PyTorch in float32, ``1e-12`` in
float64, ``1e-6`` against Keras 2.
"""

import re

import keras
import numpy as np
import pytest
from helpers import assert_all_close, random_inputs, run_fresh

import keras_recurrent as kr
from keras_recurrent import interop
from keras_recurrent._base import RecurrentLayer

torch = pytest.importorskip("torch")

B, T, F, H = 2, 5, 3, 4


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _torch_module(kind, seed=0, **kwargs):
    """A ``torch.nn`` module with random weights and nonzero biases."""
    torch.manual_seed(seed)
    module_class, extra = {
        "rnn_tanh": (torch.nn.RNN, {"nonlinearity": "tanh"}),
        "rnn_relu": (torch.nn.RNN, {"nonlinearity": "relu"}),
        "lstm": (torch.nn.LSTM, {}),
        "gru": (torch.nn.GRU, {}),
    }[kind]
    return module_class(F, H, **extra, **kwargs).eval()


def _run_torch(module, x, initial_state=None):
    """``(outputs, [h_n, (c_n)])`` of ``module`` on batch-major NumPy ``x``."""
    inputs = torch.from_numpy(x)
    if not module.batch_first:
        inputs = inputs.transpose(0, 1)
    with torch.no_grad():
        outputs, states = module(inputs, initial_state)
    if not module.batch_first:
        outputs = outputs.transpose(0, 1)
    states = list(states) if isinstance(states, tuple) else [states]
    return outputs.numpy(), [s.numpy() for s in states]


# A covering subset of kind x num_layers x bidirectional x batch_first x bias:
# every kind, and each of the four options both ways. (The round trips in
# test_to_torch_gives_outputs_and_final_states cover the other kinds'
# bidirectional and bias cases.)
FROM_TORCH = [
    ("rnn_tanh", 1, False, True, True),
    ("rnn_relu", 1, True, False, False),
    ("lstm", 1, False, False, True),
    ("gru", 2, False, True, False),
    ("lstm_projected", 2, True, True, True),
]


@pytest.mark.parametrize(
    "kind, num_layers, bidirectional, batch_first, bias", FROM_TORCH
)
def test_from_torch_matches_module(kind, num_layers, bidirectional, batch_first, bias):
    projected = kind == "lstm_projected"
    module = _torch_module(
        "lstm" if projected else kind,
        num_layers=num_layers,
        bidirectional=bidirectional,
        batch_first=batch_first,
        bias=bias,
        dropout=0.5 if num_layers > 1 else 0.0,
        **({"proj_size": 2} if projected else {}),
    )
    ours = interop.from_torch(module)
    if num_layers == 1:
        expected_class = keras.layers.Bidirectional if bidirectional else RecurrentLayer
        assert isinstance(ours, expected_class)
    else:
        assert isinstance(ours, keras.Sequential)
        # one layer per PyTorch layer, and its dropout between them
        assert [type(layer).__name__ for layer in ours.layers].count("Dropout") == 1
    x = random_inputs(B, T, F)
    expected, _ = _run_torch(module, x)
    assert_all_close(ours(x), expected)


@pytest.mark.float64
def test_from_torch_and_back_in_float64():
    module = _torch_module("lstm", batch_first=True).double()
    ours = interop.from_torch(module)
    assert ours.dtype == "float64"
    x = random_inputs(B, T, F, dtype="float64")
    expected, _ = _run_torch(module, x)
    assert_all_close(ours(x), expected, atol=1e-12)
    back = interop.to_torch(ours)
    assert back.weight_ih_l0.dtype == torch.float64
    assert_all_close(_run_torch(back, x)[0], expected, atol=1e-12)


def _built(layer, seed=3):
    """``layer`` built for ``F`` features, with random weights (biases
    included), so that no weight is zero or equal to another."""
    layer.build((None, None, F))
    rng = np.random.default_rng(seed)
    layer.set_weights(
        [rng.normal(scale=0.5, size=w.shape).astype(w.dtype) for w in layer.weights]
    )
    return layer


def _sequence_layer(kind, library, **kwargs):
    classes = {
        "rnn": (kr.SimpleRNN, keras.layers.SimpleRNN),
        "lstm": (kr.LSTM, keras.layers.LSTM),
        "gru": (kr.GRU, keras.layers.GRU),
    }
    if library == "ours" and kind == "lstm":
        kwargs["use_peepholes"] = False
    layer_class = classes[kind][library == "keras"]
    return layer_class(H, return_sequences=True, return_state=True, **kwargs)


TO_TORCH = {
    "ours_rnn": lambda: _sequence_layer("rnn", "ours"),
    "keras_rnn_relu": lambda: _sequence_layer("rnn", "keras", activation="relu"),
    "ours_lstm": lambda: _sequence_layer("lstm", "ours"),
    "ours_lstm_projected": lambda: _sequence_layer("lstm", "ours", projection_units=2),
    "keras_lstm_no_bias": lambda: _sequence_layer("lstm", "keras", use_bias=False),
    "ours_gru": lambda: _sequence_layer("gru", "ours"),
    "keras_gru": lambda: _sequence_layer("gru", "keras"),
    "ours_bidirectional_lstm": lambda: keras.layers.Bidirectional(
        _sequence_layer("lstm", "ours")
    ),
    "keras_bidirectional_gru": lambda: keras.layers.Bidirectional(
        _sequence_layer("gru", "keras")
    ),
}


@pytest.mark.parametrize("name", list(TO_TORCH))
def test_to_torch_gives_outputs_and_final_states(name):
    layer = _built(TO_TORCH[name]())
    module = interop.to_torch(layer)
    assert module.batch_first
    directions = 2 if module.bidirectional else 1
    num_states = 2 if isinstance(module, torch.nn.LSTM) else 1
    rng = np.random.default_rng(4)
    # [h, (c)] per direction, as Keras takes them; PyTorch stacks directions.
    sizes = [module.proj_size or H, H][:num_states]
    states = [
        rng.normal(size=(B, size)).astype("float32")
        for _ in range(directions)
        for size in sizes
    ]
    by_kind = [np.stack(states[i::num_states]) for i in range(num_states)]
    torch_states = tuple(torch.from_numpy(s) for s in by_kind)
    x = random_inputs(B, T, F)
    outputs, *final = layer(x, initial_state=states)
    expected_outputs, expected_final = _run_torch(
        module, x, torch_states if num_states == 2 else torch_states[0]
    )
    assert_all_close(outputs, expected_outputs)
    final = [
        np.stack([_numpy(s) for s in final[i::num_states]]) for i in range(num_states)
    ]
    assert_all_close(final, expected_final)
    # And back: the same weights, exactly.
    again = interop.from_torch(module)
    for ours, theirs in zip(again.get_weights(), layer.get_weights()):
        np.testing.assert_array_equal(ours, theirs)


class _ChangedGRUCell(kr.GRUCell):
    """A GRU cell whose step is its own (here the same numbers): a subclass
    that overrides an equation does not inherit its parent's claim."""

    def step_parts(self, weights, recurrent_activation=None):
        return super().step_parts(weights, recurrent_activation)


class _ChangedGRU(kr.GRU):
    cell_class = _ChangedGRUCell


@pytest.mark.parametrize(
    "kind, bidirectional", [("gru", True), ("lstm_projected", False)]
)
def test_to_torch_of_from_torch_stack_is_the_module(kind, bidirectional):
    """A stacked module comes back from Keras with its own numbers: the GRU
    parameter for parameter, the LSTM (whose two biases Keras sums) output
    for output."""
    projected = kind == "lstm_projected"
    module = _torch_module(
        "lstm" if projected else kind,
        num_layers=2,
        bidirectional=bidirectional,
        batch_first=True,
        dropout=0.25,
        **({"proj_size": 2} if projected else {}),
    )
    back = interop.to_torch(interop.from_torch(module))
    assert (back.num_layers, back.dropout, back.bidirectional) == (
        2,
        0.25,
        bidirectional,
    )
    assert back.proj_size == module.proj_size
    if not projected:
        for name, value in module.state_dict().items():
            np.testing.assert_array_equal(back.state_dict()[name], value)
    x = random_inputs(B, T, F)
    assert_all_close(_run_torch(back.eval(), x)[0], _run_torch(module, x)[0])


def _stack(*layers):
    """A Sequential of ``layers``, each built for the one before (a symbolic
    call of the model would trace every layer)."""
    features = F
    for layer in layers:
        layer.build((None, None, features))
        features = layer.compute_output_shape((None, None, features))[-1]
    return keras.Sequential(layers)


REFUSED = {
    "peepholes": (lambda: kr.LSTM(H), "use_peepholes=True"),
    "reset_before": (lambda: kr.GRU(H, reset_after=False), "reset_after=False"),
    "keras_reset_before": (
        lambda: keras.layers.GRU(H, reset_after=False),
        "reset_after=False",
    ),
    "hard_sigmoid": (
        lambda: keras.layers.LSTM(H, recurrent_activation="hard_sigmoid"),
        "recurrent_activation=hard_sigmoid",
    ),
    "rnn_sigmoid": (
        lambda: kr.SimpleRNN(H, activation="sigmoid"),
        "activation=sigmoid",
    ),
    "gru_relu": (lambda: kr.GRU(H, activation="relu"), "activation=relu"),
    "go_backwards": (
        lambda: keras.layers.GRU(H, go_backwards=True),
        "go_backwards=True",
    ),
    "merge_mode": (
        lambda: keras.layers.Bidirectional(kr.GRU(H), merge_mode="sum"),
        "merge_mode='sum'",
    ),
    "not_recurrent": (lambda: keras.layers.Dense(H), "layer=Dense"),
    "other_backward": (
        lambda: keras.layers.Bidirectional(
            kr.GRU(H),
            backward_layer=kr.GRU(H, activation="relu", go_backwards=True),
        ),
        "activation=relu",
    ),
    "wider_backward": (
        lambda: keras.layers.Bidirectional(
            kr.GRU(H), backward_layer=kr.GRU(H + 1, go_backwards=True)
        ),
        f"at 1, GRU(units={H + 1}",
    ),
    "changed_equations": (lambda: _ChangedGRU(H), "cell=_ChangedGRUCell"),
    "gru_layer_norm": (lambda: kr.GRU(H, use_layer_norm=True), "use_layer_norm=True"),
    "rnn_layer_norm": (
        lambda: kr.SimpleRNN(H, use_layer_norm=True),
        "use_layer_norm=True",
    ),
    "not_built": (lambda: kr.GRU(H), "not built"),
    "stack_of_others": (
        lambda: _stack(
            kr.GRU(H, return_sequences=True),
            kr.GRU(H, reset_after=True, activation="relu"),
        ),
        "activation=relu",
    ),
    "stack_of_biases": (
        lambda: _stack(kr.GRU(H, return_sequences=True), kr.GRU(H, use_bias=False)),
        f"at 1, GRU(units={H}, use_bias=False",
    ),
    "stack_dropouts": (
        lambda: _stack(
            kr.GRU(H, return_sequences=True),
            keras.layers.Dropout(0.1),
            kr.GRU(H, return_sequences=True),
            keras.layers.Dropout(0.2),
            kr.GRU(H),
        ),
        "dropout rates [0.1, 0.2]",
    ),
    "stack_of_directions": (
        lambda: _stack(
            keras.layers.Bidirectional(kr.GRU(H, return_sequences=True)), kr.GRU(H)
        ),
        "directions=1)",
    ),
    "stack_dense": (lambda: _stack(kr.GRU(H), keras.layers.Dense(H)), "layer=Dense"),
    "mixed_precision": (
        lambda: _built(kr.GRU(H, dtype="mixed_float16")),
        "dtype_policy=mixed_float16",
    ),
    "lstm_layer_norm": (
        lambda: kr.LSTM(H, use_peepholes=False, use_layer_norm=True),
        "use_layer_norm=True",
    ),
    "cell_clip": (
        lambda: kr.LSTM(H, use_peepholes=False, cell_clip=3.0),
        "cell_clip=3.0",
    ),
    "projection_too_wide": (
        lambda: _built(kr.LSTM(H, use_peepholes=False, projection_units=H)),
        f"projection_units={H}",
    ),
    "projection_clip": (
        lambda: kr.LSTM(
            H, use_peepholes=False, projection_units=2, projection_clip=1.0
        ),
        "projection_clip=1.0",
    ),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_to_torch_refuses_what_torch_cannot_compute(name):
    make, message = REFUSED[name]
    with pytest.raises(ValueError, match=f"Received: .*{re.escape(message)}"):
        interop.to_torch(make())


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: torch.nn.Linear(F, H), "module=Linear"),
        (lambda: torch.nn.GRU(F, H).half(), "dtype=float16"),
    ],
    ids=["not_recurrent", "float16"],
)
def test_from_torch_refuses(make, message):
    with pytest.raises(ValueError, match=f"Received: {re.escape(message)}"):
        interop.from_torch(make())


# -- Keras 2 -------------------------------------------------------------------


@pytest.fixture(scope="module")
def keras2():
    """Keras 2's recurrent layers, as they ship inside TensorFlow."""
    return pytest.importorskip("tensorflow.python.keras.layers.recurrent")


def test_keras2_hard_sigmoid_is_keras2s(keras2):
    import tensorflow as tf
    from tensorflow.python.keras import backend as keras2_backend

    x = np.linspace(-4, 4, 81).astype("float32")  # both kinks on the grid
    expected = keras2_backend.hard_sigmoid(tf.constant(x)).numpy()
    assert_all_close(interop.keras2_hard_sigmoid(x), expected, atol=0)
    assert np.abs(_numpy(keras.activations.hard_sigmoid(x)) - expected).max() > 0.05


def test_keras2_activation_names_mean_the_same_in_keras3(keras2):
    """from_keras2 resolves every activation but hard_sigmoid by its name."""
    import tensorflow as tf
    from tensorflow.python.keras import activations as keras2_activations

    x = np.linspace(-6, 6, 121).astype("float32")[None]
    names = ("tanh", "sigmoid", "relu", "linear", "elu", "selu", "softplus")
    for name in (*names, "softsign", "swish", "gelu", "exponential"):
        expected = keras2_activations.get(name)(tf.constant(x)).numpy()
        actual = _numpy(keras.activations.get(name)(x))
        np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6)


KERAS2 = {
    "peephole_lstm": lambda k2: k2.RNN(k2.PeepholeLSTMCell(H), return_sequences=True),
    "lstm": lambda k2: k2.LSTM(H, return_sequences=True),
    "gru": lambda k2: k2.GRU(H, return_sequences=True),  # reset_after=False
}


@pytest.mark.parametrize("name", list(KERAS2))
def test_from_keras2_reproduces_keras2_default(keras2, name):
    import tensorflow as tf

    theirs = KERAS2[name](keras2)
    assert theirs.cell.recurrent_activation.__name__ == "hard_sigmoid"  # default
    x = random_inputs(B, T, F)
    theirs(tf.constant(x))
    rng = np.random.default_rng(6)
    # Large weights, so that gates reach both ends of the hard sigmoid.
    theirs.set_weights(
        [rng.normal(scale=1.0, size=w.shape).astype("float32") for w in theirs.weights]
    )
    expected = theirs(tf.constant(x)).numpy()
    ours = interop.from_keras2(theirs)
    assert ours.cell.recurrent_activation is interop.keras2_hard_sigmoid
    assert_all_close(ours(x), expected, atol=1e-6)
    # Keras 3's own "hard_sigmoid" is another function: it does not.
    config = {**ours.get_config(), "recurrent_activation": "hard_sigmoid"}
    keras3 = type(ours).from_config(config)
    keras3.build((None, None, F))
    keras3.set_weights(ours.get_weights())
    assert np.abs(_numpy(keras3(x)) - expected).max() > 1e-2


def test_from_keras2_simple_rnn(keras2):
    import tensorflow as tf

    theirs = keras2.SimpleRNN(H, activation="relu", return_sequences=True)
    x = random_inputs(B, T, F)
    expected = theirs(tf.constant(x)).numpy()
    ours = interop.from_keras2(theirs)
    assert ours.cell.activation is keras.activations.relu
    assert_all_close(ours(x), expected, atol=1e-6)


def test_keras2_hard_sigmoid_saves_and_loads_safely(tmp_path):
    layer = kr.LSTM(H, recurrent_activation=interop.keras2_hard_sigmoid)
    model = keras.Sequential([keras.Input((None, F)), layer])
    x = random_inputs(B, T, F)
    path = tmp_path / "keras2.keras"
    model.save(path)
    restored = keras.models.load_model(path, safe_mode=True)
    assert restored.layers[0].cell.recurrent_activation is interop.keras2_hard_sigmoid
    assert_all_close(restored(x), model(x), atol=0)


@pytest.mark.one_backend
def test_interop_imports_without_torch():
    """Only to_torch and from_torch need PyTorch; the package and the
    Keras 2 side import and run without it (JAX backend, torch blocked)."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np, keras_recurrent\n"
        "from keras_recurrent import interop\n"
        "assert interop.keras2_hard_sigmoid(np.array([3.0]))[0] == 1.0\n"
    )
    run_fresh(["-c", code], env={"KERAS_BACKEND": "jax"})


def test_from_keras2_refuses_other_layers():
    with pytest.raises(ValueError, match="Received: Dense"):
        interop.from_keras2(keras.layers.Dense(H))

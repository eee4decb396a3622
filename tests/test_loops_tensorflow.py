"""The TensorFlow loop (``keras_recurrent.loops.tensorflow``: XLA-compiled,
with its own backward pass) gives Keras's numbers: outputs, states and
gradients, in eager calls, inside ``tf.function`` with shapes known only at
run time, and inside models compiled with ``jit_compile`` True and False.
Its fusion boundary changes nothing, in value or gradient.
"""

from unittest import mock

import keras
import numpy as np
import pytest
import test_variants
from helpers import (
    PAIRS,
    assert_all_close,
    assert_layers_keep_their_own_numbers,
    assert_matches_builtin,
    gradients,
    layer_pair,
    random_inputs,
    random_states,
    run_fresh,
)
from helpers import mask_array as _mask_array

import keras_recurrent as kr

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="TensorFlow-only loops",
)

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf

    from keras_recurrent.loops import tensorflow as tf_loop


@pytest.mark.parametrize("name", list(PAIRS))
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"go_backwards": True},
        {"masked": True},
        {"masked": True, "go_backwards": True},
    ],
    ids=["plain", "backwards", "masked", "masked_backwards"],
)
def test_outputs_states_and_gradients_match_builtin(name, options):
    options = dict(options)
    masked = options.pop("masked", False)
    ours, builtin = layer_pair(
        name, return_sequences=True, return_state=True, **options
    )
    x = random_inputs()
    states = random_states(name)
    kwargs = {"mask": _mask_array("padded_leading_and_empty")} if masked else {}
    assert_matches_builtin(ours, builtin, x, states, kwargs)


@pytest.mark.parametrize("name", list(PAIRS))
@pytest.mark.parametrize("features", [5, 1])
def test_shapes_known_only_at_run_time(name, features):
    """Traced with unknown batch and length, run at several of each: the
    outputs and the gradients of the inputs and weights (one input feature
    leaves the input kernel's gradient a shape TensorFlow cannot infer)."""
    ours, builtin = layer_pair(name, features=features, return_sequences=True)
    spec = tf.TensorSpec((None, None, features), "float32")

    def traced(layer):
        @tf.function(input_signature=[spec])
        def run(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                outputs = layer(x)
                loss = tf.reduce_sum(outputs**2)
            return [outputs, *tape.gradient(loss, [x, *layer.trainable_variables])]

        return run

    run_ours, run_builtin = traced(ours), traced(builtin)
    for batch, time in ((1, 6), (40, 3), (2, 11)):
        x = random_inputs(batch=batch, time=time, features=features)
        # Gradients summed over 40 sequences: compared relative to their size.
        assert_all_close(run_ours(x), run_builtin(x), rtol=1e-5)


@pytest.mark.parametrize("name", list(PAIRS))
@pytest.mark.parametrize("jit_compile", [False, True])
def test_training_step_matches_builtin(name, jit_compile):
    """``train_on_batch`` with Adam: same loss, same weights afterwards, also
    when Keras compiles the whole step with XLA around our compiled loop."""
    ours, builtin = layer_pair(name, return_sequences=True)
    x = random_inputs()
    y = np.random.default_rng(3).normal(size=(3, 6, 1)).astype("float32")
    models = []
    for layer in (ours, builtin):
        model = keras.Sequential([layer, keras.layers.Dense(1)])
        model.build((3, 6, 5))
        models.append(model)
    models[0].layers[-1].set_weights(models[1].layers[-1].get_weights())
    losses = []
    for model in models:
        model.compile("adam", "mse", jit_compile=jit_compile)
        losses.append([float(model.train_on_batch(x, y)) for _ in range(3)])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
    assert_all_close(models[0].get_weights(), models[1].get_weights())


@pytest.mark.parametrize("layer_cls", [kr.SimpleRNN, kr.GRU, kr.LSTM])
def test_recurrent_dropout_matches_portable_loop(layer_cls):
    """Same seed, same masks: the TensorFlow loop equals the portable loop,
    outputs and gradients (the backward loop applies the recurrent mask)."""
    x = random_inputs()
    layers = [
        layer_cls(4, dropout=0.3, recurrent_dropout=0.3, seed=5, unroll=unroll)
        for unroll in (False, True)  # unroll=True runs the portable loop
    ]
    for layer in layers:
        layer.build(x.shape)
    layers[1].set_weights(layers[0].get_weights())
    fast, portable = (layer(x, training=True) for layer in layers)
    assert_all_close(fast, portable)

    def loss(layer):
        return lambda x, *_: keras.ops.sum(layer(x, training=True) ** 2)

    # Each layer's second draw of masks: the same again on both sides.
    assert_all_close(
        gradients(loss(layers[0]), [x, *layers[0].trainable_variables]),
        gradients(loss(layers[1]), [x, *layers[1].trainable_variables]),
    )
    assert not np.allclose(fast, layers[0](x, training=False))


@pytest.mark.parametrize("name", list(PAIRS))
def test_layers_run_the_compiled_loop(name):
    ours, _ = layer_pair(name)
    assert ours.loop_for() == "xla"
    with mock.patch.object(tf_loop, "_functions", wraps=tf_loop._functions) as spy:
        ours(random_inputs())
        ours(random_inputs(), mask=_mask_array("holes"))
    calls = [c.args for c in spy.call_args_list]
    assert calls == [(ours.cell, False, False), (ours.cell, True, False)]


def test_cells_alike_share_their_compiled_loops():
    first, same, wider = kr.LSTM(4), kr.LSTM(4), kr.LSTM(5)
    peepholes_off = kr.LSTM(4, use_peepholes=False)
    loops = {
        name: tf_loop._functions(layer.cell, False, False)
        for name, layer in [
            ("first", first),
            ("same", same),
            ("wider", wider),
            ("peepholes_off", peepholes_off),
        ]
    }
    assert loops["same"] is loops["first"]
    assert loops["wider"] is not loops["first"]
    assert loops["peepholes_off"] is not loops["first"]
    assert tf_loop._functions(first.cell, True, False) is not loops["first"]
    # A subclass that changes the step does not share, even with its own kind.
    halved = type("Halved", (kr.LSTMCell,), {"step_parts": kr.LSTMCell.step_parts})
    own = [tf_loop._functions(halved(4), False, False) for _ in range(2)]
    assert own[0] is not own[1]
    assert all(loop is not loops["first"] for loop in own)


def _scaled_tanh(scale):
    def activation(z):  # one name, and one config, for every scale
        return keras.ops.tanh(z) * scale

    return activation


@pytest.mark.parametrize("name", ["simple_rnn", "gru"])
def test_functions_a_config_cannot_hold_are_not_shared(name):
    """An unregistered function (a closure here) is named, not held, by the
    config: each layer runs its own, and computes the built-in's numbers."""
    x = random_inputs()
    for scale in (0.5, 2.0):
        ours, builtin = layer_pair(name, activation=_scaled_tanh(scale))
        assert_all_close(ours(x), builtin(x))


def test_shared_loops_give_each_layer_its_own_numbers():
    assert_layers_keep_their_own_numbers("lstm")  # one config: one shared loop


def test_tensorflow_loop_runs_in_float32_and_float64_only():
    assert kr.LSTM(4).loop_for() == "xla"
    assert kr.LSTM(4, dtype="float64").loop_for() == "xla"
    assert kr.LSTM(4).loop_for(mask=True, training=True) == "xla"
    assert kr.LSTM(4, recurrent_dropout=0.5).loop_for(training=True) == "xla"
    assert kr.LSTM(4, dtype="mixed_float16").loop_for() == "portable"
    assert kr.LSTM(4, unroll=True).loop_for() == "portable"


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_fence_returns_its_input_bit_for_bit(dtype):
    x = np.array([[0.0, -0.0, 1e-30, -3.5, np.inf, -np.inf, np.nan, 65000.0]])
    tensor = keras.ops.convert_to_tensor(x, dtype)
    fenced = tf_loop.fence(tensor)
    assert keras.backend.standardize_dtype(fenced.dtype) == dtype
    expected = keras.ops.convert_to_numpy(keras.ops.cast(tensor, "float64"))
    got = keras.ops.convert_to_numpy(keras.ops.cast(fenced, "float64"))
    # -0.0 may come back as +0.0 (x + 0); every other value is the same.
    np.testing.assert_array_equal(got, expected)


def test_fence_passes_the_gradient_through_unchanged():
    x = np.random.default_rng(0).normal(size=(3, 4))
    weights = np.random.default_rng(1).normal(size=(3, 4))
    (gradient,) = gradients(
        lambda v: keras.ops.sum(keras.ops.multiply(tf_loop.fence(v), weights)), [x]
    )
    np.testing.assert_array_equal(gradient, weights)


def _long_mask(batch, time, seed=4):
    """Right padding of random lengths (one sequence empty, one whole), and a
    few holes, over ``time`` steps."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, time, batch)
    lengths[0], lengths[-1] = 0, time
    mask = np.arange(time)[None] < lengths[:, None]
    mask[1, rng.integers(0, time, 5)] = False
    return mask


@pytest.mark.float64
@pytest.mark.parametrize("name", list(PAIRS))
@pytest.mark.parametrize(
    "options",
    [{"masked": False}, {"masked": True, "go_backwards": True}],
    ids=["plain", "masked_backwards"],
)
@pytest.mark.parametrize("training", [False, True])
def test_lengths_known_only_at_run_time_run_in_pieces_and_match_builtin(
    name, options, training
):
    """Traced with an unknown length, called with two whole pieces and a
    padded third (see ``CHUNK``): outputs, final states and every gradient
    are the built-in's, in float64, where the two differ only in rounding;
    in training too, where backward reads the forward loop's lists."""
    options = dict(options)
    masked = options.pop("masked")
    time = 2 * tf_loop.CHUNK + 7
    ours, builtin = layer_pair(
        name, return_sequences=True, return_state=True, dtype="float64", **options
    )
    x = tf.constant(random_inputs(batch=4, time=time, dtype="float64"))
    states = [tf.constant(s, "float64") for s in random_states(name, batch=4)]
    kwargs = {"training": training}
    if masked:
        kwargs["mask"] = _long_mask(4, time)
    specs = [
        tf.TensorSpec((None, None, 5), "float64"),
        *(tf.TensorSpec(s.shape, "float64") for s in states),
    ]

    def results(layer):
        @tf.function(input_signature=specs)
        def call(x, *initial):
            return layer(x, initial_state=list(initial), **kwargs)

        with tf.GradientTape() as tape:
            tape.watch([x, *states])
            outputs = call(x, *states)
            loss = sum(tf.reduce_sum(o**2) for o in outputs)
        sources = [x, *states, *layer.trainable_variables]
        return outputs, tape.gradient(loss, sources)

    with mock.patch.object(tf_loop, "_in_pieces", wraps=tf_loop._in_pieces) as spy:
        outputs, grads = results(ours)
    assert spy.called
    expected_outputs, expected_grads = results(builtin)
    assert_all_close(outputs, expected_outputs, atol=1e-12)
    assert_all_close(grads, expected_grads, atol=1e-10, rtol=1e-12)


def _in_pieces_of(monkeypatch, steps, batch, width):
    """Sets ``PIECE_SIZE`` so that a sequence's projection ``width`` wide
    runs in pieces of ``steps`` steps, and returns the list each eager call's
    piece length is appended to."""
    monkeypatch.setattr(tf_loop, "PIECE_SIZE", steps * batch * width)
    lengths = []
    piece_length = tf_loop._piece_length

    def recorded(xs, width):
        length = piece_length(xs, width)
        if tf.executing_eagerly():  # traced calls' lengths are not known yet
            lengths.append(int(length))
        return length

    monkeypatch.setattr(tf_loop, "_piece_length", recorded)
    return lengths


@pytest.mark.parametrize("name", list(PAIRS))
@pytest.mark.parametrize(
    "options",
    [
        {"return_sequences": True, "return_state": True},
        {"return_sequences": True, "return_state": True, "masked": True},
        {"go_backwards": True, "masked": True},
        {},
    ],
    ids=["sequences", "masked", "masked_backwards_last_output", "last_output"],
)
@pytest.mark.parametrize("training", [False, True])
def test_a_sequence_in_several_pieces_matches_builtin(
    name, options, training, monkeypatch
):
    """Seven steps in pieces of three, the last one padded: each piece
    projected on its own, forwards and backwards. Outputs, states and the
    gradients of the inputs, initial states and every weight are the
    built-in's, also for a layer that returns only its last output (whose
    loop gives the outputs no gradient), and in training, where backward
    reads the saved states out of the forward loop's lists."""
    options = dict(options)
    masked = options.pop("masked", False)
    ours, builtin = layer_pair(name, **options)
    time, batch = 7, 3
    x = random_inputs(batch=batch, time=time)
    states = random_states(name, batch=batch)
    kwargs = {"training": training}
    if masked:
        kwargs["mask"] = _long_mask(batch, time)
    width = ours.cell.kernel.shape[-1]
    lengths = _in_pieces_of(monkeypatch, 3, batch, width)
    assert_matches_builtin(ours, builtin, x, states, kwargs)
    assert lengths and set(lengths) == {3}, lengths


@pytest.mark.float64
@pytest.mark.parametrize("name", test_variants.NAMES)
def test_variants_in_pieces_match_reference_and_finite_differences(name, monkeypatch):
    """The variants (layer norm of ``x_t W``, projection, clipping) one step
    per piece: float64 outputs against the NumPy reference, and every
    weight's gradient (the input norm's gain and offset among them) against
    finite differences."""
    layer = test_variants._layer(name, return_sequences=True, return_state=True)
    x, h0 = test_variants._inputs(), test_variants._states(layer)
    width = layer.cell.kernel.shape[-1]
    lengths = _in_pieces_of(monkeypatch, 1, test_variants.BATCH, width)
    mask = _mask_array("holes")
    expected = test_variants._reference(name, layer.get_weights(), x, h0, mask=mask)
    actual = test_variants._called(layer, x, h0, mask)
    test_variants._check("holes", actual, expected, test_variants.F64_ATOL)
    test_variants._check_gradients(layer, x, h0, mask)
    assert lengths and set(lengths) == {1}, lengths


_COMPILATIONS = """
import keras, numpy as np, tensorflow as tf
import keras_recurrent as kr
layer = kr.LSTM(8, return_sequences=True)
@tf.function(reduce_retracing=True)  # as Keras traces its train function
def step(x, mask):
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x, mask=mask) ** 2)
    return tape.gradient(loss, layer.trainable_weights)
for time in {times}:
    x = np.random.default_rng(time).normal(size=(4, time, 3)).astype("float32")
    step(x, np.arange(time)[None] < np.array([[time], [1], [time // 2], [0]]))
"""


def test_one_compilation_serves_every_sequence_length():
    """Lengths below, at and above a piece, each a new shape. The function
    is traced for the first length, whose loops XLA compiles, forward and
    backward; then with the length unknown, which runs in pieces: two more
    compilations for all the other lengths (TensorFlow logs every
    compilation). Compiled per length, it would be twelve."""
    times = [5, 70, tf_loop.CHUNK, 200, 1, 130]
    result = run_fresh(
        ["-c", _COMPILATIONS.format(times=times)],
        env={"TF_CPP_MIN_LOG_LEVEL": "0", "TF_CPP_VMODULE": "device_compiler=1"},
    )
    assert result.stderr.count("Compilation of XLA executable") == 4

"""The TensorFlow loops: compiled (XLA) and lean graph loop both give Keras's numbers.

Most tests elsewhere use small layers, which take the compiled loop; here each
configuration also runs through the graph loop (by moving the threshold), and
through ``tf.cond`` when the batch size is only known at run time.
"""

import keras
import numpy as np
import pytest
from helpers import (
    PAIRS,
    assert_all_close,
    gradients,
    layer_pair,
    random_inputs,
    random_states,
)

import keras_recurrent as kr

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="TensorFlow-only loops; other backends run the portable keras.ops loop",
)

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf

    from keras_recurrent import _fast_tf

PATHS = {"compiled": 10**9, "graph": 0}


@pytest.fixture(params=list(PATHS))
def path(request, monkeypatch):
    monkeypatch.setattr(_fast_tf, "COMPILED_MAX_WORK", PATHS[request.param])
    return request.param


def _mask():
    mask = np.ones((3, 6), bool)
    mask[0, 4:] = False
    mask[1, :2] = False
    mask[2, :] = False
    return mask


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
def test_outputs_states_and_gradients_match_builtin(path, name, options):
    options = dict(options)
    masked = options.pop("masked", False)
    ours, builtin = layer_pair(
        name, return_sequences=True, return_state=True, **options
    )
    x = random_inputs()
    states = random_states(name)
    kwargs = {"mask": _mask()} if masked else {}

    def loss(layer):
        def fn(x, *rest):
            initial = list(rest[: len(states)])
            outputs = layer(x, initial_state=initial, **kwargs)
            return sum(keras.ops.sum(o**2) for o in outputs)

        return fn

    assert_all_close(
        ours(x, initial_state=states, **kwargs),
        builtin(x, initial_state=states, **kwargs),
    )
    assert_all_close(
        gradients(loss(ours), [x, *states, *ours.trainable_variables]),
        gradients(loss(builtin), [x, *states, *builtin.trainable_variables]),
    )


@pytest.mark.parametrize("name", list(PAIRS))
def test_batch_known_only_at_run_time(name):
    """In a traced function with an unknown batch, tf.cond picks the loop."""
    ours, builtin = layer_pair(name, return_sequences=True)
    spec = tf.TensorSpec((None, None, 5), "float32")
    run_ours = tf.function(lambda x: ours(x), input_signature=[spec])
    run_builtin = tf.function(lambda x: builtin(x), input_signature=[spec])
    for batch in (1, 2 + _fast_tf.COMPILED_MAX_WORK // ours.units):
        x = random_inputs(batch=batch)
        assert_all_close(run_ours(x), run_builtin(x))


@pytest.mark.parametrize("layer_cls", [kr.SimpleRNN, kr.GRU, kr.LSTM])
def test_recurrent_dropout_matches_portable_loop(path, layer_cls):
    """Same seed, same masks: the TensorFlow loops equal the portable loop."""
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
    assert not np.allclose(fast, layers[0](x, training=False))


def test_tensorflow_loops_run_in_float32_and_float64_only():
    assert kr.LSTM(4)._uses_tensorflow_loop()
    assert kr.LSTM(4, dtype="float64")._uses_tensorflow_loop()
    assert not kr.LSTM(4, dtype="mixed_float16")._uses_tensorflow_loop()
    assert not kr.LSTM(4, unroll=True)._uses_tensorflow_loop()

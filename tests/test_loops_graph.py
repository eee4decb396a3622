"""The export loop (``keras_recurrent.loops.graph``: a plain
``tf.while_loop``, traced inside ``keras_recurrent.exporting()``) gives
Keras's numbers: outputs, final states and gradients, traced by
``tf.function`` with the batch and time axes unknown, with and without
``return_sequences``, masks and ``go_backwards``; and inside
``exporting("onnx")``, where the unmasked plain LSTM and GRU run the steps
that tf2onnx converts to ONNX's operators, and the peephole LSTM runs
TensorFlow's ``BlockLSTMV2``.
"""

import keras
import pytest
from helpers import PAIRS, assert_all_close, layer_pair, random_inputs, random_states
from helpers import mask_array as _mask_array

import keras_recurrent as kr

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the export loop is TensorFlow's; other backends export their loops",
)


@pytest.mark.parametrize("name", list(PAIRS))
@pytest.mark.parametrize("export_format", [None, "onnx"])
@pytest.mark.parametrize("return_sequences", [True, False], ids=["sequences", "last"])
@pytest.mark.parametrize(
    "options",
    [{}, {"mask": "arbitrary", "go_backwards": True}],
    ids=["plain", "masked_backwards"],
)
def test_outputs_states_and_gradients_match_builtin(
    name, export_format, return_sequences, options
):
    import tensorflow as tf

    options = dict(options)
    mask = _mask_array(options.pop("mask", None))
    ours, builtin = layer_pair(
        name, return_sequences=return_sequences, return_state=True, **options
    )
    x = random_inputs()
    states = random_states(name)
    unknown = tf.TensorSpec((None, None, x.shape[-1]))
    state_specs = [tf.TensorSpec((None, s.shape[-1])) for s in states]
    masks = [] if mask is None else [mask]
    mask_specs = [tf.TensorSpec((None, None), tf.bool) for _ in masks]

    def traced(layer):
        @tf.function(input_signature=[unknown, state_specs, *mask_specs])
        def run(x, states, *mask):
            with tf.GradientTape() as tape:
                tape.watch([x, *states])
                outputs = layer(
                    x, initial_state=list(states), mask=next(iter(mask), None)
                )
                loss = sum(tf.reduce_sum(o**2) for o in outputs)
            sources = [x, *states, *layer.trainable_variables]
            return outputs, tape.gradient(loss, sources)

        return run

    with kr.exporting(export_format):
        assert ours.loop_for() == "graph"
        ours_outputs, ours_gradients = traced(ours)(x, states, *masks)
    builtin_outputs, builtin_gradients = traced(builtin)(x, states, *masks)
    assert_all_close(ours_outputs, builtin_outputs)
    assert_all_close(ours_gradients, builtin_gradients)


def _outputs_and_gradients(layer, x, states):
    """A ``tf.function`` of ``(x, states)``, for any batch size and length:
    ``layer``'s outputs, and the gradients of the sum of their squares with
    respect to ``x``, ``states`` and the weights."""
    import tensorflow as tf

    unknown = tf.TensorSpec((None, None, x.shape[-1]))
    state_specs = [tf.TensorSpec((None, s.shape[-1])) for s in states]

    @tf.function(input_signature=[unknown, state_specs])
    def run(x, states):
        with tf.GradientTape() as tape:
            tape.watch([x, *states])
            y = layer(x, initial_state=list(states))
            loss = sum(tf.reduce_sum(o**2) for o in tf.nest.flatten(y))
        return y, tape.gradient(loss, [x, *states, *layer.trainable_variables])

    return run


@pytest.mark.parametrize("return_sequences", [True, False], ids=["sequences", "last"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["forwards", "backwards"])
def test_onnx_peephole_lstm_matches_reference_and_compiled_gradients(
    return_sequences, go_backwards
):
    """Inside ``exporting("onnx")`` the peephole LSTM runs TensorFlow's
    ``BlockLSTMV2`` (which tf2onnx, through this package's handler, turns
    into ONNX's ``LSTM`` with peepholes): its outputs are the NumPy
    reference's, and its gradients, through ``BlockLSTMGradV2``, those of
    the XLA loop that runs outside the block."""
    import numpy as np
    import reference
    import tensorflow as tf

    layer = kr.LSTM(4, return_sequences=return_sequences, go_backwards=go_backwards)
    x = random_inputs()
    layer.build(x.shape)
    rng = np.random.default_rng(8)
    weights = [rng.normal(size=w.shape).astype("float32") * 0.5 for w in layer.weights]
    layer.set_weights(weights)
    states = random_states("lstm")
    outputs, _, _ = reference.lstm(
        x, weights, go_backwards=go_backwards, initial_state=states
    )
    expected = outputs if return_sequences else outputs[:, -1]
    run = _outputs_and_gradients(layer, x, states)

    with kr.exporting("onnx"):
        assert layer.loop_for() == "graph"
        traced = run.get_concrete_function()
        y, gradients = traced(tf.constant(x), [tf.constant(s) for s in states])
    ops = {op.type for op in traced.graph.get_operations()}
    assert "BlockLSTMV2" in ops and "BlockLSTMGradV2" in ops
    assert_all_close(y, expected)
    run_compiled = tf.function(run.python_function)  # traced outside the block
    _, compiled_gradients = run_compiled(x, states)
    assert_all_close(gradients, compiled_gradients)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("return_sequences", [True, False], ids=["sequences", "last"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["forwards", "backwards"])
def test_onnx_simple_rnn_is_one_call_matching_reference_and_compiled_gradients(
    activation, return_sequences, go_backwards
):
    """Inside ``exporting("onnx")`` the SimpleRNN runs as one call of a
    function named for its equations (which tf2onnx, through this package's
    handler, turns into ONNX's ``RNN``): its outputs and final state are the
    NumPy reference's, and its gradients those of the XLA loop that runs
    outside the block."""
    import numpy as np
    import reference
    import tensorflow as tf

    layer = kr.SimpleRNN(
        4,
        activation=activation,
        return_sequences=return_sequences,
        return_state=True,
        go_backwards=go_backwards,
    )
    x = random_inputs()
    layer.build(x.shape)
    rng = np.random.default_rng(9)
    weights = [rng.normal(size=w.shape).astype("float32") * 0.5 for w in layer.weights]
    layer.set_weights(weights)
    states = random_states("simple_rnn")
    phi = np.tanh if activation == "tanh" else (lambda z: np.maximum(z, 0.0))
    outputs, (h,) = reference.run(
        lambda x_t, s: reference.simple_rnn_step(x_t, s, weights, activation=phi),
        x,
        states,
        go_backwards=go_backwards,
    )
    expected = [outputs if return_sequences else outputs[:, -1], h]
    run = _outputs_and_gradients(layer, x, states)

    with kr.exporting("onnx"):
        traced = run.get_concrete_function()
        y, gradients = traced(tf.constant(x), [tf.constant(s) for s in states])
    calls = [
        op.get_attr("f").name
        for op in traced.graph.get_operations()
        if op.type in ("PartitionedCall", "StatefulPartitionedCall")
    ]
    assert [f"keras_recurrent_rnn_{activation}" in name for name in calls] == [True]
    assert_all_close(y, expected)
    run_compiled = tf.function(run.python_function)  # traced outside the block
    _, compiled_gradients = run_compiled(x, states)
    assert_all_close(gradients, compiled_gradients)

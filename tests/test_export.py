"""Export: SavedModel, TFLite and ONNX artifacts serve what ``predict`` does.

Each artifact runs in someone else's runtime (TensorFlow's SavedModel
loader, the TFLite interpreter, onnxruntime), with the batch size left
dynamic and checked at two batch sizes (the second a slice of the first's
rows, so that ``predict`` compiles once). One small model covers the three
layers: a stack of every layer (the plain LSTM and one with peepholes, cell
clipping, projection and layer norm included) next to a masked GRU
(``Embedding(mask_zero=True)``, ``go_backwards``, layer norm). Exporting is
slow, so the model is built once and each artifact written once.
"""

import contextlib
import inspect

import keras
import numpy as np
import pytest
from helpers import assert_all_close

import keras_recurrent as kr

BACKEND = keras.config.backend()
TIME, FEATURES, VOCABULARY = 6, 3, 7
BATCH = 3


def _model():
    """Two branches, one per input: a stack of every layer over features,
    and a masked GRU over tokens."""
    features = keras.Input((TIME, FEATURES), name="features")
    x = kr.SimpleRNN(4, return_sequences=True)(features)
    x = kr.LSTM(4, use_peepholes=False, return_sequences=True)(x)
    # Peepholes and every LSTM option no fused op has: a loop in each format.
    x = kr.LSTM(
        3,
        use_peepholes=True,
        cell_clip=0.5,
        projection_units=2,
        use_layer_norm=True,
        return_sequences=True,
    )(x)
    stacked = kr.GRU(4)(x)
    tokens = keras.Input((TIME,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(VOCABULARY, FEATURES, mask_zero=True)(tokens)
    masked = kr.GRU(4, reset_after=False, use_layer_norm=True, go_backwards=True)(x)
    return keras.Model([features, tokens], [stacked, masked])


def _inputs():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    tokens = rng.integers(1, VOCABULARY, size=(BATCH, TIME)).astype("int32")
    tokens[0, TIME // 2 :] = 0  # padding at the end of one sequence
    tokens[-1, 0] = 0  # and a masked first step in another
    return [features, tokens]


@pytest.fixture(scope="module")
def model():
    """``(model, inputs, predict(inputs))``."""
    keras.utils.set_random_seed(7)
    model = _model()
    inputs = _inputs()
    return model, inputs, model.predict(inputs, verbose=0)


def _check(run, inputs, expected):
    """``run(inputs) -> outputs`` reproduces ``expected`` at batch 3, then at
    batch 2."""
    for rows in (slice(None), slice(2)):
        outputs = run([x[rows] for x in inputs])
        for actual, wanted in zip(outputs, expected):
            assert_all_close(actual, wanted[rows], atol=1e-5)


def test_exporting_chooses_the_graph_loop_on_tensorflow_only():
    layer, unrolled = kr.GRU(4), kr.GRU(4, unroll=True)
    outside = layer.loop_for()
    with kr.exporting():
        inside = layer.loop_for(), unrolled.loop_for()
    if BACKEND == "tensorflow":
        # The Python loop of unroll=True is convertible as it is.
        assert (outside, inside) == ("xla", ("graph", "portable"))
        from keras_recurrent.loops import graph, portable

        same = inspect.signature(portable.recurrence).parameters
        assert list(inspect.signature(graph.recurrence).parameters) == list(same)
    else:
        assert inside == (outside, unrolled.loop_for())
    assert layer.loop_for() == outside  # the block is closed again


def test_exporting_refuses_an_unknown_format():
    with pytest.raises(ValueError, match="Received: format='tflite'"):
        with kr.exporting("tflite"):
            pass


@pytest.mark.skipif(BACKEND == "torch", reason="needs torch_xla on PyTorch")
def test_saved_model_serves_predict(model, tmp_path):
    tf = pytest.importorskip("tensorflow")
    model, inputs, expected = model
    model.export(str(tmp_path), verbose=False)  # as a user would: no exporting()
    loaded = tf.saved_model.load(str(tmp_path))
    _check(lambda xs: [y.numpy() for y in loaded.serve(xs)], inputs, expected)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="the TensorFlow loop's gradient")
def test_saved_model_of_a_training_trace_needs_no_custom_gradients(model, tmp_path):
    """A function traced with ``training=True`` saves without its custom
    gradients (the README's way): a saved gradient cannot capture the
    forward loop's tensor lists, which backward reads in training. Served,
    it computes what ``predict`` does (no dropout here)."""
    import tensorflow as tf

    model, inputs, expected = model
    specs = [tf.TensorSpec((None, *x.shape[1:]), x.dtype) for x in inputs]
    module = tf.Module()
    module.model = model
    module.train_call = tf.function(
        lambda *xs: model(list(xs), training=True), input_signature=specs
    )
    module.train_call.get_concrete_function()
    with pytest.raises(KeyError, match="captures tensor"):
        tf.saved_model.save(module, str(tmp_path / "with_gradients"))
    options = tf.saved_model.SaveOptions(experimental_custom_gradients=False)
    tf.saved_model.save(module, str(tmp_path / "saved"), options=options)
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    _check(lambda xs: [y.numpy() for y in loaded.train_call(*xs)], inputs, expected)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TFLite converts TF graphs")
@pytest.mark.parametrize("route", ["litert", "converter", "keras-model"])
def test_tflite_with_dynamic_batch_matches_predict(model, tmp_path, route):
    """Keras's own ``format="litert"``, and TFLite's converter, on the
    SavedModel and on the Keras model, with its default, builtin ops
    only."""
    import tensorflow as tf

    model, inputs, expected = model
    path = str(tmp_path / "model.tflite")
    with kr.exporting():
        if route == "litert":
            model.export(path, format="litert", verbose=False)
        elif route == "keras-model":
            converter = tf.lite.TFLiteConverter.from_keras_model(model)
            with open(path, "wb") as artifact:
                artifact.write(converter.convert())
        else:
            model.export(str(tmp_path / "saved"), verbose=False)
            converter = tf.lite.TFLiteConverter.from_saved_model(
                str(tmp_path / "saved")
            )
            with open(path, "wb") as artifact:
                artifact.write(converter.convert())
    interpreter = tf.lite.Interpreter(model_path=path)
    # Keras allows Flex ops (TensorFlow's own kernels), which this
    # interpreter refuses to run: none may be needed.
    for detail in interpreter.get_input_details():
        assert detail["shape_signature"][0] == -1  # the batch stays dynamic
    # The signature runner resizes the inputs to each call's batch.
    serve = interpreter.get_signature_runner("serving_default")

    def run(xs):
        outputs = serve(features=xs[0], tokens=xs[1])
        return [outputs[f"output_{i}"] for i in range(len(outputs))]

    _check(run, inputs, expected)


@pytest.mark.skipif(
    BACKEND != "jax", reason="the SavedModel Keras writes through jax2tf"
)
def test_tflite_from_the_jax_saved_model_matches_predict(model, tmp_path):
    """Keras refuses ``format="litert"`` on JAX; TFLite's converter reads the
    jax2tf SavedModel, whose variables are the layers' weights alone (a cell
    without dropout keeps no seed state, whose uint32 TFLite refuses)."""
    tf = pytest.importorskip("tensorflow")
    model, inputs, expected = model
    model.export(str(tmp_path / "saved"), verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "saved"))
    interpreter = tf.lite.Interpreter(model_content=converter.convert())
    for detail in interpreter.get_input_details():
        assert detail["shape_signature"][0] == -1  # the batch stays dynamic
    serve = interpreter.get_signature_runner("serving_default")
    names = sorted(serve.get_input_details())

    def run(xs):
        outputs = serve(**dict(zip(names, xs)))
        return [outputs[name] for name in sorted(outputs)]

    _check(run, inputs, expected)


# What Keras's ONNX export converts with on each backend.
ONNX_CONVERTER = {"tensorflow": "tf2onnx", "jax": "jax2onnx", "torch": "onnx"}


# exporting() changes the loops on TensorFlow only; "plain" is an export
# outside it, the XLA loop's call inlined by the package's tf2onnx handler.
ONNX_FORMATS = ["plain", None, "onnx"] if BACKEND == "tensorflow" else ["plain"]


@pytest.mark.parametrize("export_format", ONNX_FORMATS)
def test_onnx_with_dynamic_batch_matches_predict(model, tmp_path, export_format):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    pytest.importorskip(ONNX_CONVERTER[BACKEND])
    model, inputs, expected = model
    # On JAX Keras asks for a model called directly (predict does not count),
    # unless it is given the input signature.
    signature = [model.inputs] if BACKEND == "jax" else None
    path = str(tmp_path / "model.onnx")
    with (
        contextlib.nullcontext()
        if export_format == "plain"
        else kr.exporting(export_format)
    ):
        model.export(path, format="onnx", verbose=False, input_signature=signature)
    session = ort.InferenceSession(path)
    names = [source.name for source in session.get_inputs()]
    assert names == ["features", "tokens"]
    for source in session.get_inputs():
        assert not isinstance(source.shape[0], int)  # the batch stays dynamic
    _check(lambda xs: session.run(None, dict(zip(names, xs))), inputs, expected)
    ops = [node.op_type for node in onnx.load(path).graph.node]
    if BACKEND == "torch":
        # PyTorch's exporter turns the fused kernels (loop_for() ==
        # "torch-fused": SimpleRNN, the plain LSTM, GRU with reset_after)
        # into ONNX's own operators; the rest is unrolled over the 6 steps.
        assert sorted(op for op in ops if op in ("RNN", "LSTM", "GRU")) == [
            "GRU",
            "LSTM",
            "RNN",
        ]
    elif export_format == "onnx":
        # The unmasked SimpleRNN, plain LSTM and GRU become ONNX's own
        # operators (see loops/graph.py); the LSTM with every option and the
        # masked GRU stay loops.
        assert sorted(op for op in ops if op in ("RNN", "LSTM", "GRU")) == [
            "GRU",
            "LSTM",
            "RNN",
        ]
        assert ops.count("Loop") == 2
    else:
        assert ops.count("Loop") == 5  # one per layer


def _onnx_export(model, tmp_path):
    """``(graph, run)``: ``model`` exported inside ``exporting("onnx")``, its
    ONNX graph, and ``run(xs)`` by onnxruntime on its one input."""
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    path = str(tmp_path / "model.onnx")
    with kr.exporting("onnx"):
        model.export(path, format="onnx", verbose=False)
    session = ort.InferenceSession(path)
    name = session.get_inputs()[0].name
    return onnx.load(path).graph, lambda xs: session.run(None, {name: xs[0]})


PEEPHOLE_MODELS = {
    "sequences": lambda x: kr.LSTM(5, return_sequences=True)(x),
    "last": lambda x: kr.LSTM(5)(x),
    "backwards": lambda x: kr.LSTM(5, go_backwards=True)(x),
    "no-bias": lambda x: kr.LSTM(5, use_bias=False)(x),
    "bidirectional": lambda x: keras.layers.Bidirectional(
        kr.LSTM(5, return_sequences=True)
    )(x),
    "stacked": lambda x: kr.LSTM(4)(kr.LSTM(5, return_sequences=True)(x)),
}


@pytest.mark.skipif(BACKEND != "tensorflow", reason="exporting() changes TF loops")
@pytest.mark.parametrize("kind", list(PEEPHOLE_MODELS))
def test_onnx_peephole_lstm_is_onnx_lstm_with_peepholes(kind, tmp_path):
    """Inside ``exporting("onnx")`` the peephole LSTM (the default) becomes
    ONNX's ``LSTM`` with its ``P`` input, served by onnxruntime with predict's
    numbers at two batch sizes."""
    inputs = keras.Input((TIME, FEATURES))
    model = keras.Model(inputs, PEEPHOLE_MODELS[kind](inputs))
    rng = np.random.default_rng(6)
    for weight in model.weights:  # peepholes and biases away from zero
        weight.assign(rng.normal(size=weight.shape).astype("float32") * 0.5)
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    expected = model.predict(x, verbose=0)
    graph, run = _onnx_export(model, tmp_path)
    lstms = [node for node in graph.node if node.op_type == "LSTM"]
    assert len(lstms) == (2 if kind in ("bidirectional", "stacked") else 1)
    assert "Loop" not in [node.op_type for node in graph.node]
    for node in lstms:
        assert len(node.input) == 8 and node.input[7]  # P, the peepholes
    _check(run, [x], [expected])


SIMPLE_RNN_MODELS = {
    "sequences": lambda x: kr.SimpleRNN(5, return_sequences=True)(x),
    "last": lambda x: kr.SimpleRNN(5)(x),
    "relu-backwards": lambda x: kr.SimpleRNN(
        5, activation="relu", go_backwards=True, return_sequences=True
    )(x),
    "states-no-bias": lambda x: kr.SimpleRNN(5, return_state=True, use_bias=False)(x),
    "bidirectional": lambda x: keras.layers.Bidirectional(
        kr.SimpleRNN(5, return_sequences=True)
    )(x),
    "stacked": lambda x: kr.SimpleRNN(4)(kr.SimpleRNN(5, return_sequences=True)(x)),
}


@pytest.mark.skipif(BACKEND != "tensorflow", reason="exporting() changes TF loops")
@pytest.mark.parametrize("kind", list(SIMPLE_RNN_MODELS))
def test_onnx_simple_rnn_is_onnx_rnn(kind, tmp_path):
    """Inside ``exporting("onnx")`` the SimpleRNN becomes ONNX's ``RNN`` with
    its activation, served by onnxruntime with predict's numbers (outputs and
    states) at two batch sizes."""
    inputs = keras.Input((TIME, FEATURES))
    outputs = SIMPLE_RNN_MODELS[kind](inputs)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(5)
    for weight in model.weights:  # biases away from zero
        weight.assign(rng.normal(size=weight.shape).astype("float32") * 0.5)
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    expected = model.predict(x, verbose=0)
    graph, run = _onnx_export(model, tmp_path)
    rnns = [node for node in graph.node if node.op_type == "RNN"]
    assert len(rnns) == (2 if kind in ("bidirectional", "stacked") else 1)
    assert "Loop" not in [node.op_type for node in graph.node]
    activation = b"Relu" if kind.startswith("relu") else b"Tanh"
    for node in rnns:
        (attribute,) = [a for a in node.attribute if a.name == "activations"]
        assert list(attribute.strings) == [activation]
    _check(run, [x], list(expected) if isinstance(expected, tuple) else [expected])


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf2onnx converts TF graphs")
def test_onnx_plain_export_inlines_every_compiled_call(tmp_path):
    """Outside ``exporting()`` the XLA loop is a call that TensorFlow does not
    inline, and so is any function a user compiles with XLA: the package's
    tf2onnx handler inlines both (an ONNX ``Loop``, no ``RNN``), served by
    onnxruntime with predict's numbers at two batch sizes."""
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    import tensorflow as tf

    scale = tf.function(lambda x: 2.0 * tf.tanh(x) - x, jit_compile=True)
    inputs = keras.Input((TIME, FEATURES))
    rnn = kr.SimpleRNN(5, return_sequences=True)(inputs)
    model = keras.Model(inputs, keras.layers.Lambda(scale)(rnn))
    x = np.random.default_rng(8).normal(size=(BATCH, TIME, FEATURES))
    x = x.astype("float32")
    expected = model.predict(x, verbose=0)
    path = str(tmp_path / "model.onnx")
    model.export(path, format="onnx", verbose=False)
    ops = [node.op_type for node in onnx.load(path).graph.node]
    assert ops.count("Loop") == 1
    assert "RNN" not in ops
    session = ort.InferenceSession(path)
    name = session.get_inputs()[0].name
    _check(lambda xs: session.run(None, {name: xs[0]}), [x], [expected])


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf2onnx converts TF graphs")
def test_onnx_plain_export_runs_any_length_in_pieces(tmp_path):
    """With the time axis unknown, the XLA loop runs the sequence in pieces
    of ``CHUNK`` steps, the last one shorter: onnxruntime serves predict's
    numbers at lengths of one and of three pieces, at two batch sizes."""
    ort = pytest.importorskip("onnxruntime")
    from keras_recurrent.loops.tensorflow import CHUNK

    tokens = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(VOCABULARY, FEATURES, mask_zero=True)(tokens)
    x = kr.LSTM(4, return_sequences=True)(x)
    model = keras.Model(tokens, kr.GRU(3, go_backwards=True)(x))
    rng = np.random.default_rng(9)
    cases = []
    for length in (2 * CHUNK + 3, 5):
        x = rng.integers(1, VOCABULARY, size=(BATCH, length)).astype("int32")
        x[0, length // 2 :] = 0  # padding at the end of one sequence
        cases.append((x, model.predict(x, verbose=0)))
    path = str(tmp_path / "model.onnx")
    model.export(path, format="onnx", verbose=False)
    session = ort.InferenceSession(path)
    name = session.get_inputs()[0].name
    for x, expected in cases:
        _check(lambda xs: session.run(None, {name: xs[0]}), [x], [expected])


@pytest.mark.skipif(BACKEND != "tensorflow", reason="exporting() changes TF loops")
def test_onnx_peephole_lstm_returning_states_stays_a_loop(tmp_path):
    """ONNX's ``LSTM`` gives the last cell state, but the layer's states are
    read whole only through ``return_state``: that layer stays a loop."""
    inputs = keras.Input((TIME, FEATURES))
    model = keras.Model(inputs, kr.LSTM(5, return_state=True)(inputs))
    x = np.random.default_rng(7).normal(size=(BATCH, TIME, FEATURES))
    x = x.astype("float32")
    expected = model.predict(x, verbose=0)
    graph, run = _onnx_export(model, tmp_path)
    ops = [node.op_type for node in graph.node]
    assert "Loop" in ops and "LSTM" not in ops
    _check(run, [x], list(expected))


@pytest.mark.skipif(BACKEND != "tensorflow", reason="exporting() changes TF loops")
@pytest.mark.parametrize(
    "layer, operator",
    [
        (lambda: kr.LSTM(5, use_peepholes=False, use_bias=False), "LSTM"),
        (lambda: kr.GRU(5, use_bias=False), "GRU"),
    ],
    ids=["lstm", "gru"],
)
def test_onnx_operator_without_bias_matches_predict(layer, operator, tmp_path):
    """Without ``use_bias`` the ONNX steps add a zero bias: still ONNX's
    own operator, with predict's numbers."""
    inputs = keras.Input((TIME, FEATURES))
    model = keras.Model(inputs, layer()(inputs))
    x = np.random.default_rng(1).normal(size=(BATCH, TIME, FEATURES))
    x = x.astype("float32")
    expected = model.predict(x, verbose=0)
    graph, run = _onnx_export(model, tmp_path)
    ops = [node.op_type for node in graph.node]
    assert operator in ops and "Loop" not in ops
    _check(run, [x], [expected])


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TFLite converts TF graphs")
def test_tflite_with_fixed_batch_keeps_the_loop_and_no_state(tmp_path):
    """With a fixed batch TFLite's converter could fuse a marked LSTM into
    ``UNIDIRECTIONAL_SEQUENCE_LSTM``, which carries its final states into
    the next invoke. No layer is marked: a stack of plain LSTMs stays a
    loop, and every invoke reproduces ``predict``."""
    import contextlib
    import io

    import tensorflow as tf

    inputs = keras.Input((TIME, FEATURES), batch_size=BATCH)
    x = kr.LSTM(5, use_peepholes=False, return_sequences=True)(inputs)
    model = keras.Model(inputs, kr.LSTM(4, use_peepholes=False)(x))
    x = np.random.default_rng(5).normal(size=(BATCH, TIME, FEATURES))
    x = x.astype("float32")
    expected = model.predict(x, verbose=0)
    path = str(tmp_path / "model.tflite")
    with kr.exporting("litert"):
        model.export(path, format="litert", verbose=False)
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        tf.lite.experimental.Analyzer.analyze(model_path=path)
    assert "WHILE" in text.getvalue()
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" not in text.getvalue()
    serve = tf.lite.Interpreter(model_path=path).get_signature_runner()
    (name,) = serve.get_input_details()
    for _ in range(2):
        (actual,) = serve(**{name: x}).values()
        assert_all_close(actual, expected, atol=1e-5)

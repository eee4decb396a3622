"""The LSTM's cell clipping, projection and layer norm against other
implementations, and what they promise besides.

- TF1's ``LSTMCell(use_peepholes, cell_clip, num_proj, proj_clip,
  forget_bias=0)`` (tf_keras's legacy cells), every combination of
  peepholes x clip x projection, with inputs large enough that the clips
  bind (the test shows that they do);
- PyTorch's ``nn.LSTM(proj_size=...)``, outputs and final states, and on
  PyTorch its fused ``torch.lstm`` path against the portable loop;
- entry-by-entry float64 finite differences of every weight of the LSTM
  with every option on (tests/test_variants.py checks every variant of
  ``helpers.VARIANTS`` against the NumPy reference, along random
  directions);
- which loop serves which options; bad arguments; configs; and that a plain
  LSTM keeps its weights.

The layer-normalised LSTM against the float64 NumPy reference, with masks,
states, dropout, saving and mixed precision, is in tests/test_variants.py.
"""

import itertools
import warnings

import keras
import numpy as np
import pytest
from helpers import assert_all_close, gradients
from test_checks import expect_error
from test_gradients import numeric_gradients

import keras_recurrent as kr

BATCH, TIME, FEATURES, UNITS, PROJ = 2, 5, 3, 4, 3
CELL_CLIP, PROJ_CLIP = 0.4, 0.1
F64_ATOL = 1e-12

# peepholes x cell clip x projection (with its clip), each on or off.
COMBINATIONS = list(itertools.product([False, True], repeat=3))


def _kwargs(peepholes, clip, projection):
    kwargs = {"use_peepholes": peepholes}
    if clip:
        kwargs["cell_clip"] = CELL_CLIP
    if projection:
        kwargs.update(projection_units=PROJ, projection_clip=PROJ_CLIP)
    return kwargs


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _built(dtype="float64", seed=0, features=FEATURES, **kwargs):
    """An LSTM built with random weights (scale 0.5), all sequences and
    states returned."""
    layer = kr.LSTM(
        UNITS, dtype=dtype, return_sequences=True, return_state=True, **kwargs
    )
    layer.build((None, None, features))
    rng = np.random.default_rng(seed)
    layer.set_weights(
        [rng.normal(scale=0.5, size=w.shape).astype(dtype) for w in layer.get_weights()]
    )
    return layer


# -- TF1's LSTMCell ---------------------------------------------------------


def _tf1_run(weights, x, peepholes, clip, projection):
    """TF1's ``LSTMCell`` over ``x`` in float64 with our weights mapped to its
    layout: ``(outputs, c_t of every step)``."""
    import tensorflow as tf
    from tf_keras.src.layers.rnn import legacy_cells

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "LSTMCell is deprecated"
        cell = legacy_cells.LSTMCell(
            UNITS,
            use_peepholes=peepholes,
            cell_clip=CELL_CLIP if clip else None,
            num_proj=PROJ if projection else None,
            proj_clip=PROJ_CLIP if projection else None,
            forget_bias=0.0,
            dtype=tf.float64,
        )
    cell.build(tf.TensorShape([None, FEATURES]))
    kernel, recurrent_kernel, bias, *rest = weights

    def tf1_gates(w):  # ours i, f, c, o -> TF1's i, j (candidate), f, o
        i, f, c, o = np.split(w, 4, axis=-1)
        return np.concatenate([i, c, f, o], axis=-1)

    values = {
        "kernel": tf1_gates(np.concatenate([kernel, recurrent_kernel])),  # [x; h]
        "bias": tf1_gates(bias),
    }
    if peepholes:
        p_i, p_f, p_o, *rest = rest
        values.update(w_i_diag=p_i, w_f_diag=p_f, w_o_diag=p_o)
    if projection:
        values["projection/kernel"] = rest[0]
    for variable in cell.weights:
        # "lstm_cell_3/projection/kernel:0" -> "projection/kernel"
        name = variable.name.split("/", 1)[1].split(":")[0]
        variable.assign(values.pop(name))
    assert not values, f"TF1 weights not found: {list(values)}"
    state = cell.zero_state(BATCH, tf.float64)
    outputs, cells = [], []
    for t in range(x.shape[1]):
        output, state = cell(tf.constant(x[:, t]), state)
        outputs.append(output.numpy())
        cells.append(state.c.numpy())
    return np.stack(outputs, 1), np.stack(cells, 1)


@pytest.mark.float64
def test_tf1_lstm_cell_every_peephole_clip_projection_combination():
    x = 3.0 * np.random.default_rng(1).normal(size=(BATCH, TIME, FEATURES))
    largest = 0.0
    for combination in COMBINATIONS:
        peepholes, clip, projection = combination
        layer = _built(seed=2, **_kwargs(*combination))
        outputs, h, c = (_numpy(o) for o in layer(x))
        expected, cells = _tf1_run(layer.get_weights(), x, *combination)
        case = f"peepholes={peepholes}, clip={clip}, projection={projection}"
        # The clips bind: some |c_t| (some |h_t|) sits at its bound, and
        # a clipped |c_t| never exceeds it.
        if clip:
            assert np.any(np.isclose(np.abs(cells), CELL_CLIP, rtol=0, atol=1e-15))
            assert np.abs(cells).max() <= CELL_CLIP, case
        else:
            assert np.abs(cells).max() > CELL_CLIP, case
        if projection:
            assert np.any(np.abs(outputs) == PROJ_CLIP), case
        assert_all_close(
            [outputs, h, c], [expected, expected[:, -1], cells[:, -1]], F64_ATOL
        )
        largest = max(largest, np.abs(outputs - expected).max())
    print(f"largest difference from TF1's LSTMCell: {largest:.2e}")


# -- PyTorch's nn.LSTM(proj_size=...) ----------------------------------------


def _torch_lstm(layer, use_bias):
    """``torch.nn.LSTM(proj_size=...)`` with ``layer``'s weights."""
    import torch

    module = torch.nn.LSTM(
        FEATURES, UNITS, proj_size=PROJ, bias=use_bias, batch_first=True
    ).double()
    kernel, recurrent_kernel, *rest = layer.get_weights()
    values = {"weight_ih_l0": kernel.T, "weight_hh_l0": recurrent_kernel.T}
    if use_bias:
        values.update(bias_ih_l0=rest[0], bias_hh_l0=np.zeros_like(rest[0]))
    values["weight_hr_l0"] = rest[-1].T
    with torch.no_grad():
        for name, value in values.items():
            getattr(module, name).copy_(torch.from_numpy(np.ascontiguousarray(value)))
    return module


@pytest.mark.float64
@pytest.mark.parametrize("use_bias", [True, False])
def test_torch_lstm_with_projection(use_bias):
    import torch

    layer = _built(use_peepholes=False, projection_units=PROJ, use_bias=use_bias)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(BATCH, TIME, FEATURES))
    h0, c0 = rng.normal(size=(BATCH, PROJ)), rng.normal(size=(BATCH, UNITS))
    module = _torch_lstm(layer, use_bias)
    with torch.no_grad():
        outputs, (h, c) = module(
            torch.from_numpy(x),
            (torch.from_numpy(h0)[None], torch.from_numpy(c0)[None]),
        )
    expected = [outputs.numpy(), h[0].numpy(), c[0].numpy()]
    actual = layer(x, initial_state=[h0, c0])
    assert_all_close(actual, expected, F64_ATOL)
    print(
        f"largest difference from torch.nn.LSTM (loop {layer.loop_for()}): "
        f"{max(np.abs(_numpy(a) - e).max() for a, e in zip(actual, expected)):.2e}"
    )


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="PyTorch's fused path")
def test_torch_fused_projection_equals_portable_loop():
    """Outputs and gradients of the fused ``torch.lstm`` run with a
    projection equal the portable loop's (which an all-true mask picks)."""
    layer = _built("float32", use_peepholes=False, projection_units=PROJ)
    assert layer.loop_for() == "torch-fused"
    assert layer.loop_for(mask=True) == "portable"
    x = np.random.default_rng(4).normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    everywhere = np.ones((BATCH, TIME), bool)
    runs = {}
    for name, mask in [("fused", None), ("portable", everywhere)]:

        def loss(inputs, *weights, mask=mask):
            outputs, h, c = layer(inputs, mask=mask)
            return keras.ops.sum(outputs**2) + keras.ops.sum(c)

        with warnings.catch_warnings():
            # torch: "LSTM with projections is not supported with oneDNN"
            warnings.simplefilter("ignore")
            outputs = [_numpy(o) for o in layer(x, mask=mask)]
            runs[name] = outputs + gradients(loss, [x, *layer.trainable_weights])
    assert_all_close(runs["fused"], runs["portable"], atol=1e-5)


# -- gradients --------------------------------------------------------------


@pytest.mark.float64
def test_every_weight_gradient_matches_finite_differences():
    """Every option on, in the layer's own loop (TensorFlow: the compiled
    loop's backward pass), entry by entry, for every weight."""
    options = {
        "use_peepholes": True,
        "cell_clip": 0.8,
        "projection_units": 2,
        "projection_clip": 0.6,
        "use_layer_norm": True,
    }
    batch, time, features = 2, 3, 2
    layer = kr.LSTM(
        3, dtype="float64", return_sequences=True, return_state=True, **options
    )
    layer.build((None, time, features))
    rng = np.random.default_rng(6)
    layer.set_weights(
        [w + rng.normal(scale=0.4, size=w.shape) for w in layer.get_weights()]
    )
    x = rng.normal(size=(batch, time, features))
    projections = [
        rng.normal(size=(batch, time, 2)),
        *[rng.normal(size=(batch, n)) for n in (2, 3)],
    ]

    def loss(inputs, *variables):  # the variables: read by the layer itself
        return sum(
            keras.ops.sum(keras.ops.multiply(o, p))
            for o, p in zip(layer(inputs), projections)
        )

    variables = layer.trainable_weights
    assert len(variables) == 13
    autodiff = gradients(loss, [x, *variables])
    numeric = numeric_gradients(loss, [x], variables)
    largest = 0.0
    for what, a, n in zip(["inputs", *[v.name for v in variables]], autodiff, numeric):
        assert np.abs(n).max() > 1e-3, f"{what}: a vacuous check"
        np.testing.assert_allclose(a, n, rtol=1e-6, atol=1e-8, err_msg=what)
        largest = max(largest, np.abs(a - n).max())
    print(f"largest difference from finite differences: {largest:.2e}")


# -- loops ------------------------------------------------------------------


def test_which_loop_serves_which_options():
    """TensorFlow's compiled loop and JAX's serve every variant; on PyTorch
    the fused path (``torch.lstm``, or ``LSTMSequence`` with peepholes) only
    the LSTM without clip or layer norm, and not peepholes and a projection
    together (a projection smaller than the cell: torch.nn.LSTM's limit)."""
    backend = keras.backend.backend()
    for peepholes, clip, projection, layer_norm in itertools.product(
        [False, True], repeat=4
    ):
        kwargs = {"use_peepholes": peepholes, "use_layer_norm": layer_norm}
        if clip:
            kwargs["cell_clip"] = 1.0
        if projection:
            kwargs["projection_units"] = PROJ
        layer = kr.LSTM(UNITS, **kwargs)
        loops = {layer.loop_for(mask=m, training=True) for m in (None, True)}
        loops.add(layer.loop_for())
        fused = not (clip or layer_norm or (peepholes and projection))
        if backend == "tensorflow":
            assert loops == {"xla"}, kwargs
        elif backend == "torch":
            assert (layer.loop_for() == "torch-fused") == fused, kwargs
        else:
            assert loops == {"jax-vjp"}, kwargs
    if backend == "torch":
        for kwargs in [
            {"projection_units": PROJ, "projection_clip": 1.0},
            {"projection_units": UNITS},
            {"projection_units": UNITS + 2},
        ]:
            layer = kr.LSTM(UNITS, use_peepholes=False, **kwargs)
            assert layer.loop_for() == "portable", kwargs


# -- arguments, configs, weights --------------------------------------------

BAD_ARGUMENTS = [
    ("cell_clip", 0),
    ("cell_clip", -1.0),
    ("projection_units", 0),
    ("projection_units", -1),
    ("projection_units", 2.5),
    ("projection_clip", 0.0),
    ("layer_norm_epsilon", 0),
    ("layer_norm_epsilon", -1e-3),
]


def test_bad_arguments_name_argument_and_value():
    for cls, (name, value) in itertools.product([kr.LSTM, kr.LSTMCell], BAD_ARGUMENTS):
        extra = {"projection_units": 2} if name == "projection_clip" else {}
        expect_error(
            f"{cls.__name__}({name}={value!r})",
            lambda: cls(UNITS, **{name: value}, **extra),  # noqa: B023
            f"`{name}`",
            f"Received: {name}={value!r}",
        )
    for cls in (kr.LSTM, kr.LSTMCell):
        expect_error(
            f"{cls.__name__}(projection_clip=0.5)",
            lambda: cls(UNITS, projection_clip=0.5),  # noqa: B023
            "`projection_clip`",
            "`projection_units`",
            "Received: projection_clip=0.5, projection_units=None",
        )


def test_config_round_trip_and_weights():
    options = {
        "cell_clip": 2.0,
        "projection_units": 2,
        "projection_clip": 1.5,
        "projection_initializer": "ones",
        "projection_regularizer": "l2",
        "projection_constraint": "non_neg",
        "use_layer_norm": True,
        "layer_norm_epsilon": 1e-4,
    }
    layer = kr.LSTM(UNITS, **options)
    config = layer.get_config()
    twin = kr.LSTM.from_config(config)
    assert twin.get_config() == config
    cell = kr.LSTMCell.from_config(layer.cell.get_config())
    assert cell.get_config() == layer.cell.get_config()
    for name, value in options.items():
        if not isinstance(value, str):
            assert config[name] == value and getattr(twin, name) == value, name
    assert isinstance(twin.projection_initializer, keras.initializers.Ones)
    assert isinstance(twin.projection_regularizer, keras.regularizers.L2)
    assert isinstance(twin.projection_constraint, keras.constraints.NonNeg)
    layer.build((None, None, FEATURES))
    shapes = {w.name: tuple(w.shape) for w in layer.weights}
    gates = 4 * UNITS
    assert shapes == {
        "kernel": (FEATURES, gates),
        "recurrent_kernel": (2, gates),
        "bias": (gates,),
        "input_gate_peephole_weights": (UNITS,),
        "forget_gate_peephole_weights": (UNITS,),
        "output_gate_peephole_weights": (UNITS,),
        "projection_kernel": (UNITS, 2),
        "kernel_norm_gamma": (gates,),
        "kernel_norm_beta": (gates,),
        "recurrent_norm_gamma": (gates,),
        "recurrent_norm_beta": (gates,),
        "cell_norm_gamma": (UNITS,),
        "cell_norm_beta": (UNITS,),
    }
    assert list(shapes) == [w.name for w in layer.weights]  # in this order
    values = dict(zip(shapes, layer.get_weights()))
    # unit_forget_bias on the projected layer's own bias, and LN starts at 1, 0.
    np.testing.assert_array_equal(
        values["bias"], np.repeat([0.0, 1.0, 0.0, 0.0], UNITS)
    )
    np.testing.assert_array_equal(values["projection_kernel"], 1.0)
    np.testing.assert_array_equal(values["kernel_norm_gamma"], 1.0)
    np.testing.assert_array_equal(values["cell_norm_beta"], 0.0)
    assert layer.cell.state_size == [2, UNITS] and layer.cell.output_size == 2
    outputs = layer(np.zeros((BATCH, TIME, FEATURES), "float32"))
    assert tuple(outputs.shape) == (BATCH, 2)


@pytest.mark.parametrize("use_peepholes", [False, True])
def test_without_options_weights_are_todays(use_peepholes):
    """No new option: the weights of 0.1.0 (those of keras.layers.LSTM,
    peepholes after them), drawn alike from seeded initializers."""
    seeded = {
        "kernel_initializer": keras.initializers.GlorotUniform(seed=1),
        "recurrent_initializer": keras.initializers.Orthogonal(seed=2),
        "bias_initializer": keras.initializers.RandomNormal(seed=3),
    }
    ours = kr.LSTM(UNITS, use_peepholes=use_peepholes, **seeded)
    builtin = keras.layers.LSTM(UNITS, **seeded)
    for layer in (ours, builtin):
        layer.build((None, None, FEATURES))
    names = ["kernel", "recurrent_kernel", "bias"]
    if use_peepholes:
        names += [f"{g}_gate_peephole_weights" for g in ("input", "forget", "output")]
    assert [w.name for w in ours.weights] == names
    for a, b in zip(ours.get_weights(), builtin.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert ours.cell.state_size == [UNITS, UNITS]
    assert ours.cell.update_sums_inputs
    assert not kr.LSTM(UNITS, use_layer_norm=True).cell.update_sums_inputs

"""Every variant configuration (``helpers.VARIANTS``: layer norm, projection,
cell clipping) against its float64 NumPy reference, everywhere a layer works.

Each variant is built with random weights (the layer-norm gains and offsets
moved away from ones and zeros) and compared with ``reference.run`` over the
variant's ``reference_step``, independent NumPy code written from the
equations: in float64 to ``1e-10`` (round-off), in float32 to ``1e-5``. The
checks cover return_sequences and return_state, masks, initial states,
``go_backwards``, ``unroll=True``, stateful streaming, dropout,
Bidirectional, the cell inside ``keras.layers.RNN``, ``.keras`` saving,
mixed precision, the loop that runs, and finite-difference gradients of
every weight. Each test checks several things on one set of layers, as
every new layer compiles its loops on TensorFlow.
"""

import inspect

import keras
import numpy as np
import pytest
import reference
from helpers import VARIANTS, assert_all_close, gradients, mask_array
from test_gradients import _evaluator  # compiled once per shape

NAMES = list(VARIANTS)
BATCH, TIME, FEATURES, UNITS = 3, 6, 4, 3  # helpers.MASKS: batch 3, 6 steps
F64_ATOL, F32_ATOL = 1e-10, 1e-5
# mixed_float16 against float32: five units in the last place at 1 (as in
# tests/test_mixed_precision.py), relative above 1.
F16_ATOL = 5 * 2**-10


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _dtype(x):
    return keras.backend.standardize_dtype(x.dtype)


def _check(case, actual, expected, atol, rtol=0.0):
    """``actual`` and ``expected`` (lists of arrays) agree; a failure names
    ``case``."""
    try:
        assert_all_close(actual, expected, atol=atol, rtol=rtol)
    except AssertionError as error:
        raise AssertionError(f"[{case}] {error}") from None


def _new(name, dtype="float64", **options):
    """The variant ``name``'s layer, not built."""
    variant = VARIANTS[name]
    return variant.layer(UNITS, dtype=dtype, **variant.kwargs, **options)


def _random_weights(layer, seed):
    """``layer``'s weights, each moved by a random amount: gains away from
    one, offsets, biases and peepholes away from zero."""
    rng = np.random.default_rng(seed)
    return [w + rng.normal(scale=0.3, size=w.shape) for w in layer.get_weights()]


def _layer(name, dtype="float64", batch=None, weights=None, seed=0, **options):
    """The variant ``name``'s layer, built, with ``weights`` or random ones."""
    layer = _new(name, dtype, **options)
    layer.build((batch, None, FEATURES))
    if weights is None:
        weights = _random_weights(layer, seed + NAMES.index(name))
    layer.set_weights([np.asarray(w, layer.variable_dtype) for w in weights])
    return layer


def _state_sizes(layer):
    sizes = layer.cell.state_size
    return list(sizes) if isinstance(sizes, (list, tuple)) else [sizes]


def _inputs(seed=0, dtype="float64"):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(BATCH, TIME, FEATURES)).astype(dtype)


def _states(layer, seed=1, zeros=False):
    rng = np.random.default_rng(seed)
    return [
        np.zeros((BATCH, size)) if zeros else rng.normal(size=(BATCH, size))
        for size in _state_sizes(layer)
    ]


def _reference(name, weights, x, initial_state, recurrent_mask=None, **run_options):
    """``[outputs, *final_states]`` of the variant's float64 reference.

    ``recurrent_mask`` multiplies ``h_{t-1}`` where it enters the recurrent
    matmul. A reference step without that argument is one whose ``h_{t-1}``
    enters nothing else (the LSTM's), and gets the dropped ``h_{t-1}``.
    """
    variant = VARIANTS[name]
    step, kwargs = variant.reference_step, variant.kwargs
    weights = [np.asarray(w, "float64") for w in weights]
    takes_mask = "recurrent_mask" in inspect.signature(step).parameters

    def step_t(x_t, states):
        if recurrent_mask is None:
            return step(x_t, states, weights, **kwargs)
        if takes_mask:
            return step(x_t, states, weights, recurrent_mask=recurrent_mask, **kwargs)
        dropped = [states[0] * recurrent_mask, *states[1:]]
        return step(x_t, dropped, weights, **kwargs)

    outputs, states = reference.run(step_t, x, initial_state, **run_options)
    return [outputs, *states]


def _called(layer, x, initial_state=None, mask=None, **kwargs):
    if initial_state is not None:
        kwargs["initial_state"] = [np.asarray(s) for s in initial_state]
    if mask is not None:
        kwargs["mask"] = mask
    return layer(x, **kwargs)


def _check_loop(name, layer):
    """On TensorFlow the compiled loop serves every call; on PyTorch no fused
    kernel serves a layer-normalised cell."""
    backend = keras.backend.backend()
    loops = {layer.loop_for(mask=mask, training=True) for mask in (None, True)}
    loops.add(layer.loop_for())
    if backend == "tensorflow":
        assert loops == {"xla"}, loops
    if backend == "torch" and VARIANTS[name].kwargs.get("use_layer_norm"):
        assert "torch-fused" not in loops, loops


@pytest.mark.float64
@pytest.mark.parametrize("name", NAMES)
def test_float64_matches_reference_and_finite_differences(name):
    """Masks and initial states, and the gradients of every weight, in the
    layer's own loop (on TensorFlow, the compiled loop and its own backward
    pass); stateful streaming and reset_state(states=...); go_backwards with
    unroll=True."""
    options = {"return_sequences": True, "return_state": True}
    layer = _layer(name, **options)
    _check_loop(name, layer)
    weights = layer.get_weights()
    x, h0, zeros = _inputs(), _states(layer), _states(layer, zeros=True)
    # (Calls without a mask: the stateful and float32 checks.)
    for case, initial_state, mask_kind in [
        ("initial_state, holes", h0, "holes"),
        ("fully_masked_row_and_holes", None, "fully_masked_row_and_holes"),
    ]:
        mask = mask_array(mask_kind)
        start = zeros if initial_state is None else initial_state
        expected = _reference(name, weights, x, start, mask=mask)
        _check(case, _called(layer, x, initial_state, mask), expected, F64_ATOL)
    _check_gradients(layer, x, h0, mask_array("holes"))

    # Two batches in a row are one sequence of twice the length.
    stateful = _layer(name, batch=BATCH, weights=weights, stateful=True, **options)
    more = _inputs(seed=2)
    outputs = [_numpy(stateful(chunk)[0]) for chunk in (x, more)]
    actual = [np.concatenate(outputs, axis=1), *stateful.states]
    whole = np.concatenate([x, more], axis=1)
    _check("streamed", actual, _reference(name, weights, whole, zeros), F64_ATOL)
    stateful.reset_state(states=h0)
    stateful(more)
    expected = _reference(name, weights, more, h0)[1:]
    _check("reset_state(states=h0)", stateful.states, expected, F64_ATOL)

    unrolled = _layer(name, weights=weights, unroll=True, go_backwards=True, **options)
    mask = mask_array("leading_masked")
    expected = _reference(name, weights, x, h0, mask=mask, go_backwards=True)
    actual = _called(unrolled, x, h0, mask)
    case = "unroll, go_backwards, initial_state, leading_masked"
    _check(case, actual, expected, F64_ATOL)


def _record_masks(cell, monkeypatch):
    """The dropout masks ``cell`` hands out, recorded as it draws them."""
    drawn = {}
    for kind, method in [
        ("input", "get_dropout_mask"),
        ("recurrent", "get_recurrent_dropout_mask"),
    ]:
        original = getattr(cell, method)

        def get(step_input, kind=kind, original=original):
            drawn[kind] = mask = original(step_input)
            return mask

        monkeypatch.setattr(cell, method, get)
    return drawn


def _drawn(drawn, kind):
    mask = _numpy(drawn[kind])
    assert np.any(mask == 0) and np.any(mask != 0), f"{kind} mask: {mask}"
    return mask


@pytest.mark.float64
@pytest.mark.parametrize("name", NAMES)
def test_dropout_bidirectional_and_keras_rnn(name, monkeypatch):
    """Dropout with the masks the cell drew; a Bidirectional layer; the cell
    in keras.layers.RNN, where at inference its dropout does nothing."""
    x, holes = _inputs(), mask_array("holes")
    dropping = _layer(name, return_sequences=True, dropout=0.4, recurrent_dropout=0.4)
    weights = dropping.get_weights()
    zeros = _states(dropping, zeros=True)
    drawn = _record_masks(dropping.cell, monkeypatch)
    training = _numpy(dropping(x, training=True))
    input_mask, recurrent_mask = _drawn(drawn, "input"), _drawn(drawn, "recurrent")
    expected = _reference(
        name, weights, x * input_mask[:, None, :], zeros, recurrent_mask
    )
    _check("dropout in training", [training], expected[:1], F64_ATOL)

    bidirectional = keras.layers.Bidirectional(
        _new(name, return_sequences=True), dtype="float64"
    )
    bidirectional.build((None, None, FEATURES))
    forward, backward = bidirectional.forward_layer, bidirectional.backward_layer
    forward.set_weights(weights)
    backward.set_weights(_random_weights(backward, seed=11))
    ahead = _reference(name, weights, x, zeros, mask=holes)[0]
    behind = _reference(
        name, backward.get_weights(), x, zeros, mask=holes, go_backwards=True
    )[0]
    # Bidirectional sets zero_output_for_mask: zeros at masked steps.
    expected = np.concatenate([ahead, behind[:, ::-1]], axis=-1) * holes[..., None]
    _check("Bidirectional, holes", [bidirectional(x, mask=holes)], [expected], F64_ATOL)

    # The same cell, with its dropout, in Keras's own loop.
    rnn = keras.layers.RNN(
        dropping.cell, return_sequences=True, return_state=True, dtype="float64"
    )
    expected = _reference(name, weights, x, zeros, mask=holes)
    actual = rnn(x, mask=holes)
    _check("keras.layers.RNN at inference, holes", actual, expected, F64_ATOL)


@pytest.mark.parametrize("name", NAMES)
def test_float32_saving_and_mixed_precision(name, tmp_path, monkeypatch):
    """Float32 against the reference; a .keras round trip with safe_mode;
    mixed_float16 close to float32, with float32 variables, and states that
    the time loop carries in float32."""
    options = {"return_sequences": True, "return_state": True}
    layer = _layer(name, dtype="float32", **options)
    weights = layer.get_weights()
    x = _inputs(dtype="float32")
    expected = _reference(name, weights, x, _states(layer, zeros=True))
    float32 = [_numpy(o) for o in layer(x)]
    _check("float32", float32, expected, F32_ATOL)

    inputs = keras.Input((None, FEATURES))
    model = keras.Model(inputs, layer(inputs))
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    twin = loaded.layers[-1]
    assert type(twin) is type(layer)
    config = twin.get_config()
    for key, value in VARIANTS[name].kwargs.items():
        assert config[key] == value, (key, config[key])
    assert [w.path for w in twin.weights] == [w.path for w in layer.weights]
    _check("loaded", loaded(x), float32, 1e-6)

    mixed = _layer(name, "mixed_float16", weights=weights, **options)
    assert mixed.compute_dtype == "float16"
    assert {_dtype(w) for w in mixed.weights} == {"float32"}
    carried = []
    inner_loop = mixed.inner_loop

    def recording_inner_loop(*args, **kwargs):
        last_output, outputs, states = inner_loop(*args, **kwargs)
        carried.extend(_dtype(s) for s in states)
        return last_output, outputs, states

    monkeypatch.setattr(mixed, "inner_loop", recording_inner_loop)
    out = mixed(x)
    assert set(carried) == {"float32"}, carried
    assert {_dtype(o) for o in out} == {"float16"}  # Keras casts them back
    as_float32 = [_numpy(keras.ops.cast(o, "float32")) for o in out]
    # Five units in the last place at each value's magnitude (at least 1):
    # the LSTM's cell state grows past 1.
    _check("mixed_float16", as_float32, float32, F16_ATOL, rtol=F16_ATOL)


# Central finite differences along random directions, one pair of
# evaluations per direction: every weight's gradient is checked at the cost
# of a few evaluations instead of two per entry (tests/test_gradients.py
# checks entry by entry for the layers without variant options).
EPS, DIRECTIONS = 1e-6, 2
GRAD_RTOL, GRAD_ATOL = 1e-6, 1e-8


def _directional_differences(loss, arrays, variables, directions):
    """``d/de loss(value + e * direction)`` at ``e = 0`` by central
    differences, for each of ``arrays`` then ``variables`` and each of its
    ``directions``."""
    evaluate = _evaluator(loss, variables)

    def value(args):
        args = [keras.ops.convert_to_tensor(a) for a in args]
        return float(_numpy(evaluate(*args)))

    def central(at):
        return (at(EPS) - at(-EPS)) / (2 * EPS)

    results = []
    for i in range(len(arrays)):
        for d in directions[i]:

            def at(e, i=i, d=d):
                return value([a + e * d if j == i else a for j, a in enumerate(arrays)])

            results.append(central(at))
    for k, variable in enumerate(variables):
        base = np.array(variable.numpy())
        for d in directions[len(arrays) + k]:

            def at(e, d=d, variable=variable, base=base):
                variable.assign(base + e * d)
                return value(arrays)

            results.append(central(at))
        variable.assign(base)
    return results


def _check_gradients(layer, x, initial_state, mask):
    """Autodiff against finite differences of ``sum(P * outputs)`` over the
    output sequence and the final states, with respect to the inputs, the
    initial states and every weight; masked inputs get a zero gradient."""
    rng = np.random.default_rng(5)
    count = len(initial_state)
    sizes = [s.shape[-1] for s in initial_state]
    projections = [rng.normal(size=(*x.shape[:2], sizes[0]))]
    projections += [rng.normal(size=s.shape) for s in initial_state]

    def loss(inputs, *rest):  # rest: the initial states (then the variables)
        outputs = layer(inputs, initial_state=list(rest[:count]), mask=mask)
        return sum(
            keras.ops.sum(keras.ops.multiply(o, p))
            for o, p in zip(outputs, projections)
        )

    variables = layer.trainable_weights
    assert len(variables) == len(layer.get_weights())
    arrays = [x, *initial_state]
    autodiff = gradients(loss, [*arrays, *variables])
    shapes = [a.shape for a in arrays] + [tuple(v.shape) for v in variables]
    directions = [[rng.normal(size=s) for _ in range(DIRECTIONS)] for s in shapes]
    numeric = iter(_directional_differences(loss, arrays, variables, directions))
    names = ["inputs", *[f"initial_state[{i}]" for i in range(count)]]
    names += [v.name for v in variables]
    for what, grad, along in zip(names, autodiff, directions):
        assert np.abs(grad).max() > 1e-3, f"{what}: a vacuous check"
        for d in along:
            expected = next(numeric)
            np.testing.assert_allclose(
                np.sum(grad * d),
                expected,
                rtol=GRAD_RTOL,
                atol=GRAD_ATOL,
                err_msg=f"gradient of {what}",
            )
    assert np.all(autodiff[0][~mask] == 0.0), "masked inputs got a gradient"

"""Long sequences and stateful streaming.

- ``test_long_sequence``: 10,000 time steps, batch 2, every layer. Outputs
  and gradients are finite; outputs and final states equal the float64 NumPy
  reference (``tests/reference.py``) to ``LONG_TOL``; the gradient, along a
  random direction in (inputs, initial states, weights), equals the central
  difference of the reference's loss to ``LONG_GRAD_RTOL``; the peak memory
  of a forward and backward pass is measured (Linux ``/proc``) and bounded;
  and the same sequence fed to a stateful copy in chunks of 1, 4,999 and
  5,000 steps gives the same outputs and states.
- ``test_streaming_equals_whole_sequence`` (Hypothesis, per layer, examples
  per the profile in ``tests/conftest.py``): a sequence of 1 to 6 steps cut into
  chunks of any sizes, with or without a mask, from zero states
  (``reset_state()``) or given ones (``reset_state(states=...)``): the states
  after the chunks equal those after the whole sequence, and so do the
  outputs, except where Keras's masking rule makes them differ (see
  :func:`streamed_outputs`); the whole-sequence result equals the built-in
  stateful layer's (the float64 reference for the peephole LSTM), and the
  streamed one equals the built-in fed the same chunks.
- ``test_batch_size_change_raises``: a stateful layer refuses another batch
  size with a clear error and keeps its states.
"""

import contextlib
import dataclasses
import functools

import keras
import numpy as np
import pytest
import reference
from helpers import LAYERS, builtin_kwargs, gradients, num_states
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

NAMES = list(LAYERS)


def reference_step(name, weights):
    """``step(x_t, states) -> new_states`` of the float64 reference."""
    weights = [np.asarray(w, "float64") for w in weights]
    if name == "simple_rnn":
        return lambda x_t, s: reference.simple_rnn_step(x_t, s, weights)
    if name.startswith("lstm"):
        peepholes = name == "lstm_peepholes"
        return lambda x_t, s: reference.lstm_step(x_t, s, weights, peepholes)
    reset_after = name == "gru"
    return lambda x_t, s: reference.gru_step(x_t, s, weights, reset_after)


def new_layer(name, units, **kwargs):
    config = LAYERS[name]
    return config.layer(
        units, return_sequences=True, return_state=True, **config.kwargs, **kwargs
    )


def numpy(values):
    """Tensors or variables, possibly nested, as a flat list of arrays."""
    return [
        np.array(v.numpy())
        if isinstance(v, keras.Variable)
        else keras.ops.convert_to_numpy(v)
        for v in keras.tree.flatten(values)
    ]


# -- memory ---------------------------------------------------------------------


def _status_mib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


@contextlib.contextmanager
def peak_memory():
    """Yields a dict whose ``"mib"`` is, on exit, the peak resident memory
    reached inside the block above the resident memory at its start."""
    result = {}
    try:  # Linux >= 4.0: "5" resets the peak (VmHWM) to the current RSS
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        start = _status_mib("VmRSS")
    except OSError:  # then only growth beyond the process's earlier peak shows
        start = _status_mib("VmHWM")
    yield result
    result["mib"] = _status_mib("VmHWM") - start


# -- 10,000 time steps ------------------------------------------------------------

LONG_T, LONG_B, LONG_F, LONG_H = 10_000, 2, 3, 8
LONG_CHUNKS = (1, 4_999, 5_000)
LONG_TOL = 1e-5  # float32 over 10,000 steps vs float64: atol and rtol
LONG_GRAD_RTOL = 1e-4  # a float32 sum over ~10^5 terms vs float64 differences
COLD_PEAK_MIB = 512  # first call, XLA compilation included
WARM_PEAK_MIB = 64  # second call: the computation itself
# PyTorch's own GRU kernel (torch.gru, which the GRU runs on PyTorch) holds
# about 18 KiB per step for its backward pass on a CPU: 178 MiB at 10,000
# steps, measured calling torch.gru alone in a fresh process (torch.lstm:
# 27 MiB). Linear in time, and PyTorch's: the bound there is its own.
TORCH_GRU_WARM_PEAK_MIB = 256

# What the long-sequence test measured, for the report (``pytest -s``).
MEASURED = {}


def _long_problem(name):
    rng = np.random.default_rng(NAMES.index(name))
    layer = new_layer(name, LONG_H)
    layer.build((None, None, LONG_F))
    weights = [
        rng.normal(scale=0.4, size=w.shape).astype("float32")
        for w in layer.get_weights()
    ]
    layer.set_weights(weights)
    x = rng.normal(size=(LONG_B, LONG_T, LONG_F)).astype("float32")
    states = [
        rng.normal(size=(LONG_B, LONG_H)).astype("float32")
        for _ in range(num_states(name))
    ]
    shapes = [(LONG_B, LONG_T, LONG_H)] + [(LONG_B, LONG_H)] * num_states(name)
    projections = [rng.normal(size=s).astype("float32") for s in shapes]
    return layer, weights, x, states, projections, rng


def _reference_loss(name, projections):
    n = num_states(name)

    def loss(x, *rest):
        sequence, states = reference.run(
            reference_step(name, rest[n:]), x, list(rest[:n])
        )
        outputs = [sequence, *states]
        return sum(np.sum(o * p) for o, p in zip(outputs, projections))

    return loss


@pytest.mark.parametrize("name", NAMES)
def test_long_sequence(name):
    layer, weights, x, states, projections, rng = _long_problem(name)
    n = num_states(name)

    def loss(inputs, *rest):
        outputs = layer(inputs, initial_state=list(rest[:n]))
        # keras.ops.multiply: on PyTorch, `tensor * ndarray` hands the tensor
        # to NumPy, which refuses one that requires grad.
        return sum(
            keras.ops.sum(keras.ops.multiply(o, p))
            for o, p in zip(outputs, projections)
        )

    tensors = [x, *states, *layer.trainable_weights]
    with peak_memory() as cold:
        grads = gradients(loss, tensors)
    # The outputs from a call of their own: inside jax.grad they are tracers.
    outputs = numpy(layer(x, initial_state=states))
    for what, values in [("outputs", outputs), ("gradients", grads)]:
        assert all(np.all(np.isfinite(v)) for v in values), f"non-finite {what}"
    assert np.abs(grads[0][:, -1]).max() > 0  # the loss depends on the inputs

    # The outputs and final states, against the float64 reference.
    sequence, final = reference.run(reference_step(name, weights), x, states)
    for what, a, e in zip(["outputs", "h", "c"], outputs, [sequence, *final]):
        np.testing.assert_allclose(a, e, rtol=LONG_TOL, atol=LONG_TOL, err_msg=what)

    # The gradient along a random direction, against the reference's.
    arrays = [x, *states, *weights]
    direction = [rng.normal(size=a.shape) for a in arrays]
    autodiff = sum(float(np.sum(g * d)) for g, d in zip(grads, direction))
    reference_loss = _reference_loss(name, projections)
    eps = 1e-6
    plus = reference_loss(*[a + eps * d for a, d in zip(arrays, direction)])
    minus = reference_loss(*[a - eps * d for a, d in zip(arrays, direction)])
    numeric = (plus - minus) / (2 * eps)
    assert abs(autodiff - numeric) <= LONG_GRAD_RTOL * abs(numeric), (
        autodiff,
        numeric,
    )

    # The same computation again: no compilation, only its own memory.
    with peak_memory() as warm:
        gradients(loss, tensors)

    # Streaming: the sequence in chunks through a stateful copy.
    streamer = new_layer(name, LONG_H, stateful=True)
    streamer.build((LONG_B, None, LONG_F))
    streamer.set_weights(weights)
    streamer.reset_state(states=states)
    bounds = np.cumsum((0, *LONG_CHUNKS))
    assert bounds[-1] == LONG_T
    pieces = [numpy(streamer(x[:, a:b])) for a, b in zip(bounds, bounds[1:])]
    streamed = [np.concatenate([p[0] for p in pieces], axis=1), *pieces[-1][1:]]
    difference = max(float(np.abs(s - o).max()) for s, o in zip(streamed, outputs))
    assert difference <= 1e-6, f"streamed vs whole: {difference}"
    for variable, value in zip(streamer.states, outputs[1:]):
        np.testing.assert_allclose(numpy([variable])[0], value, atol=1e-6, rtol=0)

    MEASURED[name] = {
        "cold_peak_mib": round(cold["mib"], 1),
        "warm_peak_mib": round(warm["mib"], 1),
        "max_vs_reference": max(  # |ours - reference| / (1 + |reference|)
            float((np.abs(a - e) / (1 + np.abs(e))).max())
            for a, e in zip(outputs, [sequence, *final])
        ),
        "directional_gradient_rel": abs(autodiff - numeric) / abs(numeric),
        "streamed_vs_whole": difference,
    }
    print(f"\n{name}: {MEASURED[name]}")
    assert cold["mib"] < COLD_PEAK_MIB, MEASURED[name]
    torch_gru = keras.backend.backend() == "torch" and name == "gru"
    bound = TORCH_GRU_WARM_PEAK_MIB if torch_gru else WARM_PEAK_MIB
    assert warm["mib"] < bound, MEASURED[name]


# -- stateful streaming, drawn chunks -----------------------------------------------

SB, SF, SH = 2, 3, 4
STREAM_ATOL = 1e-6  # the same layer, whole vs in chunks
TOL = 1e-5  # ours vs the built-in (float32) or the reference


@functools.cache
def streaming_layers(name):
    """Our stateful layer and the built-in's (or None), with the same weights.

    Kept for the whole module: every example starts with a reset, and a new
    layer per example would compile its loop again for every chunk length.
    """
    ours = new_layer(name, SH, stateful=True)
    ours.build((SB, None, SF))
    rng = np.random.default_rng(100 + NAMES.index(name))
    weights = [
        rng.normal(scale=0.5, size=w.shape).astype("float32")
        for w in ours.get_weights()
    ]
    ours.set_weights(weights)
    config = LAYERS[name]
    builtin = None
    if config.builtin is not None:
        builtin = config.builtin(
            SH,
            stateful=True,
            return_sequences=True,
            return_state=True,
            # On JAX the built-in's rolled loop (Keras 3.15) outputs the
            # carried state, not zeros, at the masked steps before a chunk's
            # first unmasked one when it starts from nonzero states, as a
            # stateful layer does; its unrolled loop, TensorFlow's and
            # PyTorch's give zeros. See helpers.builtin_reference.
            unroll=keras.backend.backend() == "jax",
            **builtin_kwargs(config.kwargs),
        )
        builtin.build((SB, None, SF))
        builtin.set_weights(weights)
    return ours, builtin, weights


@dataclasses.dataclass
class Stream:
    name: str
    bounds: list  # chunk boundaries, 0 to time
    mask: np.ndarray | None
    given_states: bool  # reset_state(states=...) rather than reset_state()
    seed: int

    @property
    def time(self):
        return self.bounds[-1]

    def chunks(self):
        return list(zip(self.bounds, self.bounds[1:]))


@st.composite
def streams(draw, name):
    time = draw(st.integers(1, 6))
    cuts = draw(st.sets(st.integers(1, time - 1))) if time > 1 else set()
    return Stream(
        name=name,
        bounds=[0, *sorted(cuts), time],
        mask=draw(st.none() | arrays(np.bool_, (SB, time))),
        given_states=draw(st.booleans()),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


def streamed_outputs(whole, mask, bounds):
    """What feeding ``bounds``'s chunks must output, given the whole-sequence
    outputs ``whole``: the same, except at masked steps before the first
    unmasked step of a chunk. Keras outputs zeros there (there is no earlier
    output in that call to repeat), where the whole sequence repeats the last
    output of the chunk before. States are carried over unchanged either way.
    """
    expected = np.array(whole)
    if mask is not None:
        for a, b in zip(bounds, bounds[1:]):
            seen = np.cumsum(mask[:, a:b], axis=1) > 0
            expected[:, a:b][~seen] = 0.0
    return expected


def _reset(layer, values, ours):
    if values is None:
        layer.reset_state()
    elif ours:
        layer.reset_state(states=values)
    else:  # the built-in's reset_state takes no values
        for variable, value in zip(layer.states, values):
            variable.assign(value)


def _feed(layer, x, mask, chunks):
    pieces = []
    for a, b in chunks:
        pieces.append(
            numpy(layer(x[:, a:b], mask=None if mask is None else mask[:, a:b]))
        )
    return [np.concatenate([p[0] for p in pieces], axis=1), *pieces[-1][1:]]


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_streaming_equals_whole_sequence(name, data):
    stream = data.draw(streams(name), label="stream")
    ours, builtin, weights = streaming_layers(stream.name)
    rng = np.random.default_rng(stream.seed)
    x = rng.normal(size=(SB, stream.time, SF)).astype("float32")
    n = num_states(stream.name)
    values = None
    if stream.given_states:
        values = [rng.normal(size=(SB, SH)).astype("float32") for _ in range(n)]
    start = values or [np.zeros((SB, SH), "float32")] * n

    _reset(ours, values, ours=True)
    np.testing.assert_array_equal(numpy(ours.states), start)
    whole = _feed(ours, x, stream.mask, [(0, stream.time)])
    _reset(ours, values, ours=True)
    streamed = _feed(ours, x, stream.mask, stream.chunks())

    expected = streamed_outputs(whole[0], stream.mask, stream.bounds)
    np.testing.assert_allclose(streamed[0], expected, atol=STREAM_ATOL, rtol=0)
    for s, w, v in zip(streamed[1:], whole[1:], numpy(ours.states)):
        np.testing.assert_allclose(s, w, atol=STREAM_ATOL, rtol=0)
        np.testing.assert_array_equal(v, s)  # the layer holds what it returned

    if builtin is None:  # the peephole LSTM: the float64 reference
        sequence, final = reference.run(
            reference_step(stream.name, weights), x, start, mask=stream.mask
        )
        for a, e in zip(whole, [sequence, *final]):
            np.testing.assert_allclose(a, e, atol=TOL, rtol=TOL)
        return
    for chunks, ours_result in [
        ([(0, stream.time)], whole),
        (stream.chunks(), streamed),
    ]:
        _reset(builtin, values, ours=False)
        theirs = _feed(builtin, x, stream.mask, chunks)
        for a, e in zip(ours_result, theirs):
            np.testing.assert_allclose(a, e, atol=TOL, rtol=TOL)


@pytest.mark.parametrize("name", NAMES)
def test_batch_size_change_raises(name):
    ours, _, _ = streaming_layers(name)
    values = [np.full((SB, SH), 0.5, "float32")] * num_states(name)
    ours.reset_state(states=values)
    for batch in (SB - 1, SB + 1):
        with pytest.raises(ValueError) as error:
            ours(np.zeros((batch, 3, SF), "float32"))
        message = str(error.value)
        for part in ["stateful", f"batch of {SB}", f"inputs.shape=({batch}, 3, {SF})"]:
            assert part in message, message
        np.testing.assert_array_equal(numpy(ours.states), values)
    with pytest.raises(
        ValueError, match=rf"initial_state\[0\] of shape \({SB}, {SH}\)"
    ):
        ours.reset_state(states=[np.zeros((SB + 1, SH))] * num_states(name))
    np.testing.assert_array_equal(numpy(ours.states), values)

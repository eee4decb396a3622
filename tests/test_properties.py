"""Property-based equivalence: drawn configurations against independent results.

Both tests run once per time loop of ours (``LOOPS``): our cell inside
``keras.layers.RNN`` (with ``unroll`` drawn), our layer with ``unroll=True``,
and our layer's own loop (on TensorFlow the XLA-compiled loop of
``keras_recurrent.loops.tensorflow``, on JAX ``lax.scan`` with its custom
VJP, on PyTorch the fused kernel where the configuration has one, elsewhere
``keras.ops.scan``). Within a loop,
each example draws a layer and every option that changes its numbers: layer
type, units, features, batch, time steps (from 1), activations, ``use_bias``,
``return_sequences``, ``return_state``, ``go_backwards``, GRU ``reset_after``,
LSTM ``unit_forget_bias``, an initial state or none, and a mask (none, all
true, right-padded, arbitrary, or with all-false rows); then random weights,
inputs, initial states and a random linear loss on all outputs.

- ``test_matches_builtin``: ``SimpleRNN``, ``LSTM(use_peepholes=False)`` and
  ``GRU`` against ``keras.layers.X`` holding the same weights, in float32:
  outputs, returned states and the gradients of the loss with respect to the
  inputs, the initial states and every weight agree to
  ``|ours - builtin| <= 1e-5 * (1 + |builtin|)``.
- ``test_peephole_matches_reference``: the peephole LSTM (layer or cell)
  against the float64 NumPy reference of ``tests/reference.py``: outputs and
  states to the same tolerance, and gradients against central finite
  differences of the reference, to the same tolerance too (ours runs in
  float32; 500 random examples saw at most 4.4e-7).
  The reference has the default activations only, so they are not drawn.

How many examples: ``max_examples`` of the Hypothesis profile
(``tests/conftest.py``) per test and loop: in CI 12, derandomized, so 36 per
test; ``HYPOTHESIS_PROFILE=thorough`` draws 200 fresh ones per
loop. ``hypothesis.target`` steers the search towards large differences;
``--hypothesis-show-statistics`` prints the largest seen.
"""

import dataclasses

import keras
import numpy as np
import pytest
import reference
from helpers import KINDS, LAYERS, builtin_reference, gradients, num_states
from hypothesis import given, target
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

TOL = 1e-5  # relative to 1 + |expected|, for every comparison here
FD_EPS = 1e-6

ACTIVATIONS = ["tanh", "relu", "sigmoid", "softsign", "elu", "linear", None]
GATE_ACTIVATIONS = ["sigmoid", "hard_sigmoid", "tanh"]
MASK_KINDS = ["none", "all_true", "right_padded", "arbitrary", "all_false_rows"]
# Our time loops: our cell in keras.layers.RNN, our layer unrolled, and our
# layer's own loop (the one its loop_for() names).
LOOPS = ["cell", "unroll", "own"]


@dataclasses.dataclass
class Case:
    """One drawn configuration; ``seed`` fixes weights, inputs and states."""

    name: str
    loop: str  # one of LOOPS
    batch: int
    time: int
    features: int
    cell: dict  # cell arguments, units included
    layer: dict  # keras.layers.RNN arguments
    initial_state: bool
    mask_kind: str
    mask: np.ndarray | None
    seed: int

    @property
    def via_cell(self):  # ours as its cell in keras.layers.RNN
        return self.loop == "cell"

    @property
    def num_states(self):
        return num_states(self.name)

    def output_shapes(self):
        batch, units = self.batch, self.cell["units"]
        first = (
            (batch, self.time, units)
            if self.layer["return_sequences"]
            else (batch, units)
        )
        states = [(batch, units)] * self.num_states
        return [first, *states] if self.layer["return_state"] else [first]


@st.composite
def masks(draw, batch, time):
    kind = draw(st.sampled_from(MASK_KINDS))
    if kind == "none":
        return kind, None
    if kind == "all_true":
        return kind, np.ones((batch, time), bool)
    if kind == "right_padded":  # lengths from 0 (an all-false row) to time
        lengths = draw(st.lists(st.integers(0, time), min_size=batch, max_size=batch))
        return kind, np.arange(time) < np.array(lengths)[:, None]
    mask = np.array(draw(arrays(np.bool_, (batch, time))))
    if kind == "all_false_rows":
        rows = draw(st.sets(st.integers(0, batch - 1), min_size=1))
        mask[sorted(rows)] = False
    return kind, mask


@st.composite
def cases(draw, loop, name=None, peepholes=False):
    name = name or draw(st.sampled_from(KINDS))
    batch, time = draw(st.integers(1, 3)), draw(st.integers(1, 6))
    cell = {"units": draw(st.integers(1, 5)), "use_bias": draw(st.booleans())}
    if not peepholes:  # the reference knows the default activations only
        cell["activation"] = draw(st.sampled_from(ACTIVATIONS))
        if name != "simple_rnn":
            cell["recurrent_activation"] = draw(st.sampled_from(GATE_ACTIVATIONS))
    if name == "gru":
        cell["reset_after"] = draw(st.booleans())
    if name == "lstm":
        cell["unit_forget_bias"] = draw(st.booleans())
    layer = {
        option: draw(st.booleans())
        for option in ("return_sequences", "return_state", "go_backwards")
    }
    layer["unroll"] = draw(st.booleans()) if loop == "cell" else loop == "unroll"
    mask_kind, mask = draw(masks(batch, time))
    return Case(
        name=name,
        loop=loop,
        batch=batch,
        time=time,
        features=draw(st.integers(1, 4)),
        cell=cell,
        layer=layer,
        initial_state=draw(st.booleans()),
        mask_kind=mask_kind,
        mask=mask,
        seed=draw(st.integers(0, 2**32 - 1)),
    )


def ours_for(case, **fixed):
    """Our layer for ``case``, built, or our cell in ``keras.layers.RNN``."""
    config = LAYERS[case.name]
    if case.via_cell:
        layer = keras.layers.RNN(config.cell(**case.cell, **fixed), **case.layer)
    else:
        layer = config.layer(**case.cell, **fixed, **case.layer)
    layer.build((None, case.time, case.features))  # unroll needs the time axis
    return layer


def keras_loop_reference(layer, case):
    """``layer``, a built-in or our cell in ``keras.layers.RNN``, as
    :func:`helpers.builtin_reference` makes it: with Keras's other time loop
    where Keras's own loop for the case is wrong (JAX's rolled loop with a
    mask and an initial state) or raises (PyTorch's unrolled loop with a mask
    and ``go_backwards``). Call after the weights are set."""
    return builtin_reference(
        layer, masked=case.mask is not None, initial_state=case.initial_state
    )


def draw_values(case, layer, dtype="float32"):
    """Random weights (set into ``layer``), inputs, states and loss weights."""
    rng = np.random.default_rng(case.seed)
    layer.set_weights(
        [
            rng.normal(scale=0.5, size=w.shape).astype(w.dtype)
            for w in layer.get_weights()
        ]
    )
    x = rng.normal(size=(case.batch, case.time, case.features)).astype(dtype)
    states = []
    if case.initial_state:
        shape = (case.batch, case.cell["units"])
        states = [rng.normal(size=shape).astype(dtype) for _ in range(case.num_states)]
    projections = [rng.normal(size=s).astype(dtype) for s in case.output_shapes()]
    return x, states, projections


def outputs_and_gradients(layer, case, x, states, projections):
    """The layer's outputs and the gradients of ``sum(projection * output)``
    with respect to the inputs, the initial states and every weight."""

    def call(inputs, initial_state):
        out = layer(inputs, initial_state=list(initial_state) or None, mask=case.mask)
        return keras.tree.flatten(out)

    def loss(inputs, *rest):
        outputs = call(inputs, rest[: len(states)])
        # keras.ops.multiply: on PyTorch, `tensor * ndarray` hands the tensor
        # to NumPy, which refuses one that requires grad.
        return sum(
            keras.ops.sum(keras.ops.multiply(o, p))
            for o, p in zip(outputs, projections)
        )

    grads = gradients(loss, [x, *states, *layer.trainable_weights])
    # The outputs from a call of their own: inside jax.grad they are tracers.
    return [keras.ops.convert_to_numpy(o) for o in call(x, states)], grads


def assert_close(actual, expected, tol, what):
    """``|actual - expected| <= tol * (1 + |expected|)``, everywhere."""
    assert len(actual) == len(expected), what
    worst = 0.0
    for index, (a, e) in enumerate(zip(actual, expected)):
        assert a.shape == e.shape, f"{what}[{index}]: {a.shape} != {e.shape}"
        np.testing.assert_allclose(a, e, rtol=tol, atol=tol, err_msg=f"{what}[{index}]")
        if a.size:
            scaled = np.abs(a.astype("float64") - e) / (1.0 + np.abs(e))
            worst = max(worst, float(scaled.max()))
    target(worst, label=f"{what}: max |diff| / (1 + |expected|)")


# -- against the built-ins ----------------------------------------------------


@pytest.mark.parametrize("loop", LOOPS)
@given(data=st.data())
def test_matches_builtin(loop, data):
    case = data.draw(cases(loop), label="case")
    fixed = {"use_peepholes": False} if case.name == "lstm" else {}
    ours = ours_for(case, **fixed)
    builtin = LAYERS[case.name].builtin(**case.cell, **case.layer)
    builtin.build((None, case.time, case.features))
    x, states, projections = draw_values(case, builtin)
    ours.set_weights(builtin.get_weights())
    assert len(ours.trainable_weights) == len(builtin.trainable_weights)
    builtin = keras_loop_reference(builtin, case)
    if case.via_cell:
        ours = keras_loop_reference(ours, case)

    ours_out, ours_grads = outputs_and_gradients(ours, case, x, states, projections)
    out, grads = outputs_and_gradients(builtin, case, x, states, projections)
    assert [o.shape for o in out] == case.output_shapes()
    assert_close(ours_out, out, TOL, "outputs")
    assert_close(ours_grads, grads, TOL, "gradients")


# -- the peephole LSTM against the float64 reference --------------------------


def reference_loss_fn(case, projections):
    """``f(x, *states, *weights)``: the loss of the drawn case, computed by
    the float64 reference; ``weights`` in ``get_weights()`` order."""
    units = case.cell["units"]
    return_sequences = case.layer["return_sequences"]

    def outputs(x, *rest):
        states = list(rest[: case.num_states]) if case.initial_state else None
        weights = list(rest[case.num_states if case.initial_state else 0 :])
        if not case.cell["use_bias"]:
            weights.insert(2, np.zeros(4 * units))
        sequence, h, c = reference.lstm(
            x,
            weights,
            use_peepholes=True,
            mask=case.mask,
            go_backwards=case.layer["go_backwards"],
            initial_state=states,
        )
        first = sequence if return_sequences else sequence[:, -1]
        return [first, h, c] if case.layer["return_state"] else [first]

    def loss(*arrays):
        return sum(np.sum(o * p) for o, p in zip(outputs(*arrays), projections))

    return outputs, loss


def finite_differences(f, arrays, eps=FD_EPS):
    """Central differences of the scalar ``f(*arrays)``, one entry at a time."""
    arrays = [np.array(a, dtype="float64") for a in arrays]
    grads = []
    for a in arrays:
        g = np.empty_like(a)
        for index in np.ndindex(a.shape):
            original = a[index]
            a[index] = original + eps
            up = f(*arrays)
            a[index] = original - eps
            down = f(*arrays)
            a[index] = original
            g[index] = (up - down) / (2 * eps)
        grads.append(g)
    return grads


@pytest.mark.parametrize("loop", LOOPS)
@given(data=st.data())
def test_peephole_matches_reference(loop, data):
    case = data.draw(cases(loop, name="lstm", peepholes=True), label="case")
    ours = ours_for(case, use_peepholes=True)
    x, states, projections = draw_values(case, ours)
    weights = ours.get_weights()
    assert len(weights) == (6 if case.cell["use_bias"] else 5)
    if case.via_cell:
        ours = keras_loop_reference(ours, case)

    ours_out, ours_grads = outputs_and_gradients(ours, case, x, states, projections)
    outputs, loss = reference_loss_fn(case, projections)
    arrays = [x, *states, *weights]
    assert_close(ours_out, outputs(*arrays), TOL, "peephole outputs")
    assert_close(
        ours_grads,
        finite_differences(loss, arrays),
        TOL,
        "peephole gradients vs finite differences",
    )

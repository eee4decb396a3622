"""The JAX loop (``keras_recurrent.loops.jax``: ``lax.scan`` with its own
backward pass) gives Keras's numbers: outputs, states and gradients, with
the weights' gradients summed step by step and over all steps at once,
masks, ``go_backwards``, recurrent dropout and inside ``jax.jit``; and each
layer's loop is jitted once, so that eager calls compile once per shape.
"""

from unittest import mock

import keras
import numpy as np
import pytest
from helpers import (
    ATOL,
    LAYERS,
    PAIRS,
    VARIANTS,
    assert_all_close,
    assert_layers_keep_their_own_numbers,
    assert_matches_builtin,
    builtin_reference,
    layer_pair,
    mask_array,
    new_layer,
    random_inputs,
    random_states,
)

import keras_recurrent as kr

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="the JAX loop runs on JAX only"
)

if keras.backend.backend() == "jax":
    import jax

    from keras_recurrent.loops import jax as jax_loop
    from keras_recurrent.loops import portable, shared

#: STEPWISE_FROM_BATCH for each way backward computes the weights' gradients.
REGIMES = {"over_all_steps": 10**9, "step_by_step": 1}


@pytest.mark.parametrize("regime", list(REGIMES))
@pytest.mark.parametrize("name", list(PAIRS))
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"go_backwards": True},
        {"masked": True},
        {"masked": True, "go_backwards": True},
        {"return_sequences": False},
    ],
    ids=["plain", "backwards", "masked", "masked_backwards", "last_output"],
)
def test_outputs_states_and_gradients_match_builtin(name, options, regime):
    options = {"return_sequences": True, **options}
    masked = options.pop("masked", False)
    ours, builtin = layer_pair(name, return_state=True, **options)
    assert ours.loop_for(mask=masked or None) == jax_loop.NAME
    # Keras's JAX loop gives h_0 at masked steps before the first unmasked
    # one, where its other loops give zeros (see builtin_reference).
    builtin = builtin_reference(builtin, masked=masked, initial_state=True)
    x = random_inputs()
    states = random_states(name)
    kwargs = {"mask": mask_array("padded_leading_and_empty")} if masked else {}
    with mock.patch.object(jax_loop, "STEPWISE_FROM_BATCH", REGIMES[regime]):
        assert_matches_builtin(ours, builtin, x, states, kwargs)


@pytest.mark.parametrize(
    "dtype", ["float32", pytest.param("float64", marks=pytest.mark.float64)]
)
@pytest.mark.parametrize("regime", list(REGIMES))
@pytest.mark.parametrize("name", [*LAYERS, *VARIANTS])
def test_every_configuration_matches_the_portable_loop(name, regime, dtype):
    """Every layer configuration, the variants with no built-in included,
    with a recurrent dropout mask and holes in the sequence mask: the
    outputs, final states and gradients of ``portable.recurrence`` (JAX's
    own gradient of ``lax.scan``) under ``jax.jit``. In float64 they agree
    to rounding; in float32 the tolerance of the variants' gradients, which
    reach 30 here, grows with each one's largest entry."""
    layer = new_layer(name, return_sequences=True, dtype=dtype)
    x = random_inputs(batch=4, time=7, dtype=dtype)
    layer.build(x.shape)
    assert layer.loop_for(mask=True, training=True) == jax_loop.NAME
    rng = np.random.default_rng(5)
    states = [
        rng.normal(size=(4, size)).astype(dtype)
        for size in keras.tree.flatten(layer.cell.state_size)
    ]
    # On h_{t-1}, which has projection_units entries in an LSTMP.
    rec_mask = (rng.uniform(size=states[0].shape) > 0.3).astype(dtype) / 0.7
    mask = rng.uniform(size=(4, 7)) > 0.3
    values = [v.value for v in layer.trainable_variables]

    def run(loop, values, x, states):
        mapping = list(zip(layer.trainable_variables, values))
        with keras.StatelessScope(state_mapping=mapping):
            _, outputs, final = loop.recurrence(layer, x, states, mask, rec_mask)
        return outputs, final

    def loss(loop):
        def fn(values, x, states):
            outputs, final = run(loop, values, x, states)
            return keras.ops.sum(outputs**2) + sum(keras.ops.sum(s) for s in final)

        return jax.jit(jax.grad(fn, argnums=(0, 1, 2)))

    with mock.patch.object(jax_loop, "STEPWISE_FROM_BATCH", REGIMES[regime]):
        ours = [run(jax_loop, values, x, states), loss(jax_loop)(values, x, states)]
    expected = [run(portable, values, x, states), loss(portable)(values, x, states)]
    ours, expected = jax.tree.leaves(ours), jax.tree.leaves(expected)
    if dtype == "float64":
        assert_all_close(ours, expected, atol=1e-12)
    elif name in VARIANTS:
        # Normalising 4 or 16 entries, each side's float32 gradients are off
        # the float64 ones by up to 1e-5 of their largest entry (7e-5 of 12).
        for a, e in zip(ours, expected):
            assert_all_close(a, e, atol=max(ATOL, 1e-5 * float(np.max(np.abs(e)))))
    else:
        assert_all_close(ours, expected)


def test_a_layer_called_eagerly_traces_its_loop_once_per_shape():
    """Outside a compiled function (a notebook's calls), each layer's loop
    is jitted once: later calls of the same shapes trace and compile
    nothing."""
    with (
        mock.patch.object(jax_loop, "_LOOPS", shared.Loops(share_alike=False)),
        mock.patch.object(jax_loop, "_loop", wraps=jax_loop._loop) as traced,
    ):
        layer, other = new_layer("lstm"), new_layer("lstm")
        for _ in range(3):
            layer(random_inputs(time=5))
        assert traced.call_count == 1
        layer(random_inputs(time=6))
        other(random_inputs(time=5))
        assert traced.call_count == 3


def test_each_cell_has_its_own_jitted_loop_and_numbers():
    first, same = kr.LSTM(4), kr.LSTM(4)
    loop = jax_loop._compiled(first.cell, True)
    assert jax_loop._compiled(first.cell, True) is loop
    assert jax_loop._compiled(same.cell, True) is not loop
    assert jax_loop._compiled(first.cell, False) is not loop
    assert_layers_keep_their_own_numbers("lstm")


@pytest.mark.parametrize(
    "name, own",
    [
        ("lstm", True),
        ("lstm_peepholes", True),
        ("lstm_layer_norm", True),
        ("lstm_layer_norm_peepholes", True),
        ("lstm_layer_norm_peepholes_projection_clips", False),
        ("gru", False),
    ],
)
def test_the_lstms_steps_take_their_own_vjp(name, own):
    """A cell that claims the LSTM's equations, with or without layer norm,
    runs ``_lstm_step`` (whose numbers the tests above compare); other cells
    JAX's own VJP."""
    layer = new_layer(name)
    with (
        mock.patch.object(jax_loop, "_LOOPS", shared.Loops(share_alike=False)),
        mock.patch.object(jax_loop, "_lstm_step", wraps=jax_loop._lstm_step) as step,
    ):
        layer(random_inputs(time=3))
    assert step.called == own

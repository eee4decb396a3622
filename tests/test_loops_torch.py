"""PyTorch's fused recurrence (``keras_recurrent.loops.torch``) gives Keras's
numbers where it runs, outputs, states and gradients, and everything it
cannot compute falls back to the portable loop.
"""

from unittest import mock

import keras
import numpy as np
import pytest
from helpers import (
    assert_all_close,
    builtin_reference,
    gradients,
    layer_pair,
    random_inputs,
    random_states,
)

import keras_recurrent as kr

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "torch",
    reason="PyTorch-only path; other backends never import it",
)

if keras.backend.backend() == "torch":
    from keras_recurrent.loops import torch as torch_loop

SERVED = ["simple_rnn", "lstm", "gru"]


def _loss(layer, num_states, **kwargs):
    def fn(x, *rest):
        outputs = layer(x, initial_state=list(rest[:num_states]), **kwargs)
        return sum(keras.ops.sum(o**2) for o in outputs)

    return fn


@pytest.mark.parametrize("name", SERVED)
@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "backwards"])
def test_outputs_states_and_gradients_match_builtin(name, go_backwards):
    ours, builtin = layer_pair(
        name, return_sequences=True, return_state=True, go_backwards=go_backwards
    )
    assert ours.loop_for() == "torch-fused"
    x, states = random_inputs(), random_states(name)
    with mock.patch.object(
        torch_loop, "recurrence", wraps=torch_loop.recurrence
    ) as fused:
        assert_all_close(
            ours(x, initial_state=states), builtin(x, initial_state=states)
        )
        assert_all_close(
            gradients(
                _loss(ours, len(states)), [x, *states, *ours.trainable_variables]
            ),
            gradients(
                _loss(builtin, len(states)),
                [x, *states, *builtin.trainable_variables],
            ),
        )
    assert fused.call_count == 2


@pytest.mark.parametrize("name", SERVED)
def test_float64_matches_the_portable_loop(name):
    """In float64 the fused path equals the portable float64 loop (which the
    finite-difference tests check); Keras's own PyTorch layers compute their
    matmuls in float32 there, so they are no reference."""
    fused, portable = (
        layer_pair(name, return_sequences=True, dtype="float64", unroll=unroll)[0]
        for unroll in (False, True)
    )
    portable.set_weights(fused.get_weights())
    x = random_inputs(dtype="float64")
    with mock.patch.object(
        torch_loop, "recurrence", wraps=torch_loop.recurrence
    ) as spy:
        out = fused(x)
    assert spy.called
    assert keras.backend.standardize_dtype(out.dtype) == "float64"
    assert_all_close(out, portable(x), atol=1e-12)


@pytest.mark.parametrize("name", SERVED)
def test_stateful_batches_match_builtin(name):
    ours, builtin = layer_pair(name, batch=3, return_sequences=True, stateful=True)
    for seed in (0, 1):
        x = random_inputs(seed=seed)
        assert_all_close(ours(x), builtin(x))
        assert_all_close(ours.states, builtin.states)


@pytest.mark.parametrize("name", SERVED)
def test_training_step_matches_builtin(name):
    """``train_on_batch`` with Adam: same losses, same weights afterwards."""
    ours, builtin = layer_pair(name, return_sequences=True)
    x = random_inputs()
    y = np.random.default_rng(3).normal(size=(3, 6, 1)).astype("float32")
    models = [
        keras.Sequential([layer, keras.layers.Dense(1)]) for layer in (ours, builtin)
    ]
    for model in models:
        model.build((3, 6, 5))
    models[0].layers[-1].set_weights(models[1].layers[-1].get_weights())
    losses = []
    for model in models:
        model.compile("adam", "mse")
        losses.append([float(model.train_on_batch(x, y)) for _ in range(3)])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
    assert_all_close(models[0].get_weights(), models[1].get_weights())


def test_input_dropout_is_applied_before_the_fused_call():
    """Same seed, same input mask: the fused path equals the portable loop."""
    x = random_inputs()
    layers = [
        kr.LSTM(4, use_peepholes=False, dropout=0.4, seed=3, unroll=unroll)
        for unroll in (False, True)
    ]
    for layer in layers:
        layer.build(x.shape)
    layers[1].set_weights(layers[0].get_weights())
    assert layers[0].loop_for(training=True) == "torch-fused"
    assert layers[1].loop_for(training=True) == "portable"
    fused, portable = (layer(x, training=True) for layer in layers)
    assert_all_close(fused, portable)
    assert not np.allclose(
        keras.ops.convert_to_numpy(fused), keras.ops.convert_to_numpy(layers[0](x))
    )


@pytest.mark.parametrize(
    "layer",
    [
        lambda: kr.LSTM(4, cell_clip=1.0),
        lambda: kr.GRU(4, reset_after=False),
        lambda: kr.GRU(4, activation="relu"),
        lambda: kr.LSTM(4, use_peepholes=False, recurrent_activation="hard_sigmoid"),
        lambda: kr.SimpleRNN(4, activation="sigmoid"),
        lambda: kr.SimpleRNN(4, dtype="mixed_float16"),
        lambda: kr.GRU(4, unroll=True),
    ],
    ids=[
        "cell_clip",
        "reset_before",
        "gru_relu",
        "hard_sigmoid",
        "rnn_sigmoid",
        "mixed_float16",
        "unroll",
    ],
)
def test_configurations_pytorch_cannot_compute_are_not_served(layer):
    layer = layer()
    layer.build((2, 3, 5))
    assert layer.loop_for() == "portable"
    with mock.patch.object(torch_loop, "recurrence") as fused:
        layer(random_inputs(batch=2, time=3))
    fused.assert_not_called()


# Right padding, the sequences not sorted by length, one of them whole.
RIGHT_PADDED = np.arange(6)[None] < np.array([[4], [6], [1], [3]])


@pytest.mark.parametrize("name", SERVED)
@pytest.mark.parametrize("return_sequences", [True, False], ids=["sequences", "last"])
@pytest.mark.parametrize("return_state", [True, False], ids=["states", "no_states"])
def test_right_padded_masks_run_fused_and_match_builtin(
    name, return_sequences, return_state
):
    """Over the padding, or packed (an LSTM returning its states): the
    built-in's outputs at the masked steps (zeros with return_sequences, else
    the last output), final states and gradients."""
    ours, builtin = layer_pair(
        name, return_sequences=return_sequences, return_state=return_state
    )
    packed = name == "lstm" and return_state
    assert ours.loop_for(mask=RIGHT_PADDED) == "torch-fused"
    x, states = random_inputs(batch=4), random_states(name, batch=4)
    with (
        mock.patch.object(
            torch_loop, "recurrence", wraps=torch_loop.recurrence
        ) as fused,
        mock.patch.object(torch_loop, "_packed", wraps=torch_loop._packed) as run,
    ):
        assert_all_close(
            ours(x, initial_state=states, mask=RIGHT_PADDED),
            builtin(x, initial_state=states, mask=RIGHT_PADDED),
        )
        assert_all_close(
            gradients(
                _loss(ours, len(states), mask=RIGHT_PADDED),
                [x, *states, *ours.trainable_variables],
            ),
            gradients(
                _loss(builtin, len(states), mask=RIGHT_PADDED),
                [x, *states, *builtin.trainable_variables],
            ),
        )
    assert fused.call_count == 2
    assert run.call_count == (2 if packed else 0)


@pytest.mark.parametrize(
    "call",
    [
        {"mask": np.array([[True, False, True]] * 2)},  # a hole
        {"mask": np.array([[True, True, False], [False] * 3])},  # an empty row
        {"mask": True},  # any mask
        {"training": True},  # with recurrent dropout
    ],
    ids=["holes", "empty_sequence", "any_mask", "recurrent_dropout"],
)
def test_masks_and_recurrent_dropout_run_the_portable_loop(call):
    layer = kr.GRU(4, recurrent_dropout=0.5, seed=1)
    assert layer.loop_for() == "torch-fused"
    assert layer.loop_for(**call) == "portable"
    if call.get("mask") is True:
        return  # stands for a mask when asking, not for one to call with
    with mock.patch.object(torch_loop, "recurrence") as fused:
        layer(random_inputs(batch=2, time=3), **call)
    fused.assert_not_called()


# -- LSTMSequence: the LSTMs PyTorch's kernels do not run ---------------------


@pytest.mark.parametrize("peepholes", [True, False], ids=["peepholes", "plain"])
@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("dropout", [False, True], ids=["", "recurrent_dropout"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_lstm_sequence_gradients_match_finite_differences(
    peepholes, masked, dropout, bias
):
    """Every input's gradient, in float64, against central differences."""
    import torch

    steps, batch, features, units = 5, 3, 4, 3
    generator = torch.Generator().manual_seed(0)

    def draw(*shape, scale=1.0):
        values = torch.randn(*shape, generator=generator, dtype=torch.float64)
        return (scale * values).requires_grad_()

    args = [
        draw(steps, batch, features),
        draw(batch, units),
        draw(batch, units),
        draw(features, 4 * units),
        draw(4 * units) if bias else None,
        draw(units, 4 * units, scale=0.5),
        draw(3, units) if peepholes else None,
        # Holes, a masked first step and a masked last step.
        torch.rand(steps, batch, 1, generator=generator) > 0.4 if masked else None,
        2.0 * (torch.rand(batch, units, generator=generator) > 0.5)
        if dropout
        else None,
    ]
    if dropout:
        args[-1] = args[-1].to(torch.float64)
    assert torch.autograd.gradcheck(torch_loop.LSTMSequence.apply, args)


# Holes, a sequence that starts late and one that ends early.
HOLES = np.array([[1, 0, 1, 1, 0, 1], [0, 0, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], bool)


def _spy_sequence():
    return mock.patch.object(
        torch_loop.LSTMSequence, "apply", wraps=torch_loop.LSTMSequence.apply
    )


@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "backwards"])
@pytest.mark.parametrize(
    "call",
    [{"mask": HOLES}, {"training": True}, {"mask": HOLES, "training": True}],
    ids=["holes", "recurrent_dropout", "both"],
)
def test_lstm_calls_torch_lstm_cannot_run_match_builtin(go_backwards, call):
    """A plain LSTM with a mask PyTorch's kernel cannot take, or with
    recurrent dropout (the same mask on both sides), runs LSTMSequence and
    gives keras.layers.LSTM's outputs, states and gradients."""
    ours, builtin = layer_pair(
        "lstm",
        return_sequences=True,
        return_state=True,
        go_backwards=go_backwards,
        recurrent_dropout=0.5,
    )
    builtin = builtin_reference(builtin, masked="mask" in call, initial_state=True)
    x, states = random_inputs(), random_states("lstm")
    dropout_mask = keras.ops.convert_to_tensor(
        np.random.default_rng(3).choice([0.0, 2.0], size=(3, 4)).astype("float32")
    )
    # The built-in's cell reads one mask per gate (its implementation 1).
    patches = [
        mock.patch.object(layer.cell, "get_recurrent_dropout_mask", return_value=mask)
        for layer, mask in ((ours, dropout_mask), (builtin, [dropout_mask] * 4))
    ]
    with patches[0], patches[1], _spy_sequence() as sequence:
        assert_all_close(
            ours(x, initial_state=states, **call),
            builtin(x, initial_state=states, **call),
        )
        assert_all_close(
            gradients(_loss(ours, 2, **call), [x, *states, *ours.trainable_variables]),
            gradients(
                _loss(builtin, 2, **call), [x, *states, *builtin.trainable_variables]
            ),
        )
    assert sequence.call_count == 2


@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "backwards"])
@pytest.mark.parametrize(
    "call",
    [{}, {"mask": HOLES}, {"training": True}],
    ids=["unmasked", "holes", "recurrent_dropout"],
)
def test_peephole_lstm_runs_lstm_sequence_and_matches_the_portable_loop(
    go_backwards, call
):
    """In float64, outputs, states and every gradient equal the portable
    loop's (which the finite-difference and NumPy reference tests check)."""
    kwargs = dict(
        return_sequences=True,
        return_state=True,
        go_backwards=go_backwards,
        recurrent_dropout=0.5,
        dtype="float64",
    )
    ours, portable = kr.LSTM(4, **kwargs), kr.LSTM(4, unroll=True, **kwargs)
    for layer in (ours, portable):
        layer.build((None, None, 5))
    rng = np.random.default_rng(5)
    portable.set_weights(
        [w + rng.normal(scale=0.3, size=w.shape) for w in portable.get_weights()]
    )
    ours.set_weights(portable.get_weights())
    assert ours.loop_for(mask=True, training=True) == "torch-fused"
    assert portable.loop_for() == "portable"
    x = random_inputs(dtype="float64")
    states = [keras.ops.cast(s, "float64") for s in random_states("lstm")]
    dropout_mask = keras.ops.convert_to_tensor(rng.choice([0.0, 2.0], size=(3, 4)))
    patches = [
        mock.patch.object(
            layer.cell, "get_recurrent_dropout_mask", return_value=dropout_mask
        )
        for layer in (ours, portable)
    ]
    with patches[0], patches[1], _spy_sequence() as sequence:
        assert_all_close(
            ours(x, initial_state=states, **call),
            portable(x, initial_state=states, **call),
            atol=1e-12,
        )
        assert_all_close(
            gradients(_loss(ours, 2, **call), [x, *states, *ours.trainable_variables]),
            gradients(
                _loss(portable, 2, **call),
                [x, *states, *portable.trainable_variables],
            ),
            atol=1e-12,
        )
    assert sequence.call_count == 2

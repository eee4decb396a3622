"""Every Keras backend: files move between backends, and each backend's own
ways of running a layer work.

- A ``.keras`` file saved on this backend loads on each of the other two, in
  a fresh process, with the same weights and the same predictions.
- JAX: ``jax.jit`` over ``stateless_call`` (what ``model.fit`` does on JAX),
  for inference, gradients, stateful layers and dropout.
- PyTorch: ``torch.no_grad`` inference, ``loss.backward()``, and a
  ``torch.optim`` step over ``layer.parameters()``.

The backend-specific tests compare ours with the built-in of the same
backend, configured alike with the same weights.
"""

import importlib.util
import textwrap

import keras
import numpy as np
import pytest
import reference
from helpers import (
    PAIRS,
    assert_all_close,
    gradients,
    layer_pair,
    random_inputs,
    random_states,
    run_fresh,
)

import keras_recurrent as kr

BACKEND = keras.backend.backend()
ALL_BACKENDS = ("tensorflow", "jax", "torch")
NAMES = list(PAIRS)
TIME, FEATURES = 6, 5

# -- .keras files across backends --------------------------------------------


def _every_layer_model():
    """Every layer and cell, peepholes on and off, behind a Masking layer."""
    inputs = keras.Input((TIME, FEATURES))
    masked = keras.layers.Masking(0.0)(inputs)
    x = keras.layers.Bidirectional(kr.LSTM(4, return_sequences=True))(masked)
    x = kr.GRU(3, return_sequences=True, reset_after=False)(x)
    x = keras.layers.RNN(
        [kr.LSTMCell(3, use_peepholes=False), kr.GRUCell(3), kr.SimpleRNNCell(2)],
        return_sequences=True,
    )(x)
    sequence, h = kr.SimpleRNN(2, return_state=True)(x)
    last = kr.GRU(2)(masked)
    return keras.Model(inputs, [keras.layers.Dense(1)(sequence), h, last])


def _padded_inputs():
    x = random_inputs(batch=4, time=TIME, features=FEATURES)
    x[1, 4:] = 0.0  # right-padded, masked by Masking
    x[2, :2] = 0.0  # leading masked steps
    return x


LOAD_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import keras
    import numpy as np

    import keras_recurrent  # noqa: F401  (registers the classes)

    folder = Path(sys.argv[1])
    backend = keras.backend.backend()
    model = keras.models.load_model(folder / "model.keras")
    predictions = model.predict(np.load(folder / "x.npy"), verbose=0)
    ys = [keras.ops.convert_to_numpy(y) for y in keras.tree.flatten(predictions)]
    np.savez(folder / f"{backend}.outputs.npz", *ys)
    np.savez(folder / f"{backend}.weights.npz", *model.get_weights())
    """
)


@pytest.mark.parametrize("target", [b for b in ALL_BACKENDS if b != BACKEND])
def test_keras_file_loads_on_another_backend(tmp_path, target):
    if importlib.util.find_spec(target) is None:
        pytest.skip(f"{target} is not installed: pip install '.[{target}]'")
    model = _every_layer_model()
    rng = np.random.default_rng(4)
    model.set_weights(
        [
            w + rng.normal(scale=0.2, size=w.shape).astype(w.dtype)
            for w in model.get_weights()
        ]
    )
    x = _padded_inputs()
    expected = [
        keras.ops.convert_to_numpy(y)
        for y in keras.tree.flatten(model.predict(x, verbose=0))
    ]
    model.save(tmp_path / "model.keras")
    np.save(tmp_path / "x.npy", x)

    run_fresh(
        ["-c", LOAD_SCRIPT, str(tmp_path)], env={"KERAS_BACKEND": target}, cwd=tmp_path
    )
    with np.load(tmp_path / f"{target}.weights.npz") as saved:
        weights = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    with np.load(tmp_path / f"{target}.outputs.npz") as saved:
        outputs = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    assert len(weights) == len(model.get_weights())
    for loaded, original in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(loaded, original)
    # Same weights, another backend's kernels: equal to float32 rounding.
    assert_all_close(outputs, expected)


# -- peephole gradients, every backend ----------------------------------------


def test_peephole_lstm_gradients_match_finite_differences_of_the_reference():
    """Gradients of the peephole LSTM (which has no built-in to compare with)
    with respect to inputs, initial states and every weight, by the backend's
    autodiff in float32, against central differences of the float64 NumPy
    reference (``tests/reference.py``), which involve no Keras at all."""
    rng = np.random.default_rng(6)
    layer = kr.LSTM(4, return_sequences=True)
    layer.build((None, TIME, FEATURES))
    layer.set_weights(
        [rng.normal(scale=0.5, size=w.shape) for w in layer.get_weights()]
    )
    x = random_inputs()
    states = random_states("lstm")
    projection = rng.normal(size=(TIME, 4))

    def loss(x, h, c, *weights):
        outputs = layer(x, initial_state=[h, c])
        return keras.ops.sum(keras.ops.multiply(outputs, projection.astype("float32")))

    values = [x, *states, *layer.trainable_weights]
    autodiff = gradients(loss, values)

    def reference_loss(arrays):
        x, h, c, *weights = arrays
        outputs, _, _ = reference.lstm(x, weights, initial_state=[h, c])
        return float(np.sum(outputs * projection))

    arrays = [keras.ops.convert_to_numpy(v).astype("float64") for v in values]
    eps = 1e-6
    for index, (array, grad) in enumerate(zip(arrays, autodiff)):
        numeric = np.zeros_like(array)
        for position in np.ndindex(array.shape):
            shifted = []
            for sign in (1, -1):
                copy = [a.copy() for a in arrays]
                copy[index][position] += sign * eps
                shifted.append(reference_loss(copy))
            numeric[position] = (shifted[0] - shifted[1]) / (2 * eps)
        assert np.abs(numeric).max() > 1e-3  # not a vacuous check
        # float32 autodiff against float64 differences.
        np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-5)


# -- stateful training, every backend ------------------------------------------

STATEFUL = {"simple_rnn": (kr.SimpleRNN, 1), "lstm": (kr.LSTM, 2), "gru": (kr.GRU, 1)}


@pytest.mark.parametrize("name", list(STATEFUL))
def test_stateful_training_is_truncated_backprop_through_time(name):
    """``fit`` on a stateful model over two chunks of a sequence equals, step
    for step, training a stateless twin that is handed the states the first
    chunk ended with as its initial state. This needs the states carried
    through the backend's training step (JAX runs it as a stateless call) and
    a backward pass untouched by the in-place state update (PyTorch)."""
    layer_cls, num_states = STATEFUL[name]
    batch, units = 3, 4
    stateful = keras.Sequential(
        [
            keras.Input((TIME, FEATURES), batch_size=batch),
            layer_cls(units, stateful=True),
            keras.layers.Dense(1),
        ]
    )
    inputs = keras.Input((TIME, FEATURES))
    given = [keras.Input((units,)) for _ in range(num_states)]
    sequence, *final = layer_cls(units, return_state=True)(inputs, initial_state=given)
    twin = keras.Model([inputs, *given], keras.layers.Dense(1)(sequence))
    twin_states = keras.Model([inputs, *given], final)
    twin.set_weights(stateful.get_weights())
    for model in (stateful, twin):
        model.compile(keras.optimizers.SGD(0.2), "mse")

    rng = np.random.default_rng(8)
    chunks = [random_inputs(seed=seed) for seed in (1, 2)]
    targets = [rng.normal(size=(batch, 1)).astype("float32") for _ in chunks]
    states = [np.zeros((batch, units), "float32")] * num_states
    for x, y in zip(chunks, targets):
        stateful.train_on_batch(x, y)
        next_states = twin_states.predict_on_batch([x, *states])
        twin.train_on_batch([x, *states], y)
        states = keras.tree.flatten(next_states)
        assert_all_close(stateful.layers[0].states, states)
        assert_all_close(stateful.get_weights(), twin.get_weights())
    assert not np.allclose(states[0], 0.0)


# -- JAX ------------------------------------------------------------------------

jax_only = pytest.mark.skipif(
    BACKEND != "jax", reason="JAX's own transformations (jax.jit, stateless_call)"
)


def _stateless_values(layer):
    return (
        [v.value for v in layer.trainable_variables],
        [v.value for v in layer.non_trainable_variables],
    )


@jax_only
@pytest.mark.parametrize("name", NAMES)
def test_jit_stateless_call_and_gradients_match_builtin(name):
    import jax

    x = random_inputs()
    states = random_states(name)
    mask = np.ones((3, 6), bool)
    mask[1, 4:] = False

    def outputs_and_grads(layer):
        trainable, non_trainable = _stateless_values(layer)

        def loss(trainable, x):
            outputs, _ = layer.stateless_call(
                trainable, non_trainable, x, initial_state=states, mask=mask
            )
            total = sum(jax.numpy.sum(o**2) for o in outputs)
            return total, outputs

        (_, outputs), grads = jax.jit(
            jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)
        )(trainable, x)
        return [*outputs, *grads[0], grads[1]]

    ours, builtin = layer_pair(name, return_sequences=True, return_state=True)
    got = outputs_and_grads(ours)
    assert_all_close(got, outputs_and_grads(builtin))
    # And under jit equals ours called eagerly.
    assert_all_close(
        got[: len(states) + 1], list(ours(x, initial_state=states, mask=mask))
    )


@jax_only
@pytest.mark.parametrize("name", NAMES)
def test_stateful_layer_under_stateless_call(name):
    """A stateful layer's states are non-trainable variables: stateless_call
    hands the new ones back and leaves the layer's own alone; fed back in,
    they continue the stream as the built-in's eager stateful calls do."""
    import jax

    ours, builtin = layer_pair(name, batch=3, stateful=True, return_sequences=True)
    trainable, non_trainable = _stateless_values(ours)
    positions = [
        i
        for i, v in enumerate(ours.non_trainable_variables)
        if any(v is s for s in ours.states)
    ]
    assert len(positions) == len(ours.states)
    call = jax.jit(ours.stateless_call)
    for seed in range(2):
        x = random_inputs(seed=seed)
        out, non_trainable = call(trainable, non_trainable, x)
        for state in ours.states:  # untouched
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(state), 0.0)
        assert_all_close(out, builtin(x))
        assert_all_close([non_trainable[i] for i in positions], builtin.states)


@jax_only
def test_stateful_model_streams_through_predict_on_batch():
    """predict_on_batch runs jitted stateless calls on JAX; the states must
    still carry over from one batch to the next (Keras 3.15's own stateful
    RNN layers lose them there; eager calls are the reference)."""
    ours, builtin = layer_pair("lstm", batch=3, stateful=True, return_sequences=True)
    model = keras.Sequential([keras.Input((TIME, FEATURES), batch_size=3), ours])
    for seed in range(3):
        x = random_inputs(seed=seed)
        assert_all_close(model.predict_on_batch(x), builtin(x))
    ours.reset_state()
    builtin.reset_state()
    x = random_inputs(seed=9)
    assert_all_close(model.predict_on_batch(x), builtin(x))


@jax_only
def test_dropout_under_jit_follows_the_seed_state():
    """In training, dropout draws from the seed generator's state, a
    non-trainable value: the same state gives the same masks, the state
    stateless_call hands back gives new ones."""
    import jax

    layer = kr.LSTM(4, dropout=0.3, recurrent_dropout=0.3, seed=3)
    x = random_inputs()
    layer.build(x.shape)
    trainable, non_trainable = _stateless_values(layer)
    call = jax.jit(lambda t, n, x: layer.stateless_call(t, n, x, training=True))
    first, advanced = call(trainable, non_trainable, x)
    again, _ = call(trainable, non_trainable, x)
    second, _ = call(trainable, advanced, x)
    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))
    assert not np.allclose(np.asarray(first), np.asarray(second))
    inference, _ = jax.jit(layer.stateless_call)(trainable, non_trainable, x)
    assert_all_close(inference, layer(x))
    assert not np.allclose(np.asarray(first), np.asarray(inference))


# -- PyTorch ----------------------------------------------------------------------

torch_only = pytest.mark.skipif(
    BACKEND != "torch", reason="PyTorch's own autograd, no_grad and optimizers"
)


@torch_only
@pytest.mark.parametrize("name", NAMES)
def test_no_grad_inference_matches_builtin(name):
    import torch

    ours, builtin = layer_pair(name, return_sequences=True, return_state=True)
    x = random_inputs()
    with_grad = ours(x)
    with torch.no_grad():
        out = ours(x)
        expected = builtin(x)
    assert all(not o.requires_grad and o.grad_fn is None for o in out)
    assert any(o.requires_grad for o in with_grad)
    assert_all_close(list(out), list(expected))
    assert_all_close(list(out), list(with_grad))


@torch_only
@pytest.mark.parametrize("name", NAMES)
def test_backward_fills_the_same_grads_as_builtin(name):
    import torch

    ours, builtin = layer_pair(name, return_sequences=True, return_state=True)
    grads = []
    for layer in (ours, builtin):
        x = torch.tensor(random_inputs(), requires_grad=True)
        loss = sum((o**2).sum() for o in layer(x))
        loss.backward()
        grads.append([x.grad] + [v.value.grad for v in layer.trainable_variables])
    assert all(g is not None for g in grads[0])
    assert_all_close(grads[0], grads[1])


@torch_only
@pytest.mark.parametrize("name", NAMES)
def test_torch_optimizer_trains_the_layer(name):
    """A Keras layer is a torch.nn.Module: its weights are its parameters,
    and a torch.optim step moves ours exactly as it moves the built-in."""
    import torch

    ours, builtin = layer_pair(name, return_sequences=True)
    for layer in (ours, builtin):
        parameters = list(layer.parameters())  # with the seed state, not trained
        assert sum(p.requires_grad for p in parameters) == len(layer.trainable_weights)
        optimizer = torch.optim.SGD(parameters, lr=0.5)
        for seed in range(2):
            optimizer.zero_grad()
            loss = (layer(random_inputs(seed=seed)) ** 2).mean()
            loss.backward()
            optimizer.step()
    before = layer_pair(name)[1].get_weights()
    assert not any(np.allclose(a, b) for a, b in zip(builtin.get_weights(), before))
    assert_all_close(ours.get_weights(), builtin.get_weights())

"""What the tests share: the table of layer configurations, masks, building
a layer next to its Keras built-in, gradients, and fresh processes."""

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import keras
import numpy as np
import reference

import keras_recurrent as kr


class Config(NamedTuple):
    """One layer configuration of ours, and the Keras built-in it equals."""

    layer: type  # our sequence layer
    cell: type  # our cell
    builtin: type | None  # the keras.layers layer it equals, or None
    builtin_cell: type | None
    kwargs: dict  # constructor arguments of ours (and of the built-in)
    num_states: int


# Every layer configuration, peepholes included. The order matters: some
# tests seed their random numbers with a name's index.
LAYERS = {
    "simple_rnn": Config(
        kr.SimpleRNN,
        kr.SimpleRNNCell,
        keras.layers.SimpleRNN,
        keras.layers.SimpleRNNCell,
        {},
        1,
    ),
    "lstm": Config(
        kr.LSTM,
        kr.LSTMCell,
        keras.layers.LSTM,
        keras.layers.LSTMCell,
        {"use_peepholes": False},
        2,
    ),
    "lstm_peepholes": Config(
        kr.LSTM, kr.LSTMCell, None, None, {"use_peepholes": True}, 2
    ),
    "gru": Config(
        kr.GRU,
        kr.GRUCell,
        keras.layers.GRU,
        keras.layers.GRUCell,
        {"reset_after": True},
        1,
    ),
    "gru_reset_before": Config(
        kr.GRU,
        kr.GRUCell,
        keras.layers.GRU,
        keras.layers.GRUCell,
        {"reset_after": False},
        1,
    ),
}
# The configurations that have a Keras built-in.
PAIRS = {name: c for name, c in LAYERS.items() if c.builtin is not None}
# One configuration per layer class, by the class's name.
KINDS = ("simple_rnn", "lstm", "gru")
LAYER_CLASSES = {name: LAYERS[name].layer for name in KINDS}
CELL_CLASSES = {f"{name}_cell": LAYERS[name].cell for name in KINDS}


class Variant(NamedTuple):
    """A layer configuration with options no Keras built-in has (layer norm,
    projection, cell clipping), and its float64 NumPy reference."""

    layer: type  # our sequence layer
    cell: type  # our cell
    kwargs: dict  # constructor arguments
    num_states: int
    # step(x_t, states, weights, **kwargs) -> new_states, from tests/reference.py,
    # with ``weights`` in get_weights() order and ``kwargs`` the variant's own
    # (tests/test_variants.py calls it so).
    reference_step: Callable


# Every variant configuration, by name; tests/test_variants.py runs each
# through masks, go_backwards, initial and streamed states, dropout,
# Bidirectional, keras.layers.RNN and saving, against its reference.
VARIANTS = {
    "simple_rnn_layer_norm": Variant(
        kr.SimpleRNN,
        kr.SimpleRNNCell,
        {"use_layer_norm": True},
        1,
        reference.simple_rnn_step,
    ),
    "gru_layer_norm": Variant(
        kr.GRU,
        kr.GRUCell,
        {"reset_after": True, "use_layer_norm": True},
        1,
        reference.gru_step,
    ),
    # An epsilon of its own: a layer that ignored it would differ.
    "gru_reset_before_layer_norm": Variant(
        kr.GRU,
        kr.GRUCell,
        {"reset_after": False, "use_layer_norm": True, "layer_norm_epsilon": 0.05},
        1,
        reference.gru_step,
    ),
    # The LSTM's options, each alone and all together (not every combination:
    # tests/test_lstm_variants.py checks peepholes x clip x projection
    # against TF1's cell). Small clips, so that they bind.
    "lstm_peepholes_cell_clip": Variant(
        kr.LSTM,
        kr.LSTMCell,
        {"use_peepholes": True, "cell_clip": 0.3},
        2,
        reference.lstm_step,
    ),
    "lstm_projection_clip": Variant(
        kr.LSTM,
        kr.LSTMCell,
        {"use_peepholes": False, "projection_units": 2, "projection_clip": 0.3},
        2,
        reference.lstm_step,
    ),
    "lstm_layer_norm": Variant(
        kr.LSTM,
        kr.LSTMCell,
        {"use_peepholes": False, "use_layer_norm": True},
        2,
        reference.lstm_step,
    ),
    # An epsilon of its own, as for the GRU above.
    "lstm_layer_norm_peepholes": Variant(
        kr.LSTM,
        kr.LSTMCell,
        {"use_peepholes": True, "use_layer_norm": True, "layer_norm_epsilon": 0.05},
        2,
        reference.lstm_step,
    ),
    "lstm_layer_norm_peepholes_projection_clips": Variant(
        kr.LSTM,
        kr.LSTMCell,
        {
            "use_peepholes": True,
            "use_layer_norm": True,
            "layer_norm_epsilon": 0.01,
            "cell_clip": 0.5,
            "projection_units": 2,
            "projection_clip": 0.4,
        },
        2,
        reference.lstm_step,
    ),
}

PEEPHOLES = (
    "input_gate_peephole_weights",
    "forget_gate_peephole_weights",
    "output_gate_peephole_weights",
)

# (batch, time) masks for batch 3 and 6 steps, 1 = valid step.
MASKS = {
    "right_padded": [
        [1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 0, 0],
        [1, 1, 0, 0, 0, 0],
    ],
    "holes": [
        [1, 0, 1, 1, 0, 1],
        [1, 1, 0, 0, 1, 1],
        [0, 1, 0, 1, 1, 0],
    ],
    "arbitrary": [
        [0, 1, 1, 0, 1, 0],
        [1, 0, 0, 1, 1, 1],
        [0, 0, 1, 0, 0, 1],
    ],
    "fully_masked_row": [
        [1, 1, 1, 1, 1, 1],
        [0, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 1, 1],
    ],
    "fully_masked_row_and_holes": [
        [1, 0, 1, 1, 0, 1],
        [0, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 1],
    ],
    "leading_masked": [
        [0, 0, 1, 1, 1, 1],
        [0, 0, 0, 0, 0, 1],
        [1, 1, 1, 1, 1, 1],
    ],
    "padded_leading_and_empty": [
        [1, 1, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 1],
        [0, 0, 0, 0, 0, 0],
    ],
}


def mask_array(kind):
    """``MASKS[kind]`` as a boolean array; None for ``kind=None``."""
    return None if kind is None else np.array(MASKS[kind], dtype=bool)


def num_states(obj):
    """The number of states of a configuration name, or of one of our layer
    or cell classes or instances."""
    if isinstance(obj, str):
        return LAYERS[obj].num_states
    cls = obj if isinstance(obj, type) else type(obj)
    return next(c.num_states for c in LAYERS.values() if cls in (c.layer, c.cell))


ATOL = 1e-5


def builtin_kwargs(kwargs):
    """The arguments a Keras built-in accepts: ours minus the peephole ones."""
    return {k: v for k, v in kwargs.items() if not k.startswith(("use_peep", "peep"))}


def new_layer(name, units=4, **kwargs):
    """Our layer of configuration ``name`` (of ``LAYERS`` or ``VARIANTS``),
    not built."""
    config = LAYERS[name] if name in LAYERS else VARIANTS[name]
    return config.layer(units, **{**config.kwargs, **kwargs})


def random_inputs(batch=3, time=6, features=5, seed=0, dtype="float32"):
    return (
        np.random.default_rng(seed).normal(size=(batch, time, features)).astype(dtype)
    )


def random_states(name, batch=3, units=4, seed=1):
    rng = np.random.default_rng(seed)
    return [
        rng.normal(size=(batch, units)).astype("float32")
        for _ in range(num_states(name))
    ]


def layer_pair(name, units=4, features=5, batch=None, **kwargs):
    """Ours and the built-in, configured alike, built, with the same weights.

    The built-in's weights (random, with a random nonzero bias) are copied
    into ours, so every comparison runs on weights that neither side chose.
    """
    config = PAIRS[name]
    kwargs = {**config.kwargs, **kwargs}
    builtin = config.builtin(units, **builtin_kwargs(kwargs))
    ours = config.layer(units, **kwargs)
    shape = (batch, None, features)  # stateful layers need a fixed batch
    builtin.build(shape)
    ours.build(shape)
    rng = np.random.default_rng(7)
    weights = [
        w + rng.normal(scale=0.1, size=w.shape).astype(w.dtype)
        for w in builtin.get_weights()
    ]
    builtin.set_weights(weights)
    ours.set_weights(weights)
    return ours, builtin


def builtin_reference(builtin, masked=False, initial_state=False):
    """The built-in to compare against for a call with these arguments.

    Usually ``builtin`` itself. Two bugs in Keras's own backend loops
    (Keras 3.15) make it the same built-in with the other loop instead:

    - JAX, ``unroll=False`` (``keras/src/backend/jax/rnn.py``): with a mask
      and an initial state, the outputs at masked steps before the first
      unmasked one are the initial state ``h_0``, where TensorFlow's loop,
      PyTorch's and JAX's own unrolled loop give zeros. Ours gives zeros, so
      it is compared with the built-in's unrolled loop there.
    - PyTorch, ``unroll=True`` with ``go_backwards=True`` and a mask
      (``keras/src/backend/torch/rnn.py``): the built-in raises
      (``torch.flip`` on a tuple). Ours is compared with the built-in's
      rolled loop there, which goes backwards over the same masked steps.
    """
    backend = keras.backend.backend()
    unroll = builtin.unroll
    if backend == "jax" and masked and initial_state and not unroll:
        unroll = True
    elif backend == "torch" and masked and unroll and builtin.go_backwards:
        unroll = False
    if unroll == builtin.unroll:
        return builtin
    twin = type(builtin).from_config({**builtin.get_config(), "unroll": unroll})
    twin.build((None, None, builtin.cell.kernel.shape[0]))
    twin.set_weights(builtin.get_weights())
    return twin


def assert_all_close(actual, expected, atol=ATOL, rtol=0.0):
    actual = actual if isinstance(actual, (list, tuple)) else [actual]
    expected = expected if isinstance(expected, (list, tuple)) else [expected]
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(a),
            keras.ops.convert_to_numpy(e),
            atol=atol,
            rtol=rtol,
        )


def assert_matches_builtin(ours, builtin, x, states, kwargs):
    """Outputs, and the gradients of the inputs, initial states and every
    weight of the sum of squares of all outputs, are the built-in's."""

    def loss(layer):
        def fn(x, *rest):
            initial = list(rest[: len(states)])
            outputs = layer(x, initial_state=initial, **kwargs)
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
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


def assert_layers_keep_their_own_numbers(name):
    """Two layers of configuration ``name``, given different weights, each
    compute the built-in's numbers with their own weights (a compiled loop
    cached across layers takes the weights as inputs, never as constants)."""
    x = random_inputs()
    outputs = []
    for seed in (1, 2):
        ours, builtin = layer_pair(name)
        rng = np.random.default_rng(seed)
        weights = [w + rng.normal(size=w.shape) for w in builtin.get_weights()]
        builtin.set_weights(weights)
        ours.set_weights(weights)
        assert_all_close(ours(x), builtin(x))
        outputs.append(keras.ops.convert_to_numpy(ours(x)))
    assert not np.allclose(*outputs)


def gradients(loss_fn, tensors):
    """Gradients of the scalar ``loss_fn(*tensors)`` with respect to ``tensors``.

    ``tensors`` may hold arrays (inputs, states) and Keras variables (weights),
    as the backend's own autodiff sees them: ``tf.GradientTape`` on
    TensorFlow, ``jax.grad`` on JAX (the variables' values passed in through a
    ``keras.StatelessScope``) and ``torch.autograd.grad`` on PyTorch.
    """
    backend = keras.backend.backend()
    is_variable = [isinstance(t, keras.Variable) for t in tensors]
    if backend == "tensorflow":
        import tensorflow as tf

        values = [t if var else tf.constant(t) for t, var in zip(tensors, is_variable)]
        targets = [v.value if var else v for v, var in zip(values, is_variable)]
        with tf.GradientTape() as tape:
            tape.watch(targets)
            loss = loss_fn(*values)
        return [g.numpy() for g in tape.gradient(loss, targets)]
    if backend == "jax":
        import jax

        def loss_of_values(values):
            # Variables read the traced values through the scope; arrays are
            # passed in as they are.
            triples = list(zip(tensors, values, is_variable))
            args = [t if var else v for t, v, var in triples]
            mapping = [(t, v) for t, v, var in triples if var]
            with keras.StatelessScope(state_mapping=mapping):
                return loss_fn(*args)

        start = [t.value if var else _numpy(t) for t, var in zip(tensors, is_variable)]
        return [np.asarray(g) for g in jax.grad(loss_of_values)(start)]
    if backend == "torch":
        import torch

        values = [
            t if var else torch.tensor(_numpy(t), requires_grad=True)
            for t, var in zip(tensors, is_variable)
        ]
        targets = [v.value if var else v for v, var in zip(values, is_variable)]
        loss = loss_fn(*values)
        return [g.detach().cpu().numpy() for g in torch.autograd.grad(loss, targets)]
    raise NotImplementedError(f"No gradient helper for backend {backend!r}")


def _numpy(value):
    return keras.ops.convert_to_numpy(value)


def run_fresh(args, env=None, cwd=None, timeout=300):
    """Runs ``python *args`` in a fresh process that imports the
    ``keras_recurrent`` under test (not another installed copy), on this
    backend unless ``env`` sets ``KERAS_BACKEND``; fails with its stderr
    unless it succeeds. Returns the ``subprocess.CompletedProcess``.
    """
    package_root = str(Path(kr.__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH")
    full_env = {
        **os.environ,
        "KERAS_BACKEND": keras.backend.backend(),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": package_root + (os.pathsep + path if path else ""),
        **(env or {}),
    }
    result = subprocess.run(
        [sys.executable, *args],
        env=full_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result

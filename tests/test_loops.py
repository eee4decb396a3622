"""The loops package: one protocol for every time loop, a dispatcher that
asks the backend's fast paths in turn, and cells that say which fused kernel
computes their equations.

- Every fast path takes the same inputs as the portable loop.
- A cell subclass that changes its equations runs them, through its
  sequence layer, on every backend: its outputs, states and gradients equal
  a hand-written loop over the subclass's own ``call``, no fused kernel
  serves it, and ``loop_for`` says which loop runs instead.
- The package's modules import each other without a cycle, and no loop
  imports a concrete cell.
"""

import ast
import inspect
from pathlib import Path
from unittest import mock

import keras
import numpy as np
import pytest
from helpers import (
    LAYERS,
    assert_all_close,
    gradients,
    random_inputs,
    random_states,
    run_fresh,
)

import keras_recurrent as kr
from keras_recurrent import _cell, loops
from keras_recurrent.loops import portable

BACKEND = keras.backend.backend()
PACKAGE = Path(kr.__file__).resolve().parent
NAMES = list(LAYERS)
# The loop each backend runs for a cell whose step pieces it compiles, but
# whose equations no fused kernel computes.
OWN_STEP_LOOP = {"tensorflow": "xla", "jax": "jax-vjp"}.get(BACKEND, "portable")


# -- the protocol ---------------------------------------------------------------


def test_every_loop_of_this_backend_implements_the_protocol():
    paths = [*loops._fast_paths(), portable]
    assert paths[-1] is portable
    names = [path.NAME for path in paths]
    assert len(set(names)) == len(names)
    expected = inspect.signature(portable.recurrence).parameters
    for path in paths:
        assert list(inspect.signature(path.recurrence).parameters) == list(expected)
        if path is not portable:
            assert list(inspect.signature(path.serves).parameters) == [
                "layer",
                "mask",
                "recurrent_dropout_mask",
            ]


def test_only_this_backends_fast_path_is_imported():
    """In a fresh process: the loops of this backend, and on JAX and PyTorch
    no TensorFlow."""
    script = (
        "import sys, numpy as np, keras_recurrent as kr\n"
        "kr.LSTM(2)(np.zeros((1, 2, 3), 'float32'))\n"
        "print([m for m in sorted(sys.modules) if m.startswith("
        "('keras_recurrent.loops', 'tensorflow'))])"
    )
    result = run_fresh(["-c", script])
    loaded = ast.literal_eval(result.stdout.strip().splitlines()[-1])
    expected = ["keras_recurrent.loops", "keras_recurrent.loops.portable"]
    expected.append(f"keras_recurrent.loops.{BACKEND}")
    if BACKEND in ("tensorflow", "jax"):  # their compiled loops' cache
        expected.append("keras_recurrent.loops.shared")
    expected.sort()
    if BACKEND == "tensorflow":  # registered by the XLA loop
        expected.append("keras_recurrent.loops.tf2onnx_handlers")
    assert [m for m in loaded if m.startswith("keras_recurrent")] == expected
    if BACKEND != "tensorflow":
        assert "tensorflow" not in loaded


@pytest.mark.parametrize("name", NAMES)
def test_loop_for_names_the_loop_that_runs(name):
    config = LAYERS[name]
    layer = config.layer(4, recurrent_dropout=0.5, seed=1, **config.kwargs)
    x = random_inputs()
    chosen = []

    def record(*args):
        chosen.append(choose(*args).NAME)
        return choose(*args)

    choose = loops._loop
    for call in ({}, {"mask": np.ones((3, 6), bool)}, {"training": True}):
        expected = layer.loop_for(**call)
        with mock.patch.object(loops, "_loop", side_effect=record):
            layer(x, **call)
        assert chosen.pop() == expected, call
    plain = {"tensorflow": "xla", "torch": "torch-fused", "jax": "jax-vjp"}[BACKEND]
    if BACKEND == "torch" and name == "gru_reset_before":
        plain = "portable"
    assert layer.loop_for() == plain
    assert config.layer(4, unroll=True, **config.kwargs).loop_for() == "portable"


# -- cells that change their equations ------------------------------------------


def _halved_recurrence(cls):
    """A subclass of the cell ``cls`` whose step adds half of ``h_{t-1} U``:
    new equations, through the step pieces the loops run."""

    def step_parts(self, weights, recurrent_activation=None):
        kernel, update, extra = cls.step_parts(self, weights, recurrent_activation)

        def halved(projected_t, r, h_in, states, extra):
            return update(projected_t, 0.5 * r, h_in, states, extra)

        return kernel, halved, extra

    return type(f"Halved{cls.__name__}", (cls,), {"step_parts": step_parts})


def _halved_output(cls):
    """A subclass of the cell ``cls`` that overrides ``call`` itself, Keras
    style: its output is half its new state."""

    def call(self, inputs, states, training=False):
        output, new_states = cls.call(self, inputs, states, training=training)
        return 0.5 * output, new_states

    return type(f"HalfOutput{cls.__name__}", (cls,), {"call": call})


VARIANTS = {"halved_recurrence": _halved_recurrence, "halved_output": _halved_output}
VARIANT_LOOPS = {"halved_recurrence": OWN_STEP_LOOP, "halved_output": "cell-call"}


def _layers(name, variant, **kwargs):
    """The variant's layer and the plain layer, built, with the same weights."""
    config = LAYERS[name]
    cell_class = VARIANTS[variant](config.cell)
    layer_class = type(f"Variant{config.layer.__name__}", (config.layer,), {})
    layer_class.cell_class = cell_class
    options = {"return_sequences": True, "return_state": True, **kwargs}
    layers = [cls(4, **config.kwargs, **options) for cls in (layer_class, config.layer)]
    rng = np.random.default_rng(NAMES.index(name))
    for layer in layers:
        layer.build((None, None, 5))
    weights = [rng.normal(scale=0.5, size=w.shape) for w in layers[0].get_weights()]
    for layer in layers:
        layer.set_weights(weights)
    assert type(layers[0].cell) is cell_class
    return layers


def _hand_loop(cell, x, states, mask=None):
    """The subclass's ``call`` over the time steps, in Python (Flax style);
    a masked step keeps the states and repeats the last output (zeros
    before the first unmasked step), as Keras does."""
    outputs, last = [], None
    for t in range(x.shape[1]):
        output, new_states = cell(x[:, t], states)
        if mask is not None:
            keep = keras.ops.convert_to_tensor(mask[:, t : t + 1])
            last = keras.ops.zeros_like(output) if last is None else last
            output = keras.ops.where(keep, output, last)
            new_states = [
                keras.ops.where(keep, n, s) for n, s in zip(new_states, states)
            ]
        outputs.append(output)
        last, states = output, new_states
    return [keras.ops.stack(outputs, axis=1), *states]


def _sum_of_squares(outputs):
    return sum(keras.ops.sum(keras.ops.square(o)) for o in outputs)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("name", NAMES)
def test_cell_subclass_runs_its_own_equations(name, variant):
    layer, plain = _layers(name, variant)
    cell = layer.cell
    assert _cell.claimed_kernel(cell) is None
    assert layer.loop_for() == VARIANT_LOOPS[variant]
    x, states = random_inputs(), random_states(name)
    spy = mock.MagicMock()
    if BACKEND == "torch":
        from keras_recurrent.loops import torch as torch_loop

        spy = mock.patch.object(torch_loop, "recurrence")
    with spy as fused:
        out = layer(x, initial_state=states)
    if BACKEND == "torch":
        fused.assert_not_called()
    expected = _hand_loop(cell, x, states)
    assert_all_close(out, expected)
    # The variant computes other numbers than the plain layer.
    assert not np.allclose(
        keras.ops.convert_to_numpy(out[0]),
        keras.ops.convert_to_numpy(plain(x, initial_state=states)[0]),
        atol=1e-3,
    )

    def loss(run):  # of the inputs, the initial states and the weights
        return lambda x, *rest: _sum_of_squares(run(x, list(rest[: len(states)])))

    weights = layer.trainable_weights
    assert_all_close(
        gradients(loss(lambda x, s: layer(x, initial_state=s)), [x, *states, *weights]),
        gradients(loss(lambda x, s: _hand_loop(cell, x, s)), [x, *states, *weights]),
    )


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("name", ["lstm_peepholes", "gru_reset_before"])
def test_cell_subclass_with_a_mask_and_backwards(name, variant):
    """The step-pieces variant against the hand-written loop; the cell-call
    variant against ``keras.layers.RNN`` over the same cell, whose loop it
    runs (on JAX that loop repeats the state, not the output, at masked
    steps)."""
    layer, _ = _layers(name, variant, go_backwards=True)
    mask = np.array([[1, 0, 1, 1, 0, 1], [0, 0, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], bool)
    x = random_inputs()
    out = layer(x, mask=mask)
    if variant == "halved_output":
        rnn = keras.layers.RNN(
            layer.cell, go_backwards=True, return_sequences=True, return_state=True
        )
        expected = rnn(x, mask=mask)
    else:
        states = [keras.ops.zeros((3, 4))] * LAYERS[name].num_states
        expected = _hand_loop(layer.cell, x[:, ::-1], states, mask[:, ::-1])
    assert_all_close(out, expected)


@pytest.mark.parametrize("name", NAMES)
def test_a_claim_holds_for_the_class_that_makes_it(name):
    config = LAYERS[name]

    def claimed_by(cls):
        claim = _cell.claimed_kernel(cls(3, **config.kwargs))
        return claim and claim.name

    plain = {
        "simple_rnn": "rnn_tanh",
        "lstm": "lstm",
        "lstm_peepholes": "lstm_peephole",
        "gru": "gru",
    }.get(name)
    assert claimed_by(config.cell) == plain
    # A subclass that changes no equation keeps the claim.
    assert claimed_by(type("Same", (config.cell,), {"__doc__": "new"})) == plain
    # One that changes any equation method loses it ...
    for method in _cell.EQUATIONS:
        changed = type(
            "Changed", (config.cell,), {method: getattr(config.cell, method)}
        )
        assert claimed_by(changed) is None, method
        cell = changed(3, **config.kwargs)
        assert not _cell.declared(cell, "update_sums_inputs", False), method
    # ... unless it makes the claim again.
    again = type(
        "Again",
        (_halved_recurrence(config.cell),),
        {"fused_kernel": config.cell.fused_kernel},
    )
    assert claimed_by(again) == plain


def test_relu_simple_rnn_claims_its_kernel_and_other_activations_none():
    assert (
        _cell.claimed_kernel(kr.SimpleRNNCell(3, activation="relu")).name == "rnn_relu"
    )
    for cell in (
        kr.SimpleRNNCell(3, activation="sigmoid"),
        kr.LSTMCell(3, use_peepholes=False, recurrent_activation="hard_sigmoid"),
        kr.GRUCell(3, activation="relu"),
    ):
        assert _cell.claimed_kernel(cell) is None


# -- imports ----------------------------------------------------------------------


def _module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _import_graph():
    """module -> the package's modules it imports (anywhere in its code)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(
                        package.split(".")[: len(package.split(".")) - node.level + 1]
                        + ([base] if base else [])
                    )
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    imported.add(full if full in modules else base)
        graph[module] = sorted(m for m in imported if m in modules and m != module)
    return graph


def _cycle(graph):
    """A cycle of ``graph`` as a list of modules, or None."""
    state = {}

    def visit(module, path):
        state[module] = "open"
        for target in graph[module]:
            if state.get(target) == "open":
                return path[path.index(target) :] + [target]
            if target not in state:
                found = visit(target, path + [target])
                if found:
                    return found
        state[module] = "done"
        return None

    for module in graph:
        if module not in state:
            found = visit(module, [module])
            if found:
                return found
    return None


def test_the_package_has_no_import_cycle():
    graph = _import_graph()
    assert "keras_recurrent.loops.torch" in graph["keras_recurrent.loops"]
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert _cycle({"a": ["b"], "b": [], "c": ["a"]}) is None


def test_no_loop_imports_a_cell_or_a_layer():
    concrete = {
        "keras_recurrent",
        "keras_recurrent._base",
        "keras_recurrent.lstm",
        "keras_recurrent.gru",
        "keras_recurrent.simple_rnn",
    }
    for module, imported in _import_graph().items():
        if module.startswith("keras_recurrent.loops"):
            assert not concrete & set(imported), module

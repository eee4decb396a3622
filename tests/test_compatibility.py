"""Saved-file compatibility: files written by earlier versions keep working.

``tests/fixtures/`` holds ``.keras`` files and ``.weights.h5`` files written
by ``tests/fixtures/make_fixtures.py`` (see its docstring), with the inputs and
the predictions recorded when they were written; those predictions were
checked then against the Keras built-ins or the float64 reference. Every
version must:

- load each ``.keras`` file as a user does (``keras.models.load_model``,
  ``safe_mode`` on, no ``custom_objects``) into our classes, with the weight
  names and shapes recorded, and reproduce the recorded predictions;
- load each ``.weights.h5`` file into the model built by the same code;
- serialize each loaded layer and cell with every config key the file has,
  with the same plain values: a renamed or dropped key fails here, even where
  ``**kwargs`` would let the old file load.

Predictions must agree to ``1e-5 * (1 + |recorded|)``, room for another
backend or CPU, far below what a dropped or swapped weight changes.
A failure here means users' saved models break: never regenerate the fixtures
to make it pass.
"""

import importlib.util
import json
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_recurrent  # noqa: F401  (registers the classes, nothing else)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())["models"]
TOL = 1e-5
ALL = sorted(MANIFEST)
WEIGHTS_ONLY = sorted(n for n, entry in MANIFEST.items() if "weights_file" in entry)


def _builders():
    spec = importlib.util.spec_from_file_location(
        "make_fixtures", FIXTURES / "make_fixtures.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MODELS


def recorded(name):
    with np.load(FIXTURES / MANIFEST[name]["data_file"]) as data:
        ys = [data[f"y{i}"] for i in range(MANIFEST[name]["outputs"])]
        return data["x"], ys


def assert_predicts_recorded(model, name):
    x, expected = recorded(name)
    got = [keras.ops.convert_to_numpy(y) for y in keras.tree.flatten(model(x))]
    assert len(got) == len(expected), name
    for index, (g, e) in enumerate(zip(got, expected)):
        np.testing.assert_allclose(
            g, e, rtol=TOL, atol=TOL, err_msg=f"{name}: output {index}"
        )


def assert_weights_as_recorded(model, name):
    """The same weight names and shapes, in the same order."""
    weights = [[w.name, list(w.shape)] for w in model.weights]
    assert weights == MANIFEST[name]["weights"], name


def _ours_in(tree, path=()):
    """``{path: config}`` of every keras_recurrent object in a serialized tree."""
    found = {}
    if isinstance(tree, dict):
        if str(tree.get("registered_name", "")).startswith("keras_recurrent>"):
            found[path] = tree
        for key, value in tree.items():
            found.update(_ours_in(value, (*path, key)))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            found.update(_ours_in(value, (*path, index)))
    return found


PLAIN = (bool, int, float, str, type(None))


def assert_config_keys_survive(name, path, model):
    """Every keras_recurrent object in the file serializes again, at the same
    place, with every config key it had and the same plain values."""
    with zipfile.ZipFile(path) as archive:
        saved = _ours_in(json.loads(archive.read("config.json")))
    assert saved, f"{name}: the file holds no keras_recurrent object"
    now = _ours_in(keras.saving.serialize_keras_object(model))
    for where, old in saved.items():
        new = now.get(where)
        assert new is not None, f"{name}: nothing of ours at {where} any more"
        assert new["registered_name"] == old["registered_name"], where
        dropped = sorted(set(old["config"]) - set(new["config"]))
        assert dropped == [], f"{name}: {old['registered_name']} lost {dropped}"
        for key, value in old["config"].items():
            if isinstance(value, PLAIN):
                assert new["config"][key] == value, (name, where, key)


def test_fixture_files_are_present_and_small():
    files = [
        FIXTURES / entry[key]
        for entry in MANIFEST.values()
        for key in ("keras_file", "weights_file", "data_file")
        if key in entry
    ]
    missing = [f.name for f in files if not f.is_file()]
    assert missing == [], f"fixtures missing (ignored by git?): {missing}"
    assert sum(f.stat().st_size for f in FIXTURES.iterdir()) < 1024**2
    assert len(ALL) >= 10 and len(WEIGHTS_ONLY) >= 4


@pytest.mark.parametrize("name", ALL)
def test_keras_file_loads_and_predicts_as_recorded(name):
    path = FIXTURES / MANIFEST[name]["keras_file"]
    model = keras.models.load_model(path)
    assert_predicts_recorded(model, name)
    assert_weights_as_recorded(model, name)
    assert_config_keys_survive(name, path, model)


@pytest.mark.parametrize("name", WEIGHTS_ONLY)
def test_weights_file_loads_and_predicts_as_recorded(name):
    model = _builders()[name]()
    model.load_weights(FIXTURES / MANIFEST[name]["weights_file"])
    assert_predicts_recorded(model, name)
    assert_weights_as_recorded(model, name)

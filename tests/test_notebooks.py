"""The notebooks: committed without outputs, and run top to bottom.

Running them needs the ``notebooks`` extra (nbclient, nbformat, ipykernel,
matplotlib). Without it the run tests are skipped locally and fail under CI
(``CI`` set), so that CI cannot pass by skipping them. They take a few minutes
in all; ``-k "not notebook"`` leaves them out of a quick run. A notebook runs
on whatever backend the suite runs on; CI runs them on TensorFlow only
(``one_backend``), the thorough run in README.md on every backend.
"""

import importlib
import json
import os
from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT = 900  # seconds; the slowest cell takes about a minute here


def _import_or_skip(name):
    try:
        return importlib.import_module(name)
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"{name} is not installed: pip install '.[notebooks]'")


def _files_under(directory):
    return sorted(p.relative_to(directory) for p in directory.rglob("*"))


def test_there_are_six_notebooks():
    assert [p.name[:3] for p in NOTEBOOKS] == [f"0{n}_" for n in range(1, 7)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path):
    notebook = json.loads(path.read_text())
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], f"{path.name}: cell {index} has outputs"
            assert cell["execution_count"] is None, f"{path.name}: cell {index}"
    last = "".join(notebook["cells"][-1]["source"])
    assert last.startswith("## What we learned"), f"{path.name} ends without it"


@pytest.mark.one_backend
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path):
    nbformat = _import_or_skip("nbformat")
    nbclient = _import_or_skip("nbclient")
    _import_or_skip("ipykernel")
    _import_or_skip("matplotlib")

    notebook = nbformat.read(path, as_version=4)
    before = _files_under(NOTEBOOK_DIR)
    # The kernel inherits this process's environment (KERAS_BACKEND from
    # conftest) and runs in the notebook's directory, as Jupyter would.
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    client.execute()  # raises CellExecutionError, with the traceback, on failure

    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert not errors
    images = sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    assert images >= 1, f"{path.name} drew no plot"
    assert _files_under(NOTEBOOK_DIR) == before, "the notebook wrote files beside it"

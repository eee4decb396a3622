"""The benchmark script keeps working; it is checked for agreement, never timing."""

import json
import os

import keras
import pytest

from benchmarks import export, memory, models, pipeline, rnn


def test_quick_run_agrees_with_builtins_and_writes_reports(tmp_path):
    rows = rnn.main(
        [
            "--quick",
            "--sizes",
            "2/5/3/4",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--out",
            str(tmp_path),
            "--no-progress",
            "--masks",
            "none",
            "holes",
        ]
    )
    expected = {
        (layer, work, mask)
        for layer in models.LAYERS
        for work in rnn.WORK
        for mask in ("none", "holes")
    }
    assert {(r["layer"], r["work"], r["mask"]) for r in rows} == expected
    loops = {
        "tensorflow": {"xla"},
        "jax": {"jax-vjp"},
        "torch": {"torch-fused", "portable"},
    }
    for row in rows:
        assert row["builtin_ms"] > 0 and row["ours_ms"] > 0
        assert row["path"] in loops[keras.backend.backend()]
        if row["layer"] in models.SAME_AS_BUILTIN:
            assert row["max_abs_difference"] < 1e-5
        else:
            assert row["max_abs_difference"] is None
    report = json.loads((tmp_path / "rnn.json").read_text())
    assert len(report["rows"]) == len(rows)
    assert report["environment"]["keras_recurrent"]
    table = (tmp_path / "rnn.md").read_text()
    assert table.count("\n") == len(rows) + 2
    assert (tmp_path / "ratio.png").stat().st_size > 0


def test_masks_keep_each_sequences_first_step():
    import numpy as np

    rng = np.random.default_rng(0)
    assert rnn.mask_for(np, rng, "none", 4, 10) is None
    right = rnn.mask_for(np, rng, "right", 64, 10)
    lengths = right.sum(axis=1)
    assert (right == (np.arange(10)[None] < lengths[:, None])).all()
    assert lengths.min() >= 5 and lengths[0] == 10
    holes = rnn.mask_for(np, rng, "holes", 64, 10)
    assert holes[:, 0].all() and 0.1 < 1 - holes.mean() < 0.3
    # Not right-padded: some step is masked before an unmasked one.
    assert (~holes[:, :-1] & holes[:, 1:]).any()


def test_bad_size_is_rejected_with_the_value():
    try:
        models.resolve_size("32x100")
    except SystemExit as error:
        assert "Received: --sizes 32x100" in str(error)
    else:
        raise AssertionError("resolve_size accepted a malformed size")


@pytest.mark.skipif(
    not os.path.exists("/proc/self/clear_refs"),
    reason="benchmarks.memory reads the peak resident set size Linux keeps",
)
def test_memory_probe_sees_what_a_training_step_holds():
    """Our LSTM's training step keeps every step's h and c, 2 * (time, batch,
    units) float32 values, from the forward pass to the backward pass, on
    every backend (TensorFlow also keeps the input projection; JAX projects
    each step inside the loop): the probe must see at least that much."""
    batch, steps, features, units = size = (64, 200, 8, 64)
    peak = memory.measure("lstm", size, "ours", keras.backend.backend())
    assert peak >= 2 * steps * batch * units * 4 / 2**20


def test_pipeline_sequences_are_windows_of_the_series_and_the_month_after():
    import numpy as np

    values = np.loadtxt(pipeline.SERIES, delimiter=",", skiprows=1, usecols=2)
    xs, ys = pipeline.sequences(50, seed=3)
    low, high = pipeline.LENGTHS
    assert all(low <= len(x) <= high for x in xs)
    assert all(1 <= x.min() and x.max() < pipeline.VOCABULARY for x in xs)
    # Tokens rise with the count: months of one token have counts in one bin.
    bins = np.floor(values / values.max() * (pipeline.VOCABULARY - 1))
    tokens = 1 + np.minimum(bins, pipeline.VOCABULARY - 2)
    for window, target in zip(xs, ys):
        # Somewhere in the series: these tokens, then the target's month.
        assert any(
            np.array_equal(tokens[s : s + len(window)], window)
            and np.isclose(values[s + len(window)] / values.max(), target)
            for s in range(len(values) - len(window))
        )


def test_pipeline_counts_compilations_between_its_marks():
    mark, compiled = pipeline.MARK, pipeline.COMPILED
    log = "\n".join(
        [
            f"I0000 {compiled} time: 1 ms",  # before any epoch: not counted
            mark + "builtin epoch 1",
            mark + "ours epoch 1",
            f"I0000 {compiled} time: 2 ms",
            f"I0000 {compiled} time: 3 ms",
            mark + "builtin epoch 2",
            f"I0000 {compiled} time: 4 ms",
            mark + "done",
            f"I0000 {compiled} time: 5 ms",
        ]
    )
    assert pipeline.compilations(log) == {"builtin": 1, "ours": 2}


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="counts XLA compilations"
)
def test_pipeline_run_agrees_with_builtin_and_compiles_once(tmp_path):
    """Two epochs over batches of many lengths (and one batch size): the two
    models agree before training, and our loops compile a forward and a
    backward loop once."""
    pipeline.main(
        ["--quick", "--sequences", "64", "--epochs", "2", "--out", str(tmp_path)]
    )
    report = json.loads((tmp_path / "pipeline.json").read_text())
    assert report["shapes"] > 1
    assert report["compilations"] == {"builtin": 0, "ours": 2}
    assert report["largest_difference"] < 1e-5
    assert len(report["epochs"]["ours"]) == 2
    assert "| all |" in (tmp_path / "pipeline.md").read_text()


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="tf2onnx and TFLite read TF graphs"
)
def test_export_run_checks_each_artifact_and_reports_its_operators(tmp_path):
    """Each artifact reproduces its model's predict; ours has a dynamic
    batch, becomes ONNX's own LSTM and a TFLite loop, and the built-in's
    TFLite model needs a fixed batch."""
    rows = export.main(
        ["--quick", "--layers", "lstm", "--repeats", "1", "--out", str(tmp_path)]
    )
    assert [(r["layer"], r["format"]) for r in rows] == [
        ("lstm", "onnx"),
        ("lstm", "litert"),
    ]
    onnx, litert = rows
    for row in rows:
        assert row["builtin_max_abs_difference"] < 1e-5
        assert row["ours_max_abs_difference"] < 1e-5
        assert row["ours_dynamic_batch"] == "yes"
        assert row["builtin_ms"] > 0 and row["ours_ms"] > 0
    assert onnx["builtin_ops"].startswith("1×LSTM")  # ONNX's own operator
    assert onnx["ours_ops"].startswith("1×LSTM")
    assert litert["ours_ops"].startswith("1×WHILE")
    assert litert["builtin_dynamic_batch"].startswith("fails")
    table = (tmp_path / "export.md").read_text()
    assert table.count("\n") == len(rows) + 2

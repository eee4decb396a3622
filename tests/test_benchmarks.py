"""The benchmark script keeps working; it is checked for agreement, never timing."""

import json
import os

import keras
import pytest

from benchmarks import memory, rnn


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
        ]
    )
    expected = {(layer, work) for layer in rnn.LAYERS for work in rnn.WORK}
    assert {(r["layer"], r["work"]) for r in rows} == expected
    loops = {"tensorflow": {"xla"}, "torch": {"torch-fused", "portable"}}
    for row in rows:
        assert row["builtin_ms"] > 0 and row["ours_ms"] > 0
        assert row["path"] in loops.get(keras.backend.backend(), {"portable"})
        if row["layer"] in rnn.SAME_AS_BUILTIN:
            assert row["max_abs_difference"] < 1e-5
        else:
            assert row["max_abs_difference"] is None
    report = json.loads((tmp_path / "rnn.json").read_text())
    assert len(report["rows"]) == len(rows)
    assert report["environment"]["keras_recurrent"]
    table = (tmp_path / "rnn.md").read_text()
    assert table.count("\n") == len(rows) + 2
    assert (tmp_path / "ratio.png").stat().st_size > 0


def test_bad_size_is_rejected_with_the_value():
    try:
        rnn.resolve_size("32x100")
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

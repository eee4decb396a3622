"""Exported models: keras_recurrent against the ``keras.layers`` built-ins,
by file size, operators and latency in the runtime that serves them.

    python -m benchmarks.export              # TensorFlow, every layer at S1
    python -m benchmarks.export --quick      # a small size, 5 repeats

For every layer of ``benchmarks.rnn`` (the variants against the built-in
LSTM), the built-in model and ours (``Input((steps, features))``, the layer,
a Dense head; the built-in's weights copied into ours) are exported on
TensorFlow with ``model.export``, ours inside
:func:`keras_recurrent.exporting` for that format:

- ``format="onnx"`` (tf2onnx), served by onnxruntime;
- ``format="litert"``, served by the TFLite interpreter. Ours keeps the
  batch size dynamic; the built-in's conversion fails with it
  (``TensorListReserve``), so the built-in is converted again with the batch
  fixed to the size's batch, and that artifact is timed.

Each artifact is checked against the model's ``predict`` (the largest
difference is reported). Both sides' artifacts are then warmed up and timed
interleaved (built-in, ours, ...) on one batch; the report gives the file
sizes, the operators (the recurrent one: ONNX's ``LSTM``/``GRU``/``RNN`` or
a ``Loop``, TFLite's ``WHILE`` or a fused op; and how many operators in all,
loop bodies included), the median latencies and the ratio built-in / ours
(above 1: ours is faster).

Writes ``export.json`` and ``export.md`` to ``--out``: by default
``benchmarks/results/export``, where committed full runs live, and
``benchmarks/results/quick/export`` for ``--quick``.
"""

import argparse
import collections
import contextlib
import importlib.metadata
import io
import json
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks import models, rnn

FORMATS = ("onnx", "litert")
SUFFIXES = {"onnx": ".onnx", "litert": ".tflite"}
# The operators that run a whole sequence, in ONNX and in TFLite.
SEQUENCE_OPS = {
    "LSTM",
    "GRU",
    "RNN",
    "Loop",
    "Scan",
    "WHILE",
    "UNIDIRECTIONAL_SEQUENCE_LSTM",
    "UNIDIRECTIONAL_SEQUENCE_RNN",
    "BIDIRECTIONAL_SEQUENCE_LSTM",
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", nargs="+", default=list(models.LAYERS))
    parser.add_argument("--size", default=None, help="S1 (Q1 with --quick) or B/T/F/H")
    parser.add_argument(
        "--repeats", type=int, help="timed calls per side (30; --quick 5)"
    )
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="size Q1, 5 repeats")
    parser.add_argument("--out", type=Path, help="where to write the results")
    args = parser.parse_args(argv)
    args.size = models.resolve_size(args.size or ("Q1" if args.quick else "S1"))
    if args.repeats is None:
        args.repeats = 5 if args.quick else 30
    if args.out is None:
        results = Path("benchmarks/results")
        args.out = (results / "quick" if args.quick else results) / "export"
    return args


def onnx_artifact(path):
    """``(run(x) -> y, operator counts)`` of the ONNX file at ``path``."""
    import onnx
    import onnxruntime

    session = onnxruntime.InferenceSession(path)
    name = session.get_inputs()[0].name

    def count(graph, counts):
        for node in graph.node:
            counts[node.op_type] += 1
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    count(attribute.g, counts)
        return counts

    ops = count(onnx.load(path).graph, collections.Counter())
    return (lambda x: session.run(None, {name: x})[0]), ops


def litert_artifact(path):
    """``(run(x) -> y, operator counts)`` of the TFLite file at ``path``; the
    operators as TFLite's analyzer lists them, every subgraph included."""
    import tensorflow as tf

    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        tf.lite.experimental.Analyzer.analyze(model_path=path)
    ops = collections.Counter(re.findall(r"Op#\d+ (\w+)\(", text.getvalue()))
    interpreter = tf.lite.Interpreter(model_path=path)
    serve = interpreter.get_signature_runner("serving_default")
    (name,) = serve.get_input_details()

    def run(x):
        (y,) = serve(**{name: x}).values()
        return y

    return run, ops


def export(keras, kr, model, fmt, folder, side, batch=None):
    """Exports ``model`` to ``folder`` in ``fmt`` (ours inside
    ``exporting(fmt)``); with ``batch``, the batch size fixed. Returns the path."""
    name = f"{side}{'' if batch is None else batch}{SUFFIXES[fmt]}"
    path = str(Path(folder) / name)
    signature = None
    if batch is not None:
        spec = keras.InputSpec(
            shape=(batch, *model.inputs[0].shape[1:]), dtype="float32"
        )
        signature = [spec]
    block = kr.exporting(fmt) if side == "ours" else contextlib.nullcontext()
    with block, contextlib.redirect_stdout(io.StringIO()):
        model.export(path, format=fmt, verbose=False, input_signature=signature)
    return path


def served(keras, kr, model, fmt, folder, side, x, batch=None):
    """``(path, run, operator counts, run(x))`` of ``model`` exported by
    :func:`export` and loaded in its runtime."""
    path = export(keras, kr, model, fmt, folder, side, batch)
    run, ops = (onnx_artifact if fmt == "onnx" else litert_artifact)(path)
    return path, run, ops, run(x)


def describe(ops):
    """The sequence operators, then the count of all operators."""
    sequence = [f"{n}×{op}" for op, n in sorted(ops.items()) if op in SEQUENCE_OPS]
    return f"{', '.join(sequence) or 'unrolled'} ({sum(ops.values())} ops)"


def bench_layer(keras, kr, np, layer, size, fmt, repeats, warmup, folder):
    batch, steps, features, _ = size
    builtin, ours = models.build_models(keras, kr, layer, (None, *size[1:]), "auto")
    x = np.random.default_rng(0).normal(size=(batch, steps, features))
    x = x.astype("float32")
    row = {"layer": layer, "size": "/".join(map(str, size)), "format": fmt}
    runs = {}
    for side, model in (("builtin", builtin), ("ours", ours)):
        expected = model.predict(x, verbose=0)
        try:
            path, run, ops, y = served(keras, kr, model, fmt, folder, side, x)
        except Exception as error:  # the built-in's TFLite with a dynamic batch
            row[f"{side}_dynamic_batch"] = f"fails: {type(error).__name__}"
            path, run, ops, y = served(keras, kr, model, fmt, folder, side, x, batch)
        else:
            row[f"{side}_dynamic_batch"] = "yes"
        row[f"{side}_kib"] = os.path.getsize(path) / 1024
        row[f"{side}_ops"] = describe(ops)
        row[f"{side}_max_abs_difference"] = float(np.max(np.abs(y - expected)))
        runs[side] = run
    for _ in range(warmup):
        for run in runs.values():
            run(x)
    times = {side: [] for side in runs}
    for _ in range(repeats):
        for side, run in runs.items():
            times[side].append(rnn.time_call(lambda run=run: run(x)))
    for side, seconds in times.items():
        row[f"{side}_ms"] = 1000 * statistics.median(seconds)
    row["ratio"] = row["builtin_ms"] / row["ours_ms"]
    return row


def markdown(rows):
    lines = [
        "| layer | B/T/F/H | format | built-in: dynamic batch | built-in ops "
        "| ours ops | built-in KiB | ours KiB | built-in ms | ours ms | ratio "
        "| max diff built-in / ours |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['layer']} | {r['size']} | {r['format']} "
            f"| {r['builtin_dynamic_batch']} | {r['builtin_ops']} | {r['ours_ops']} "
            f"| {r['builtin_kib']:.0f} | {r['ours_kib']:.0f} "
            f"| {r['builtin_ms']:.2f} | {r['ours_ms']:.2f} | {r['ratio']:.2f} "
            f"| {r['builtin_max_abs_difference']:.1e} "
            f"/ {r['ours_max_abs_difference']:.1e} |"
        )
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    os.environ["KERAS_BACKEND"] = "tensorflow"  # tf2onnx and TFLite read TF graphs
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    import keras_recurrent as kr

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for layer in args.layers:
            for fmt in FORMATS:
                rows.append(
                    bench_layer(
                        keras,
                        kr,
                        np,
                        layer,
                        args.size,
                        fmt,
                        args.repeats,
                        args.warmup,
                        folder,
                    )
                )
                keras.backend.clear_session()
    environment = {
        name: importlib.metadata.version(name)
        for name in ("tensorflow", "keras", "tf2onnx", "onnxruntime")
    }
    environment.update(
        keras_recurrent=kr.__version__,
        processor=rnn.cpu_model(),
        cpus=os.cpu_count(),
        repeats=args.repeats,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "export.json").write_text(
        json.dumps({"environment": environment, "rows": rows}, indent=2)
    )
    table = markdown(rows)
    (args.out / "export.md").write_text(table + "\n")
    print(table)
    print(f"\nresults in {args.out}/")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])

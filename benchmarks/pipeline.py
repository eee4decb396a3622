"""Times a variable-length training pipeline: keras_recurrent against the
``keras.layers`` built-in, epoch by epoch from a fresh process.

    python -m benchmarks.pipeline --backend tensorflow
    python -m benchmarks.pipeline --quick          # one run of 256 sequences

The pipeline is what a user meets first: ``Embedding(500, 16,
mask_zero=True)`` -> ``LSTM(32)`` -> ``Dense(1)``, trained with ``fit`` on a
``tf.data`` ``padded_batch(32)`` of sequences of 5 to 120 steps, reshuffled
every epoch, so that every batch is padded to its own longest sequence. The
sequences are cut from the monthly sunspot series shipped with the notebooks
(``notebooks/data``): each month's count becomes one of 499 tokens, and the
target is the next month's count, scaled.

Each run is a fresh process, so that the first epoch pays every compilation,
as it does for a user. In it the built-in model and ours (the built-in's
weights copied into ours) train interleaved, epoch by epoch, their order
alternating between runs; a small model without recurrent layers is trained
first, so that neither side pays TensorFlow's and Keras's start-up. The
report gives each epoch's median wall time over the runs, the ratio built-in
time / our time (above 1: ours is faster), the number of distinct batch
shapes, and on TensorFlow the number of XLA compilations during each side's
epochs (read from TensorFlow's log; the built-in compiles none on a CPU).

Writes ``pipeline.json`` and ``pipeline.md`` to ``--out``: by default
``benchmarks/results/pipeline/<backend>``, where committed full runs live,
and ``benchmarks/results/quick/pipeline/<backend>`` for ``--quick``.
"""

import argparse
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERIES = ROOT / "notebooks" / "data" / "sunspots_monthly.csv"
VOCABULARY, EMBEDDING, UNITS, BATCH = 500, 16, 32, 32
LENGTHS = (5, 120)
SIDES = ("builtin", "ours")
MARK = "benchmarks.pipeline: "  # starts the lines a run writes to its log
COMPILED = "Compilation of XLA executable"  # a line TensorFlow logs per compile


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backend", default=os.environ.get("KERAS_BACKEND", "tensorflow")
    )
    parser.add_argument("--runs", type=int, help="fresh processes (5; --quick 1)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--sequences", type=int, help="2000; --quick 256")
    parser.add_argument("--quick", action="store_true", help="1 run, 256 sequences")
    parser.add_argument("--out", type=Path, help="where to write the results")
    parser.add_argument("--run", help=argparse.SUPPRESS)  # a run: its order
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = 1 if args.quick else 5
    if args.sequences is None:
        args.sequences = 256 if args.quick else 2000
    for name in ("runs", "epochs", "sequences"):
        if getattr(args, name) < 1:
            parser.error(
                f"--{name} must be a positive integer. "
                f"Received: --{name} {getattr(args, name)}"
            )
    if args.out is None:
        quick = ("quick",) if args.quick else ()
        args.out = ROOT.joinpath("benchmarks", "results", *quick, "pipeline")
        args.out = args.out / args.backend
    return args


def sequences(count, seed=0):
    """``(tokens, targets)``: ``count`` windows of the sunspot series, of 5 to
    120 months each, as token lists, and the month after each, scaled."""
    import numpy as np

    values = np.loadtxt(SERIES, delimiter=",", skiprows=1, usecols=2)
    scale = values.max()
    bins = (values / scale * (VOCABULARY - 1)).astype(int)  # the largest alone
    tokens = 1 + np.minimum(bins, VOCABULARY - 2)  # 0 pads
    rng = np.random.default_rng(seed)
    lengths = rng.integers(LENGTHS[0], LENGTHS[1] + 1, count)
    starts = rng.integers(0, len(values) - LENGTHS[1] - 1, count)
    xs = [tokens[s : s + n] for s, n in zip(starts, lengths)]
    ys = np.array([values[s + n] / scale for s, n in zip(starts, lengths)])
    return xs, ys.astype("float32")


def dataset(xs, ys, seed):
    import tensorflow as tf

    ds = tf.data.Dataset.from_generator(
        lambda: zip(xs, ys),
        output_signature=(
            tf.TensorSpec((None,), tf.int32),
            tf.TensorSpec((), tf.float32),
        ),
    )
    ds = ds.cache().shuffle(len(xs), seed=seed, reshuffle_each_iteration=True)
    return ds.padded_batch(BATCH).prefetch(2)


def build(keras, recurrent):
    model = keras.Sequential(
        [
            keras.Input((None,), dtype="int32"),
            keras.layers.Embedding(VOCABULARY, EMBEDDING, mask_zero=True),
            recurrent,
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    return model


def log(message):
    """A line in the log of the run, between TensorFlow's own lines."""
    print(MARK + message, file=sys.stderr, flush=True)


def run(args):
    """One run, in this fresh process: prints its epoch times as JSON.

    Both models predict one batch first (compiling their predict functions,
    outside the timed epochs) to check that they agree."""
    import keras
    import numpy as np

    import keras_recurrent as kr

    keras.utils.set_random_seed(0)
    xs, ys = sequences(args.sequences)
    # One dataset per side and one to count shapes, all with one seed: each
    # side's epoch e sees the batches of the counter's epoch e.
    ds = dataset(xs, ys, seed=0)
    shapes = set()
    for _ in range(args.epochs):
        shapes |= {tuple(x.shape) for x, _ in ds}
    # Start-up, paid by neither side: a model without recurrent layers.
    warm = keras.Sequential(
        [keras.layers.Embedding(VOCABULARY, 4), keras.layers.Dense(1)]
    )
    warm.compile(optimizer="adam", loss="mse")
    warm.fit(ds.take(2), epochs=1, verbose=0)

    builtin = build(keras, keras.layers.LSTM(UNITS))
    ours = build(keras, kr.LSTM(UNITS, use_peepholes=False))
    ours.set_weights(builtin.get_weights())
    batch = next(iter(ds))[0]
    difference = float(
        np.max(
            np.abs(builtin.predict(batch, verbose=0) - ours.predict(batch, verbose=0))
        )
    )
    models = {"builtin": builtin, "ours": ours}
    data = {side: dataset(xs, ys, seed=0) for side in SIDES}
    times = {side: [] for side in SIDES}
    for epoch in range(args.epochs):
        for side in args.run.split(","):
            log(f"{side} epoch {epoch + 1}")
            start = time.perf_counter()
            models[side].fit(data[side], epochs=1, verbose=0)
            times[side].append(time.perf_counter() - start)
    log("done")
    print(json.dumps({"times": times, "shapes": len(shapes), "difference": difference}))


def compilations(log_text):
    """``{side: count}``: the XLA compilations logged during each side's
    epochs."""
    counts = {side: 0 for side in SIDES}
    side = None
    for line in log_text.splitlines():
        if line.startswith(MARK):
            label = line[len(MARK) :].split()
            side = label[0] if label[0] in counts else None
        elif COMPILED in line and side is not None:
            counts[side] += 1
    return counts


def main(argv=None):
    args = parse_args(argv)
    if args.run:
        return run(args)
    env = dict(os.environ, KERAS_BACKEND=args.backend)
    # TensorFlow logs each XLA compilation at this verbosity.
    env.update(TF_CPP_MIN_LOG_LEVEL="0", TF_CPP_VMODULE="device_compiler=1")
    results = []
    for index in range(args.runs):
        order = SIDES if index % 2 == 0 else SIDES[::-1]
        child = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.pipeline",
                *_forwarded(args),
                "--run",
                ",".join(order),
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        if child.returncode != 0:
            sys.stderr.write(child.stderr[-4000:])
            raise SystemExit(
                f"run {index + 1} failed with exit code {child.returncode}"
            )
        result = json.loads(child.stdout.strip().splitlines()[-1])
        result["compilations"] = compilations(child.stderr)
        results.append(result)
        print(f"run {index + 1}/{args.runs}: {_summary(result)}", flush=True)
    report = summarise(args, results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pipeline.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "pipeline.md").write_text(markdown(report))
    print(markdown(report))


def _forwarded(args):
    return [
        "--backend",
        args.backend,
        "--epochs",
        str(args.epochs),
        "--sequences",
        str(args.sequences),
    ]


def _summary(result):
    return ", ".join(
        f"{side} " + " ".join(f"{t:.1f}" for t in result["times"][side]) + " s"
        for side in SIDES
    )


def summarise(args, results):
    def median_epochs(side):
        return [
            statistics.median(r["times"][side][e] for r in results)
            for e in range(args.epochs)
        ]

    def median_total(side):
        return statistics.median(sum(r["times"][side]) for r in results)

    epochs = {side: median_epochs(side) for side in SIDES}
    totals = {side: median_total(side) for side in SIDES}
    return {
        "backend": args.backend,
        "keras": importlib.metadata.version("keras"),
        "runs": args.runs,
        "sequences": args.sequences,
        "shapes": max(r["shapes"] for r in results),
        "epochs": epochs,
        "totals": totals,
        "ratio_epochs": [b / o for b, o in zip(epochs["builtin"], epochs["ours"])],
        "ratio_total": totals["builtin"] / totals["ours"],
        "compilations": {
            side: statistics.median(r["compilations"][side] for r in results)
            for side in SIDES
        },
        "largest_difference": max(r["difference"] for r in results),
        "all_runs": results,
    }


def markdown(report):
    rows = [
        "| epoch | built-in (s) | ours (s) | built-in / ours |",
        "|---|---|---|---|",
    ]
    for e, (b, o) in enumerate(
        zip(report["epochs"]["builtin"], report["epochs"]["ours"])
    ):
        rows.append(f"| {e + 1} | {b:.2f} | {o:.2f} | {b / o:.2f}× |")
    b, o = report["totals"]["builtin"], report["totals"]["ours"]
    rows.append(f"| all | {b:.2f} | {o:.2f} | {b / o:.2f}× |")
    compiled = report["compilations"]
    if report["backend"] != "tensorflow":
        compiled = {side: "not counted" for side in SIDES}
    return "\n".join(
        [
            f"Pipeline on {report['backend']} (Keras {report['keras']}): "
            f"{report['sequences']} sequences of {LENGTHS[0]}-{LENGTHS[1]} steps, "
            f"batch {BATCH}, {report['shapes']} distinct batch shapes; "
            f"median of {report['runs']} fresh processes.",
            "",
            *rows,
            "",
            f"XLA compilations during the epochs: built-in {compiled['builtin']}, "
            f"ours {compiled['ours']}. Largest difference between the two models' "
            f"predictions on a batch, before training: "
            f"{report['largest_difference']:.1e}.",
            "",
        ]
    )


if __name__ == "__main__":
    main()

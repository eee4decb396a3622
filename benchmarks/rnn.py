"""Times keras_recurrent against the ``keras.layers`` built-ins.

    python -m benchmarks.rnn --backend tensorflow           # the full run
    python -m benchmarks.rnn --quick                        # under a minute

The full run (no ``--sizes``, no ``--quick``) times sizes S1-S4 and adds the
sweep over sequence lengths at S1 (``--sweep`` adds it to any run).
``--masks right holes`` adds masked rows: both models then start with a
``keras.layers.Masking`` layer, over inputs zeroed after each sequence's end
(``right``: lengths from half the steps to all of them) or at a fifth of the
steps, drawn at random, the first step of each sequence kept (``holes``).

Both sides run in one process on the same backend: for every layer, size and
kind of work, the built-in model and ours (same configuration, the built-in's
weights copied into ours) are warmed up untimed, then timed interleaved
(built-in, ours, built-in, ours ...). The report gives medians, sequences/s,
the ratio built-in time / our time (above 1: ours is faster), achieved matmul
GFLOP/s and that as a fraction of this machine's measured matmul peak, the
peak memory of a training step of each model (measured in a process of its
own by ``benchmarks.memory``, on Linux; not with ``--quick``), and the
largest difference between the two models' outputs.

Writes ``rnn.json``, ``rnn.md`` and ``ratio.png`` / ``time_vs_steps.png``
(with matplotlib) to ``--out``: by default ``benchmarks/results/<backend>``,
where the committed results of full runs live, and for ``--quick``
``benchmarks/results/quick/<backend>``, which git ignores.
"""

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from benchmarks.models import (
    LAYERS,
    QUICK_SIZES,
    SAME_AS_BUILTIN,
    SIZES,
    build_models,
    resolve_size,
)

SWEEP_STEPS = (10, 30, 100, 300, 1000, 2000)
WORK = ("forward", "train")
MASKS = ("none", "right", "holes")
BACKEND_PACKAGES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.rnn", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND"))
    parser.add_argument("--layers", nargs="+", choices=list(LAYERS), default=None)
    parser.add_argument(
        "--sizes",
        nargs="+",
        default=None,
        help="size names (S1..S4) or B/T/F/H, e.g. 32/100/32/128",
    )
    parser.add_argument("--work", nargs="+", choices=WORK, default=list(WORK))
    parser.add_argument(
        "--masks",
        nargs="+",
        choices=MASKS,
        default=["none"],
        help="the masks to time with (default: none)",
    )
    parser.add_argument(
        "--jit",
        nargs="+",
        choices=("auto", "true"),
        default=None,
        help="jit_compile settings to time (default: auto and true)",
    )
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--sweep", action="store_true", help="time vs T at S1")
    parser.add_argument("--quick", action="store_true", help="tiny run, < 1 min")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--no-memory",
        action="store_true",
        help="skip the peak memory of training steps (always skipped by --quick)",
    )
    args = parser.parse_args(argv)
    args.sweep = args.sweep or not (args.quick or args.sizes)
    if args.quick:
        args.sizes = args.sizes or list(QUICK_SIZES)
        args.jit = args.jit or ["auto"]
        args.repeats = args.repeats or 3
    args.layers = args.layers or list(LAYERS)
    args.sizes = args.sizes or list(SIZES)
    args.jit = args.jit or ["auto", "true"]
    args.repeats = args.repeats or 10
    if args.repeats < 1 or args.warmup < 0:
        parser.error(f"--repeats must be >= 1. Received: --repeats={args.repeats}")
    return args


def time_call(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def mask_for(np, rng, kind, batch, steps):
    """The ``(batch, steps)`` mask of ``--masks kind``, or None for none."""
    if kind == "none":
        return None
    if kind == "right":
        lengths = rng.integers(max(1, steps // 2), steps + 1, size=batch)
        lengths[0] = steps
        return np.arange(steps)[None] < lengths[:, None]
    mask = rng.random((batch, steps)) >= 0.2
    mask[:, 0] = True
    return mask


def bench_pair(keras, kr, np, layer, size, work, jit, repeats, warmup, mask="none"):
    batch, steps, features, units = size
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, steps, features)).astype("float32")
    y = rng.normal(size=(batch, 1)).astype("float32")
    keep = mask_for(np, rng, mask, batch, steps)
    if keep is not None:
        x = x * keep[..., None]
    builtin, ours = build_models(
        keras, kr, layer, size, True if jit == "true" else "auto", keep is not None
    )
    # A variant computes other equations than the built-in: no diff.
    difference = None
    if layer in SAME_AS_BUILTIN:
        difference = float(
            np.max(np.abs(builtin.predict_on_batch(x) - ours.predict_on_batch(x)))
        )
    if work == "forward":
        calls = [lambda: builtin.predict_on_batch(x), lambda: ours.predict_on_batch(x)]
    else:
        calls = [
            lambda: builtin.train_on_batch(x, y),
            lambda: ours.train_on_batch(x, y),
        ]
    for _ in range(warmup):
        for call in calls:
            call()
    times = ([], [])
    for _ in range(repeats):
        for side, call in enumerate(calls):
            times[side].append(time_call(call))
    builtin_s, ours_s = (statistics.median(t) for t in times)
    # The loop our layer runs for these calls (see RecurrentLayer.loop_for).
    recurrent = ours.layers[-2]
    path = recurrent.loop_for(
        mask=None if keep is None else keras.ops.convert_to_tensor(keep),
        training=work == "train",
    )
    gates, extra = LAYERS[layer][2:]
    if "projection_units" in extra:  # h is units // 2 wide, and projected
        outputs = units // 2
        flops = 2 * batch * steps * ((features + outputs) * gates + outputs) * units
    else:
        flops = 2 * batch * steps * (features + units) * gates * units
    flops *= 3 if work == "train" else 1
    return {
        "layer": layer,
        "size": list(size),
        "work": work,
        "mask": mask,
        "jit_compile": jit,
        "path": path,
        "builtin_ms": builtin_s * 1e3,
        "ours_ms": ours_s * 1e3,
        "ratio": builtin_s / ours_s,
        "ours_sequences_per_s": batch / ours_s,
        "builtin_sequences_per_s": batch / builtin_s,
        "builtin_peak_mib": None,
        "ours_peak_mib": None,
        "ours_gflops": flops / ours_s / 1e9,
        "builtin_gflops": flops / builtin_s / 1e9,
        "max_abs_difference": difference,
    }


def cpu_model():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def matmul_peak_gflops(keras, np, repeats=5):
    a = keras.ops.convert_to_tensor(np.ones((1024, 1024), "float32"))
    keras.ops.convert_to_numpy(keras.ops.matmul(a, a))
    seconds = min(
        time_call(lambda: keras.ops.convert_to_numpy(keras.ops.matmul(a, a)))
        for _ in range(repeats)
    )
    return 2 * 1024**3 / seconds / 1e9


def _diff(value):
    return "n/a" if value is None else f"{value:.1e}"


def _mib(value):
    return "n/a" if value is None else f"{value:.0f}"


def markdown_table(rows, peak):
    lines = [
        "| layer | B/T/F/H | mask | work | jit_compile | our loop | built-in ms "
        "| ours ms | ratio "
        "| ours seq/s | ours GFLOP/s (% peak) | built-in MiB | ours MiB "
        "| max diff |",
        "|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['layer']} | {'/'.join(map(str, r['size']))} "
            f"| {r.get('mask', 'none')} | {r['work']} "
            f"| {r['jit_compile']} | {r['path']} | {r['builtin_ms']:.2f} "
            f"| {r['ours_ms']:.2f} "
            f"| {r['ratio']:.2f}x | {r['ours_sequences_per_s']:.0f} "
            f"| {r['ours_gflops']:.1f} ({100 * r['ours_gflops'] / peak:.0f}%) "
            f"| {_mib(r['builtin_peak_mib'])} | {_mib(r['ours_peak_mib'])} "
            f"| {_diff(r['max_abs_difference'])} |"
        )
    return "\n".join(lines)


def plot(rows, out):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return []
    written = []
    # Unmasked rows only: a masked one has a panel's layer, size and work.
    table = [r for r in rows if not r.get("sweep") and r.get("mask", "none") == "none"]
    panels = sorted({(r["work"], r["jit_compile"]) for r in table})
    if panels:
        columns = min(2, len(panels))
        grid_rows = -(-len(panels) // columns)
        fig, axes = plt.subplots(
            grid_rows,
            columns,
            figsize=(5.5 * columns, 3.8 * grid_rows),
            squeeze=False,
        )
        layers = [layer for layer in LAYERS if any(r["layer"] == layer for r in table)]
        width = 0.8 / len(layers)
        for ax in axes.flat[len(panels) :]:
            ax.set_visible(False)
        for ax, (work, jit) in zip(axes.flat, panels):
            panel = [r for r in table if (r["work"], r["jit_compile"]) == (work, jit)]
            sizes = list(dict.fromkeys("/".join(map(str, r["size"])) for r in panel))
            for k, layer in enumerate(layers):
                ratios = {
                    "/".join(map(str, r["size"])): r["ratio"]
                    for r in panel
                    if r["layer"] == layer
                }
                ax.bar(
                    [i + k * width for i in range(len(sizes))],
                    [ratios.get(size, 0) for size in sizes],
                    width,
                    label=layer,
                )
            ax.axhline(1.0, color="black", linewidth=0.8)
            ax.set_yscale("log")
            # Ratios as readers say them, "2×" and "0.8×", not 2×10^0.
            times = matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:g}×")
            ax.yaxis.set_major_formatter(times)
            ax.yaxis.set_minor_formatter(times)
            ax.tick_params(axis="y", which="minor", labelsize=6)
            ax.set_ylabel("built-in time / ours")
            ax.set_xticks(
                [i + 0.4 - width / 2 for i in range(len(sizes))], sizes, fontsize=7
            )
            ax.set_title(f"{work}, jit_compile={jit}", fontsize=9)
            ax.set_xlabel("B/T/F/H")
        axes.flat[0].legend(fontsize=7)
        fig.suptitle("keras_recurrent vs keras.layers: above 1, ours is faster")
        fig.tight_layout()
        fig.savefig(out / "ratio.png", dpi=120)
        plt.close(fig)
        written.append(out / "ratio.png")
    sweep = [r for r in rows if r.get("sweep")]
    if sweep:
        fig, ax = plt.subplots(figsize=(6, 4))
        layers = [layer for layer in LAYERS if any(r["layer"] == layer for r in sweep)]
        for color, layer in enumerate(layers):
            for side, style in (("builtin", "--"), ("ours", "-")):
                pts = sorted(
                    (r["size"][1], r[f"{side}_ms"])
                    for r in sweep
                    if r["layer"] == layer
                )
                ax.loglog(
                    *zip(*pts),
                    style,
                    color=f"C{color}",
                    marker="o",
                    label=f"{layer} ({'built-in' if side == 'builtin' else 'ours'})",
                )
        b, _, f, h = sweep[0]["size"]
        ax.set_title(f"forward pass, B/F/H = {b}/{f}/{h}", fontsize=9)
        ax.set_xlabel("time steps T")
        ax.set_ylabel("median ms")
        ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(out / "time_vs_steps.png", dpi=120)
        plt.close(fig)
        written.append(out / "time_vs_steps.png")
    return written


def main(argv=None):
    args = parse_args(argv)
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")  # retracing notices between models

    import keras_recurrent as kr
    from benchmarks import memory

    try:
        from tqdm import tqdm
    except ImportError:  # progress bar is optional

        def tqdm(items, **_):
            return items

    plan = [
        (layer, resolve_size(size), work, jit, mask, False)
        for size in args.sizes
        for layer in args.layers
        for mask in args.masks
        for work in args.work
        for jit in args.jit
    ]
    if args.sweep:
        batch, _, features, units = SIZES["S1"]
        plan += [
            (layer, (batch, steps, features, units), "forward", "auto", "none", True)
            for layer in args.layers
            for steps in SWEEP_STEPS
        ]
    peak = matmul_peak_gflops(keras, np)
    rows = []
    for layer, size, work, jit, mask, sweep in tqdm(
        plan, desc="benchmarks", disable=args.no_progress
    ):
        row = bench_pair(
            keras, kr, np, layer, size, work, jit, args.repeats, args.warmup, mask
        )
        row["sweep"] = sweep
        measure = work == "train" and jit == "auto" and mask == "none"
        if measure and not (args.quick or args.no_memory):
            for side in ("builtin", "ours"):
                row[f"{side}_peak_mib"] = memory.measure(
                    layer, size, side, keras.backend.backend()
                )
        rows.append(row)
        keras.backend.clear_session()

    backend = keras.backend.backend()
    if args.out is None:
        # Quick runs never overwrite the committed results of a full run.
        results = Path("benchmarks/results")
        args.out = (results / "quick" if args.quick else results) / backend
    environment = {
        "backend": backend,
        backend: importlib.metadata.version(BACKEND_PACKAGES[backend]),
        "keras": keras.__version__,
        "keras_recurrent": kr.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": cpu_model(),
        "cpus": os.cpu_count(),
        "matmul_peak_gflops": peak,
        "repeats": args.repeats,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rnn.json").write_text(
        json.dumps({"environment": environment, "rows": rows}, indent=2)
    )
    table = markdown_table(rows, peak)
    (args.out / "rnn.md").write_text(table + "\n")
    written = plot(rows, args.out)
    print(table)
    print(
        f"\nmatmul peak {peak:.1f} GFLOP/s; results in {args.out}/ "
        f"({', '.join(p.name for p in written) or 'no plots'})"
    )
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])

"""Peak memory of one training step of one model, in a process of its own.

    python -m benchmarks.memory lstm 32/100/32/128 ours

Builds the model of ``benchmarks.models`` for that layer, size and side
(``ours`` or ``builtin``), runs two training steps untimed, then measures how
far each of three more steps raises the process's resident memory above
where the step started, and prints the median in MiB as JSON. Linux only:
the kernel resets the peak (``VmHWM``) when 5 is written to
``/proc/self/clear_refs``.

Resident memory shows what a step holds only if freed memory goes back to
the system, so :func:`measure` starts this module with glibc handing back
every block of a page or more (``MALLOC_MMAP_THRESHOLD_``) and TensorFlow's
oneDNN build using the system allocator instead of its own pool
(``TF_ONEDNN_USE_SYSTEM_ALLOCATOR``). The timings of ``benchmarks.rnn`` run
without these settings, in their own process.
"""

import gc
import json
import os
import statistics
import subprocess
import sys
import time

ENVIRONMENT = {
    "MALLOC_MMAP_THRESHOLD_": "4096",
    "TF_ONEDNN_USE_SYSTEM_ALLOCATOR": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}


def measure(layer, size, side, backend):
    """Peak MiB of a training step, from a new process; None off Linux."""
    if not os.path.exists("/proc/self/clear_refs"):
        return None
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.memory",
            layer,
            "/".join(map(str, size)),
            side,
        ],
        env={**os.environ, **ENVIRONMENT, "KERAS_BACKEND": backend},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_mib"]


def _status_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def main(argv):
    layer, size, side = argv
    import keras
    import numpy as np

    import keras_recurrent as kr
    from benchmarks.models import build_model, resolve_size

    size = resolve_size(size)
    batch, steps, features, _ = size
    model = build_model(keras, kr, layer, size, "auto", side)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, steps, features)).astype("float32")
    y = rng.normal(size=(batch, 1)).astype("float32")
    for _ in range(2):
        model.train_on_batch(x, y)
    rises = []
    for _ in range(3):
        _settle()
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        start = _status_kib("VmRSS")
        model.train_on_batch(x, y)
        rises.append((_status_kib("VmHWM") - start) / 1024)
    print(json.dumps({"peak_mib": statistics.median(rises)}))


def _settle(timeout=2.0, interval=0.02):
    """Waits until the last step's memory has gone back to the system.

    JAX, for one, frees a step's buffers on a thread of its own, after
    ``train_on_batch`` has returned; on a busy machine they can still be
    resident when the next step starts, which then reuses them and shows
    no rise at all. Resident memory that has stopped falling for a few
    readings is taken as settled.
    """
    gc.collect()
    deadline = time.monotonic() + timeout
    last, steady = _status_kib("VmRSS"), 0
    while steady < 5 and time.monotonic() < deadline:
        time.sleep(interval)
        now = _status_kib("VmRSS")
        steady = steady + 1 if now >= last else 0
        last = min(last, now)


if __name__ == "__main__":
    main(sys.argv[1:])

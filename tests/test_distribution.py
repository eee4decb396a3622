"""Data-parallel training over two CPU devices equals single-device training.

A model with every layer trains for a few steps with the same global batch,
the same initial weights and no randomness, once on one device and once
split over two; the weights must end up equal to float32 rounding (the two
replicas' gradients are summed in another order). Each run needs its
devices configured before the backend starts, so it runs in a fresh
process:

- TensorFlow: ``tf.distribute.MirroredStrategy`` over two logical CPU
  devices (``tf.config.set_logical_device_configuration``);
- JAX: ``keras.distribution.DataParallel`` over two host devices
  (``XLA_FLAGS=--xla_force_host_platform_device_count=2``).
"""

import json
import textwrap

import keras
import numpy as np
import pytest
from helpers import run_fresh

BACKEND = keras.backend.backend()

# Shared by both scripts: the data, the model and the training loop.
COMMON = textwrap.dedent(
    """
    import json
    import sys
    from pathlib import Path

    import keras
    import numpy as np

    import keras_recurrent as kr

    folder = Path(sys.argv[1])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 7, 3)).astype("float32")
    x[::4, 5:] = 0.0  # some right-padded sequences, masked below
    y = rng.normal(size=(32, 2)).astype("float32")


    def build():
        inputs = keras.Input((7, 3))
        masked = keras.layers.Masking(0.0)(inputs)
        h = kr.LSTM(6, return_sequences=True)(masked)  # peepholes on
        h = keras.layers.Bidirectional(kr.GRU(4, return_sequences=True))(h)
        h = kr.SimpleRNN(5)(h)
        return keras.Model(inputs, keras.layers.Dense(2)(h))


    keras.utils.set_random_seed(1)
    initial = build().get_weights()


    def train():
        model = build()
        model.set_weights(initial)
        # Plain SGD: an error in how the replicas' gradients are combined
        # (a sum where a mean belongs) shows in the weights; Adam hides it.
        model.compile(keras.optimizers.SGD(0.05, momentum=0.9), "mse")
        # Global batch 16: two steps per epoch, three epochs.
        model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
        return model
    """
)

TENSORFLOW_SCRIPT = (
    textwrap.dedent(
        """
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    """
    )
    + COMMON
    + textwrap.dedent(
        """
    single = train()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = train()
    np.savez(folder / "single.npz", *single.get_weights())
    np.savez(folder / "split.npz", *mirrored.get_weights())
    np.savez(folder / "initial.npz", *initial)
    replicas = strategy.num_replicas_in_sync
    (folder / "info.json").write_text(json.dumps({"replicas": replicas}))
    """
    )
)

JAX_SCRIPT = COMMON + textwrap.dedent(
    """
    import jax

    single = train()
    distribution = keras.distribution.DataParallel(devices=jax.devices())
    keras.distribution.set_distribution(distribution)
    parallel = train()
    np.savez(folder / "single.npz", *single.get_weights())
    np.savez(folder / "split.npz", *parallel.get_weights())
    np.savez(folder / "initial.npz", *initial)
    kernel = parallel.layers[2].cell.kernel.value
    info = {
        "replicas": len(jax.devices()),
        "kernel_devices": len(kernel.sharding.device_set),
    }
    (folder / "info.json").write_text(json.dumps(info))
    """
)


def _load(path):
    with np.load(path) as saved:
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]


def _run(script, folder, env):
    run_fresh(["-c", script, str(folder)], env=env, cwd=folder, timeout=600)
    single = _load(folder / "single.npz")
    split = _load(folder / "split.npz")
    initial = _load(folder / "initial.npz")
    assert len(single) == len(split) == len(initial) > 0
    for a, b, start in zip(single, split, initial):
        assert not np.allclose(a, start)  # training moved every weight
        np.testing.assert_allclose(b, a, atol=1e-5, rtol=1e-5)
    return json.loads((folder / "info.json").read_text())


@pytest.mark.skipif(
    BACKEND != "tensorflow", reason="tf.distribute is TensorFlow's; runs there"
)
def test_mirrored_strategy_on_two_cpus_equals_one_device(tmp_path):
    info = _run(TENSORFLOW_SCRIPT, tmp_path, {"KERAS_BACKEND": "tensorflow"})
    assert info["replicas"] == 2


@pytest.mark.skipif(
    BACKEND != "jax", reason="keras.distribution runs on JAX; runs there"
)
def test_data_parallel_on_two_host_devices_equals_one_device(tmp_path):
    env = {
        "KERAS_BACKEND": "jax",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
    }
    info = _run(JAX_SCRIPT, tmp_path, env)
    assert info == {"replicas": 2, "kernel_devices": 2}

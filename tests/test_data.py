"""sliding_windows: checked against a hand loop and Keras's own windowing."""

import re

import keras
import numpy as np
import pytest

from keras_recurrent.data import sliding_windows


def windows_by_hand(series, input_steps, horizon, start, stop, stride):
    valid = [
        t
        for t in range(len(series))
        if t >= input_steps and t >= start and t + horizon <= stop
    ]
    ts = valid[::stride]
    xs = [series[t - input_steps : t] for t in ts]
    ys = [series[t : t + horizon] for t in ts]
    return np.array(xs), np.array(ys), np.array(ts)


@pytest.mark.parametrize(
    "input_steps, horizon, start, stop, stride",
    [
        (3, 1, None, None, 1),
        (5, 4, None, None, 2),
        (4, 2, 10, None, 1),  # inputs reach back before start
        (4, 3, None, 20, 3),
        (2, 2, 7, -5, 1),
        (1, 1, 0, 30, 5),
    ],
)
def test_windows_equal_a_hand_loop(input_steps, horizon, start, stop, stride):
    series = np.random.default_rng(0).normal(size=(30, 2))
    x, y, index = sliding_windows(
        series,
        input_steps,
        horizon,
        start=start,
        stop=stop,
        stride=stride,
        return_index=True,
    )
    lo = 0 if start is None else start
    hi = 30 if stop is None else stop % 30 if stop < 0 else stop
    x_ref, y_ref, t_ref = windows_by_hand(series, input_steps, horizon, lo, hi, stride)
    np.testing.assert_array_equal(index, t_ref)
    np.testing.assert_array_equal(x, x_ref)
    np.testing.assert_array_equal(y, y_ref)
    assert x.shape == (len(t_ref), input_steps, 2)
    assert y.shape == (len(t_ref), horizon, 2)


def test_one_dimensional_series_gets_a_feature_axis_and_flat_targets():
    x, y = sliding_windows(np.arange(10.0), input_steps=4, horizon=3)
    assert x.shape == (4, 4, 1) and y.shape == (4, 3)
    np.testing.assert_array_equal(x[1, :, 0], [1, 2, 3, 4])
    np.testing.assert_array_equal(y[1], [5, 6, 7])


def test_matches_keras_timeseries_dataset_for_one_step_ahead():
    series = np.random.default_rng(1).normal(size=(50, 3)).astype("float32")
    x, y = sliding_windows(series, input_steps=7, targets=series[:, 0])
    dataset = keras.utils.timeseries_dataset_from_array(
        series[:-1], series[7:, 0], sequence_length=7, batch_size=100, shuffle=False
    )
    (x_keras, y_keras) = next(iter(dataset))
    np.testing.assert_array_equal(x, np.asarray(x_keras))
    np.testing.assert_array_equal(y[:, 0], np.asarray(y_keras))


def test_split_by_time_keeps_validation_targets_out_of_training():
    series = np.arange(100.0)
    split = 70
    x_train, y_train = sliding_windows(series, 10, 5, stop=split)
    x_val, y_val = sliding_windows(series, 10, 5, start=split)
    assert y_train.max() < split <= y_val.min()
    assert x_train.max() < split - 1 + 1e-9  # inputs precede their targets
    # Every target step from 10 on appears in some example, on one side only.
    assert set(y_train.ravel()) | set(y_val.ravel()) == set(series[10:])
    assert x_val.min() == split - 10  # the first forecast looks back into train


def test_separate_targets_are_windowed_alike():
    series = np.random.default_rng(2).normal(size=(20, 4))
    x, y = sliding_windows(series, 5, 2, targets=series[:, 1])
    x_all, y_all = sliding_windows(series, 5, 2)
    np.testing.assert_array_equal(x, x_all)
    np.testing.assert_array_equal(y, y_all[:, :, 1])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input_steps": 0}, "Received: input_steps=0"),
        ({"input_steps": 2.5}, "Received: input_steps=2.5"),
        ({"horizon": True}, "Received: horizon=True"),
        ({"stride": -1}, "Received: stride=-1"),
        ({"start": 31}, "Received: start=31"),
        ({"stop": 1.5}, "Received: stop=1.5"),
        ({"series": np.zeros((30, 2, 2))}, "Received: series.shape=(30, 2, 2)"),
        ({"targets": np.zeros(29)}, "Received: targets.shape=(29,)"),
        ({"input_steps": 29, "horizon": 2}, "No example fits"),
        ({"start": 20, "stop": 20}, "No example fits"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    arguments = {"series": np.zeros(30), "input_steps": 3, **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        sliding_windows(**arguments)

"""Forecasting examples cut from a time series, split by time without leakage.

:func:`sliding_windows` turns one long series into ``(inputs, targets)``
pairs for a recurrent model: ``input_steps`` past steps in, the next
``horizon`` steps out. Its ``start`` and ``stop`` select windows by where
their *targets* lie, so a train/validation split at time ``split`` is::

    x_train, y_train = sliding_windows(series, 48, 12, stop=split)
    x_val, y_val = sliding_windows(series, 48, 12, start=split)

No validation target is ever a training target or a training input's
future; validation inputs may reach back before ``split``, as a forecast made
at time ``split`` would.
"""

import numbers

import numpy as np


def _check_count(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(
            f"Argument `{name}` must be a positive integer. Received: {name}={value!r}"
        )
    return int(value)


def _check_time_index(name, value, length):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(
            f"Argument `{name}` must be an integer time index or None. "
            f"Received: {name}={value!r}"
        )
    value = int(value)
    # Negative indices count from the end, as in slicing.
    resolved = value + length if value < 0 else value
    if not 0 <= resolved <= length:
        raise ValueError(
            f"Argument `{name}` must lie within the series of {length} steps. "
            f"Received: {name}={value}"
        )
    return resolved


def sliding_windows(
    series,
    input_steps,
    horizon=1,
    *,
    targets=None,
    start=None,
    stop=None,
    stride=1,
    return_index=False,
):
    """Cuts a series into forecasting examples: a window of inputs, the steps after.

    Example ``i``, whose first target step is ``t``, has::

        inputs[i]  = series[t - input_steps : t]
        targets[i] = targets[t : t + horizon]      # `series` if not given

    Args:
        series: array of shape ``(time,)`` or ``(time, features)``.
        input_steps: positive integer, number of past steps each example sees.
        horizon: positive integer, number of future steps each example predicts.
        targets: optional array with the same first axis as ``series``, the
            values to predict (for instance one column of a multivariate
            series). Default: ``series`` itself.
        start, stop: time indices (negative ones count from the end); only
            examples whose target steps all lie in ``[start, stop)`` are
            made. Inputs may lie before ``start``. Default: the whole series.
        stride: positive integer, steps between the first target steps of
            consecutive examples.
        return_index: whether to return, too, each example's first target
            step ``t``.

    Returns:
        ``(inputs, targets)``, or ``(inputs, targets, index)`` with
        ``return_index=True``: ``inputs`` of shape ``(n, input_steps,
        features)`` (a 1-D series gets one feature), ``targets`` of shape
        ``(n, horizon)`` for 1-D targets and ``(n, horizon, features)``
        otherwise, ``index`` an integer array of shape ``(n,)``. The arrays
        are copies in the dtype of ``series`` and ``targets``.

    Raises:
        ValueError: on a bad argument, or when no example fits.

    Example:

    >>> x, y = sliding_windows(np.arange(6.0), input_steps=3, horizon=2)
    >>> x[:, :, 0]
    array([[0., 1., 2.],
           [1., 2., 3.]])
    >>> y
    array([[3., 4.],
           [4., 5.]])
    """
    series = np.asarray(series)
    if series.ndim not in (1, 2):
        raise ValueError(
            "Argument `series` must have shape (time,) or (time, features). "
            f"Received: series.shape={series.shape}"
        )
    targets = series if targets is None else np.asarray(targets)
    if targets.ndim not in (1, 2) or targets.shape[0] != series.shape[0]:
        raise ValueError(
            "Argument `targets` must have shape (time,) or (time, features) "
            f"with the {series.shape[0]} time steps of `series`. "
            f"Received: targets.shape={targets.shape}"
        )
    input_steps = _check_count("input_steps", input_steps)
    horizon = _check_count("horizon", horizon)
    stride = _check_count("stride", stride)
    length = series.shape[0]
    start = _check_time_index("start", start, length) or 0
    stop = _check_time_index("stop", stop, length)
    stop = length if stop is None else stop

    first = np.arange(max(start, input_steps), stop - horizon + 1, stride)
    if first.size == 0:
        raise ValueError(
            f"No example fits: each needs input_steps={input_steps} steps "
            f"before its targets and horizon={horizon} target steps in "
            f"[start, stop) = [{start}, {stop}) of a series of {length} steps."
        )
    inputs = series[first[:, None] + np.arange(-input_steps, 0)]
    if inputs.ndim == 2:
        inputs = inputs[..., None]
    windows = (inputs, targets[first[:, None] + np.arange(horizon)])
    return (*windows, first) if return_index else windows

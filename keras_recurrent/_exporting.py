"""The export blocks: which format the layers are being traced for.

:func:`keras_recurrent.loops.run` reads them to choose TensorFlow's loop
(see ``keras_recurrent.loops.graph``); they live apart from the loops so
that a loop can read them without importing the module that chooses it.
"""

import contextlib

_formats = []  # the format of each open exporting() block, innermost last

#: What ``exporting(format=...)`` accepts (None: any converter).
EXPORT_FORMATS = (None, "onnx", "litert", "tf_saved_model")


@contextlib.contextmanager
def exporting(format=None):
    """Traces the layers for export to another format while the block runs.

    On TensorFlow the layers traced inside the block (by ``model.export``,
    ``tf.function`` or a converter) run the ``"graph"`` loop, a plain
    ``tf.while_loop`` that tf2onnx converts to an ONNX ``Loop`` and the
    TFLite converter to a ``WHILE`` of builtin ops, with a dynamic batch
    size; outside it they run the XLA-compiled loop, which a SavedModel
    serves as it is, tf2onnx converts to a ``Loop`` only through a handler
    of this package that inlines its call, and the TFLite converter reads
    with a fixed batch size only. Only traces made
    inside the block change: a function traced before it (a model's
    ``predict`` function, say) keeps its loop. On JAX and PyTorch it changes
    nothing: their exporters read the loops as they are.

    Args:
        format: the format the traces are for, as ``model.export`` names
            it. With ``"onnx"``, an unmasked plain LSTM or GRU (one whose
            cell computes PyTorch's and ONNX's equations) traces its step as
            tf2onnx recognises it, and becomes ONNX's own ``LSTM`` or
            ``GRU`` operator instead of a ``Loop``, an unmasked LSTM with
            peepholes that does not return its states becomes ONNX's
            ``LSTM`` with its ``P`` input, and an unmasked SimpleRNN
            ONNX's ``RNN``. The step tf2onnx recognises
            writes its outputs to a tensor list, which TFLite runs several
            times more slowly: the other formats (and ``None``) keep the
            loop that serves every converter.

    Example:

    >>> with keras_recurrent.exporting("onnx"):
    ...     model.export("model.onnx", format="onnx")
    """
    if format not in EXPORT_FORMATS:
        raise ValueError(
            f"`format` must be one of {EXPORT_FORMATS}. Received: format={format!r}"
        )
    _formats.append(format)
    try:
        yield
    finally:
        _formats.pop()


def export_format():
    """The ``format`` of the innermost open :func:`exporting` block (None
    also when no block is open)."""
    return _formats[-1] if _formats else None


def active():
    """Whether an :func:`exporting` block is open."""
    return bool(_formats)

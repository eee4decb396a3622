"""The compiled loops of a backend, made once per cell and options, and
shared between cells of one step where the backend asks for it.

A cell whose step is defined by its class and config (``step_from_config``)
shares its compiled loops with every cell like it, so that models of the
same architecture (another seed, a sweep, a test) compile once: they are
traced from a copy of the cell made from its config, which the cache keeps,
never from a model's own cell, which it would keep alive. Any other cell
has loops of its own, traced through a weak reference to it. Either way the
weights are inputs of the loops, never part of them.
"""

import json
import weakref

from keras_recurrent._cell import declared

_TEMPLATES = {}  # (class, config) -> the cell the shared loops are traced from
_KEYS = weakref.WeakKeyDictionary()  # cell -> its shared key, worked out once

#: The functions a cell's step calls, which its config names but does not hold.
_STEP_FUNCTIONS = ("activation", "recurrent_activation")


class Loops:
    """One backend's compiled loops: :meth:`get` makes them once. With
    ``share_alike`` False every cell has loops of its own: working out
    whether two cells are alike reads their configs, which on any backend
    imports TensorFlow when it is installed (Keras's serialization asks
    for it)."""

    def __init__(self, share_alike=True):
        self._share_alike = share_alike
        self._shared = {}  # (class, config, options) -> loops
        self._own = weakref.WeakKeyDictionary()  # cell -> {options: loops}

    def get(self, cell, options, build):
        """The loops for ``cell`` and the hashable ``options``: those made
        before, or ``build(cell_ref)``, where ``cell_ref()`` returns the cell
        to trace from (``cell`` itself, or a cell like it)."""
        shared_key = _shared_key(cell) if self._share_alike else None
        if shared_key is not None:
            cache, key = self._shared, (*shared_key, options)
        else:
            cache, key = self._own.setdefault(cell, {}), options
        if key not in cache:
            if shared_key is not None:
                template = _TEMPLATES[shared_key]

                def cell_ref():
                    return template

            else:
                # A weak reference, so that the loops do not keep the cell alive.
                cell_ref = weakref.ref(cell)
            cache[key] = build(cell_ref)
        return cache[key]


def _shared_key(cell):
    """What identifies ``cell``'s step among cells that share compiled loops,
    or None for a cell that has loops of its own."""
    if cell not in _KEYS:
        key = _config_key(cell)
        _KEYS[cell] = key if key is not None and _shares(cell, key) else None
    return _KEYS[cell]


def _config_key(cell):
    if not declared(cell, "step_from_config", False):
        return None
    config = dict(cell.get_config())
    config.pop("name", None)
    # Objects without a config (a function passed as activation, say) show
    # as their repr, which names them: cells share only with their own kind.
    return type(cell), json.dumps(config, sort_keys=True, default=repr)


def _shares(cell, key):
    """Whether ``cell`` can run the loops shared under ``key``: the cell they
    are traced from, rebuilt from a config, must call the very functions
    ``cell`` calls. A config names a function, it does not hold it: two
    closures of one name have one config, and a function Keras cannot find
    by its name does not rebuild at all."""
    if key not in _TEMPLATES:
        try:
            _TEMPLATES[key] = type(cell).from_config(cell.get_config())
        except (TypeError, ValueError):
            return False
    template = _TEMPLATES[key]
    return all(
        getattr(template, name, None) is getattr(cell, name, None)
        for name in _STEP_FUNCTIONS
    )

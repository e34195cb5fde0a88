"""Read pickled array containers (the Point-BERT few-shot folds) without running code from the file.

A pickle is a program: unpickling calls whatever importable callable it names. The few-shot folds are
pickles of plain data (a dict of lists of (points array, label, label) tuples), so the only callables
they legitimately need are numpy's array and scalar rebuilders. `loads_arrays` allows exactly those and
refuses every other global by name, before anything is called; arrays of Python objects are refused too,
since their elements would be further pickled objects.
"""

from __future__ import annotations

import codecs
import io
import pickle
from typing import Any

import numpy as np

# The rebuild functions numpy's own pickles name, taken from numpy's reducers so they are the real
# objects of the installed numpy (1.x pickles say numpy.core, 2.x pickles say numpy._core).
_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]
_SCALAR = np.float32(0).__reduce__()[0]
_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]  # protocol-5 pickles of arrays
_ALLOWED: dict[tuple[str, str], Any] = {
    **{(module, "_reconstruct"): _RECONSTRUCT for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "scalar"): _SCALAR for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "_frombuffer"): _FROMBUFFER for module in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # protocol-2 pickles of `bytes` (e.g. array data written by Python 2) go through codecs.encode
    ("_codecs", "encode"): codecs.encode,
}


class RefusedPickle(ValueError):
    """A pickle that needs something other than numpy arrays, numbers, strings and containers."""


class _ArrayUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, source: str) -> None:
        super().__init__(io.BytesIO(data), encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is None:
            raise RefusedPickle(
                f"{self.source}: refusing to unpickle {module}.{name}: only numpy arrays, numbers, strings, "
                "lists, tuples and dicts are accepted from pickled data files")
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedPickle(f"{self.source}: refusing a pickle with persistent ids (not a plain data file)")


def _check_no_objects(value: Any, source: str) -> None:
    if isinstance(value, np.ndarray) and value.dtype.hasobject:
        raise RefusedPickle(f"{source}: refusing an array of Python objects (dtype {value.dtype})")
    if isinstance(value, dict):
        for item in value.values():
            _check_no_objects(item, source)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_no_objects(item, source)


def loads_arrays(data: bytes, source: str) -> Any:
    """Unpickle `data` allowing only numpy arrays/scalars and builtin containers; `source` names the file."""
    try:
        value = _ArrayUnpickler(data, source).load()
    except RefusedPickle:
        raise
    except Exception as err:  # truncated or corrupt streams
        raise RefusedPickle(f"{source}: not a readable pickle ({type(err).__name__}: {err})") from None
    _check_no_objects(value, source)
    return value

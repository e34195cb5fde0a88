"""Binary PLY bodies: each element is `count` packed rows, a row its properties in declared order.

A row of scalars has one size, so such an element is one structured numpy view of the bytes. A row with
lists is as long as its list counts make it: when every row's lists have the first row's lengths (a
triangle mesh) the element is still one structured view, with every row's counts checked; otherwise
(mixed polygon sizes) a plain loop steps from count to count to find where each row starts, about
0.1 microseconds a row, and the properties are then gathered in numpy from those starts.
"""

from __future__ import annotations

import struct
from array import array
from bisect import bisect_right
from typing import TYPE_CHECKING

import numpy as np

from sharding.decoders.polygons import broken

if TYPE_CHECKING:
    from sharding.decoders.ply import Element

_STRUCT = {"i1": "b", "u1": "B", "i2": "h", "u2": "H", "i4": "i", "u4": "I"}


def read_binary(data: bytes, offset: int, elements: list[Element], wanted: dict[str, tuple[str, ...]],
                order: str, name: str) -> dict[str, dict]:
    """The `wanted` properties of each wanted element of the body that starts at `offset`, in byte `order`:
    a scalar property as an array, a list property as (items, length) with one row of items per element
    row when every row's list has that length, else as (flat items, per-row lengths)."""
    parsed: dict[str, dict] = {}
    for element in elements:
        if element.count == 0 or not element.properties:
            continue  # a row of no properties takes no bytes
        columns, offset = _element(data, offset, element, wanted.get(element.name, ()), order, name)
        if element.name in wanted:
            parsed[element.name] = columns
    return parsed


def _element(data: bytes, offset: int, element: Element, keys: tuple[str, ...], order: str,
             name: str) -> tuple[dict, int]:
    """The element's properties named in `keys`, and the offset after its rows."""
    lengths = _first_row_lengths(data, offset, element, order)
    if lengths is not None:
        fields = []
        for index, (prop, length) in enumerate(zip(element.properties, lengths)):
            if prop.count_type is not None:
                fields.append((f"n{index}", order + prop.count_type))
            fields.append((f"p{index}", order + prop.type, (length,) if prop.count_type else ()))
        dtype = np.dtype(fields)
        available = (len(data) - offset) // dtype.itemsize
        if available >= element.count:
            rows = np.frombuffer(data, dtype=dtype, count=element.count, offset=offset)
            lists = [(index, length) for index, length in enumerate(lengths) if length is not None]
            if all((rows[f"n{index}"] == length).all() for index, length in lists):
                columns = {prop.name: rows[f"p{index}"] if prop.count_type is None
                           else (rows[f"p{index}"], lengths[index])
                           for index, prop in enumerate(element.properties) if prop.name in keys}
                return columns, offset + element.count * dtype.itemsize
        elif not any(prop.count_type for prop in element.properties):
            raise broken(name, f"the header declares {element.count} {element.noun()}, the data holds {available}")
    starts, end = _row_starts(data, offset, element, order, name)
    return _gather(data, starts, element, keys, order), end


def _first_row_lengths(data: bytes, offset: int, element: Element, order: str) -> list[int | None] | None:
    """The list lengths of the row at `offset` (None for a scalar property); None if that row is not whole."""
    lengths: list[int | None] = []
    for prop in element.properties:
        if prop.count_type is None:
            offset += np.dtype(prop.type).itemsize
            lengths.append(None)
            continue
        size = np.dtype(prop.count_type).itemsize
        if offset + size > len(data):
            return None
        length = int(np.frombuffer(data, dtype=order + prop.count_type, count=1, offset=offset)[0])
        offset += size + length * np.dtype(prop.type).itemsize
        if length < 0:
            return None
        lengths.append(length)
    return lengths if offset <= len(data) else None


def _row_starts(data: bytes, offset: int, element: Element, order: str, name: str) -> tuple[np.ndarray, int]:
    """Where each row of an element with lists starts, and the offset after its last row.

    The header's count is held to the bytes first (a row is at least its scalars and list counts), so the
    loop is bounded by the file's size whatever the header claims.
    """
    steps = []  # per list: (bytes before its count, count type, item size)
    gap = 0
    for prop in element.properties:
        if prop.count_type is None:
            gap += np.dtype(prop.type).itemsize
        else:
            steps.append((gap, prop.count_type, np.dtype(prop.type).itemsize))
            gap = 0
    shortest = sum(np.dtype(p.count_type or p.type).itemsize for p in element.properties)
    most = (len(data) - offset) // shortest
    if element.count > most:
        raise broken(name, f"the header declares {element.count} {element.noun()}, the data holds "
                           f"{'at most ' if most else ''}{most}")
    starts = array("q")
    append = starts.append
    position = offset
    whole = True
    try:
        if len(steps) == 1 and steps[0][1] == "u1":  # one list with a byte count: faces, the common case
            before, _, size = steps[0]
            fixed = before + 1 + gap
            for _ in range(element.count):
                append(position)
                position += fixed + data[position + before] * size
        else:
            readers = [(before, struct.Struct(order + _STRUCT[kind]).unpack_from, np.dtype(kind).itemsize, size)
                       for before, kind, size in steps]
            for row in range(element.count):
                append(position)
                for before, unpack, count_size, size in readers:
                    (length,) = unpack(data, position + before)
                    if length < 0:
                        raise broken(name, f"{element.row(row)} has a list of negative length")
                    position += before + count_size + length * size
                position += gap
    except (IndexError, struct.error):  # a count past the end of the data
        whole = False
    if not whole or position > len(data):
        held = bisect_right(starts, len(data), 1) - 1  # rows that end inside the data
        raise broken(name, f"the header declares {element.count} {element.noun()}, the data holds {held}")
    return np.frombuffer(starts, dtype=np.int64), position


def _gather(data: bytes, starts: np.ndarray, element: Element, keys: tuple[str, ...], order: str) -> dict:
    """The properties named in `keys` of the rows that begin at `starts`, lists as (flat items, counts)."""
    columns: dict = {}
    position = starts
    for prop in element.properties:
        size = np.dtype(prop.type).itemsize
        if prop.count_type is None:
            if prop.name in keys:
                columns[prop.name] = _at(data, position, order + prop.type)
            position = position + size
            continue
        counts = _at(data, position, order + prop.count_type).astype(np.int64)
        position = position + np.dtype(prop.count_type).itemsize
        if prop.name in keys:
            first = position - size * (np.cumsum(counts) - counts)
            places = np.repeat(first, counts) + size * np.arange(int(counts.sum()))
            columns[prop.name] = (_at(data, places, order + prop.type), counts)
        position = position + counts * size
    return columns


def _at(data: bytes, positions: np.ndarray, code: str) -> np.ndarray:
    """The values of numpy type `code` that start at the byte `positions` of `data`, aligned or not."""
    size = np.dtype(code).itemsize
    every_byte = np.ndarray((max(len(data) - size + 1, 0),), dtype=code, buffer=data, strides=(1,))
    return every_byte[positions]

"""Exact sums of int64 money and points columns: numpy and pandas wrap silently on overflow.

A day holds many obligations of up to `clearing.core.money.MAX_AMOUNT` each, so a column sum can pass
2^63 even though every value fits in int64. The cheap proof `max |v| x n < 2^63` keeps the usual
case on one vectorised sum; past it every value is split into a high part (v >> 32, below 2^31 in
magnitude) and a low part (v & 0xFFFFFFFF, below 2^32), whose int64 sums cannot overflow for
fewer than 2^31 values, and the two are joined as Python ints.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

INT64_MAX = 2**63 - 1
_SHIFT = 32
_LOW = (1 << _SHIFT) - 1
_MAX_ROWS = 1 << 31
"""Most values one split sum may take: n x 2^32 stays below 2^63."""


def fits_int64_sum(values: npt.NDArray[np.int64]) -> bool:
    """Whether summing `values` (or any subset of them) in int64 provably cannot overflow."""
    n = len(values)
    if n == 0:
        return True
    # abs of int64 min wraps to itself: compare the extremes instead.
    bound = max(-int(values.min()), int(values.max()))
    return bound * n <= INT64_MAX


def exact_sum(values: Any) -> int:
    """The exact sum of an int64 (or Python-int object) array as a Python int."""
    array = np.asarray(values)
    if array.dtype != np.int64:
        return sum((int(v) for v in array.tolist()), 0)
    if fits_int64_sum(array):
        return int(array.sum())
    total = 0
    for lo in range(0, len(array), _MAX_ROWS):
        part = array[lo : lo + _MAX_ROWS]
        total += (int((part >> _SHIFT).sum()) << _SHIFT) + int((part & _LOW).sum())
    return total


def exact_group_sums(
    frame: pd.DataFrame, by: Sequence[str], columns: Sequence[str]
) -> tuple[list[Any], dict[str, list[int]], list[int]]:
    """Per group of `by` (first-seen order): the group keys, exact sums of `columns` as Python
    ints, and the row counts. int64 columns only; one groupby whichever path is taken."""
    n = len(frame)
    arrays = {c: frame[c].to_numpy() for c in columns}
    for name, array in arrays.items():
        if array.dtype != np.int64:
            raise TypeError(f"column {name} is {array.dtype}, not int64")
    if n >= _MAX_ROWS:
        raise ValueError(f"{n} rows in one frame: split it below 2^31 rows")
    keys = {c: frame[c].to_numpy() for c in by}
    wide = [c for c in columns if not fits_int64_sum(arrays[c])]
    data: dict[str, Any] = dict(keys)
    for name, array in arrays.items():
        if name in wide:
            data[f"{name}\0hi"] = array >> _SHIFT
            data[f"{name}\0lo"] = array & _LOW
        else:
            data[name] = array
    data["\0count"] = np.ones(n, dtype=np.int64)
    grouped = pd.DataFrame(data, copy=False).groupby(list(by), sort=False, observed=True).sum()
    sums: dict[str, list[int]] = {}
    for name in columns:
        if name in wide:
            highs = grouped[f"{name}\0hi"].tolist()
            lows = grouped[f"{name}\0lo"].tolist()
            sums[name] = [(h << _SHIFT) + lo for h, lo in zip(highs, lows, strict=True)]
        else:
            sums[name] = grouped[name].tolist()
    return grouped.index.tolist(), sums, grouped["\0count"].tolist()

"""The input contract of settlement: obligation lines from the ledger and the parties they name."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from decimal import Decimal
from operator import attrgetter
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from clearing.core.kinds import FEE_EVENTS, ObligationEvent, OrgKind

EVENT_TYPES = tuple(event.value for event in ObligationEvent)
"""The ledger's obligation events, in the order statements list them (plain text for pandas)."""
# Fee lines belong to the transaction booked under the same reference; statements fold them in.
FEE_EVENT_TYPES = frozenset(event.value for event in FEE_EVENTS)

PartyKind = OrgKind
"""What a party is (the organisation's kind)."""


@dataclass(frozen=True, slots=True)
class ObligationLine:
    """One money obligation between two parties, as booked by one journal entry."""

    reference: str
    seq: int
    original_reference: str | None
    event_type: str
    payer: str
    payee: str
    currency: str
    amount: int
    """Minor units of `currency` (fen for CNY), > 0."""
    program: str | None
    points: int | None
    """Whole points of `program` behind the obligation."""
    point_value: Decimal | None
    """Money per point in major units, e.g. Decimal("0.005")."""
    point_value_version: int | None
    booked_at: datetime
    """Timezone-aware, UTC."""


@dataclass(frozen=True, slots=True)
class Party:
    """Display descriptor of an organisation taking part in a settlement batch."""

    id: str
    name: str
    kind: PartyKind
    currency: str


LINE_COLUMNS = tuple(f.name for f in fields(ObligationLine))
"""Columns of a frame of obligation lines: the ObligationLine field names, in field order."""
_TEXT_COLUMNS = ("reference", "event_type", "payer", "payee", "currency")
_OPTIONAL_TEXT = ("original_reference", "program")


class LineFrameError(ValueError):
    """A frame of lines that cannot be read exactly (missing column, float money, naive time)."""


def lines_to_frame(lines: Sequence[ObligationLine]) -> pd.DataFrame:
    """`lines` as a canonical frame (see `normalize_frame`), converted once."""
    if not lines:
        return normalize_frame(pd.DataFrame({c: [] for c in LINE_COLUMNS}))
    cols = list(zip(*map(attrgetter(*LINE_COLUMNS), lines), strict=True))
    data: dict[str, Any] = dict(zip(LINE_COLUMNS, cols, strict=True))
    # np.array(..., int64) raises OverflowError instead of wrapping or falling back to float.
    data["seq"] = np.array(data["seq"], dtype=np.int64)
    data["amount"] = np.array(data["amount"], dtype=np.int64)
    data["points"] = np.array([p or 0 for p in data["points"]], dtype=np.int64)
    for name in ("original_reference", "program", "point_value", "point_value_version"):
        data[name] = np.array([_text_of(v) for v in data[name]], dtype=object)
    booked = data["booked_at"]
    if any(b.tzinfo is None for b in booked):
        raise LineFrameError("naive booked_at (need timezone-aware)")
    data["booked_at"] = pd.DatetimeIndex(
        [b.astimezone(UTC).replace(tzinfo=None) for b in booked], dtype="datetime64[us]"
    ).tz_localize(UTC)
    return normalize_frame(pd.DataFrame(data))


def _int64(series: pd.Series, name: str, *, nulls_as_zero: bool) -> npt.NDArray[np.int64]:
    if series.dtype == np.int64:
        return series.to_numpy()
    if len(series) == 0:
        return np.zeros(0, dtype=np.int64)
    if nulls_as_zero:
        series = series.where(series.notna(), 0)
    if series.dtype.kind == "f":
        # Money and points are never read through a float; refuse rather than round.
        raise LineFrameError(f"column {name} is floating point; read it as int64 or Int64")
    if isinstance(series.dtype, pd.Int64Dtype) or series.dtype.kind in "iu":
        if series.isna().any():
            raise LineFrameError(f"column {name} has missing values")
        return series.to_numpy(dtype=np.int64)
    try:
        return np.array(series.tolist(), dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise LineFrameError(f"column {name} is not a column of int64 values: {exc}") from None


def _text_of(value: object) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, float) and value.is_integer():
        # an integer column with missing values, widened to float by pandas (versions)
        return str(int(value))
    return str(value)


def _text(series: pd.Series) -> pd.Series:
    """A text column as object str, "" for missing; mapped once per distinct value."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        cats = [_text_of(c) for c in series.cat.categories.tolist()]
        codes = series.cat.codes.to_numpy()
        values = np.array([*cats, ""], dtype=object)[np.where(codes < 0, len(cats), codes)]
        return pd.Series(values, index=series.index, dtype=object)
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    texts = np.array([*(_text_of(u) for u in uniques), ""], dtype=object)
    return pd.Series(texts[codes], index=series.index, dtype=object)


def normalize_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The canonical form of a frame of lines, as settlement computes on it.

    Columns are LINE_COLUMNS. Text columns become object str ("" where the line has None);
    `point_value` becomes its text as written in files (a Decimal via format(v, "f"), a str
    kept as is); `point_value_version` text too; seq/amount/points int64 (points None -> 0),
    never through float; `booked_at` tz-aware datetime64[us, UTC]. A frame already in this
    form is returned with its columns unconverted.
    """
    missing = [c for c in LINE_COLUMNS if c not in frame.columns]
    if missing:
        raise LineFrameError(f"frame lacks columns {missing}")
    out: dict[str, Any] = {}
    for name in _TEXT_COLUMNS + _OPTIONAL_TEXT + ("point_value", "point_value_version"):
        col = frame[name]
        plain = col.dtype == object or isinstance(col.dtype, pd.StringDtype)
        if plain and name not in ("point_value", "point_value_version") and not col.hasnans:
            out[name] = col.to_numpy(dtype=object)
        else:
            out[name] = _text(col)
    out["seq"] = _int64(frame["seq"], "seq", nulls_as_zero=False)
    out["amount"] = _int64(frame["amount"], "amount", nulls_as_zero=False)
    out["points"] = _int64(frame["points"], "points", nulls_as_zero=True)
    booked = frame["booked_at"]
    if len(booked) == 0:
        booked = pd.Series(pd.DatetimeIndex([], dtype="datetime64[us, UTC]"))
    if not isinstance(booked.dtype, pd.DatetimeTZDtype):
        raise LineFrameError("booked_at must be timezone-aware datetime64 (UTC)")
    index = pd.DatetimeIndex(booked).tz_convert(UTC)
    if index.unit != "us":
        index = index.as_unit("us")
    out["booked_at"] = index
    result = pd.DataFrame({c: _values(out[c]) for c in LINE_COLUMNS}, copy=False)
    result.attrs["normalized"] = True
    return result


def _values(value: Any) -> Any:
    return value.to_numpy() if isinstance(value, pd.Series) else value


def ensure_frame(chunk: Sequence[ObligationLine] | pd.DataFrame) -> pd.DataFrame:
    """A chunk of lines as a canonical frame, converting a list of ObligationLine once."""
    if isinstance(chunk, pd.DataFrame):
        return chunk if chunk.attrs.get("normalized") else normalize_frame(chunk)
    return lines_to_frame(chunk)


def booked_micros(frame: pd.DataFrame) -> npt.NDArray[np.int64]:
    """booked_at of a canonical frame as int64 microseconds since the epoch (UTC)."""
    return pd.DatetimeIndex(frame["booked_at"]).asi8

"""The window leaves the ledger as Parquet: the same lines, checked against the control totals."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine

from clearing.core.db import transaction
from clearing.core.money import MAX_AMOUNT
from clearing.core.timeutil import business_window
from settlement import repository as repo
from settlement.lines import normalize_frame
from settlement.netting import Totals
from settlement.window_export import (
    WindowExportMismatch,
    export_window,
    exported_totals,
    read_window,
    window_path,
)
from tests.settlement.settlement_factories import line
from tests.settlement.settlement_world import DAY2, book_two_days


def _window(engine: Engine) -> tuple[repo.WindowSource, Totals]:
    start, end = business_window(DAY2, "Asia/Shanghai", "00:00")
    with transaction(engine) as session:
        totals = repo.window_totals(session, "CNY", start, end)
    return repo.WindowSource(engine, "CNY", start, end, chunk_rows=3), totals


def _lines(frames: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat([normalize_frame(f) for f in frames], ignore_index=True)


def test_export_holds_the_windows_lines_in_order(engine: Engine, tmp_path: Path) -> None:
    book_two_days(engine)
    source, totals = _window(engine)
    assert totals.count > 3  # several chunks of 3
    target = window_path(tmp_path, "CNY", DAY2)
    assert target == tmp_path / ".window" / "currency=CNY" / f"business_date={DAY2.isoformat()}"

    got = export_window(source(), target, totals)

    assert got == totals
    assert exported_totals(target) == totals
    pd.testing.assert_frame_equal(_lines(list(read_window(target))), _lines(list(source())))
    assert [p.name for p in target.iterdir()] == ["part-00000.parquet"]


def test_export_that_disagrees_with_the_ledger_leaves_nothing(
    engine: Engine, tmp_path: Path
) -> None:
    book_two_days(engine)
    source, totals = _window(engine)
    target = window_path(tmp_path, "CNY", DAY2)
    wrong = Totals(totals.amount + 1, totals.count, totals.points)

    with pytest.raises(WindowExportMismatch, match="control totals"):
        export_window(source(), target, wrong)

    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_parts_split_at_part_rows_and_sum_past_int64(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from settlement import window_export

    monkeypatch.setattr(window_export, "PART_ROWS", 2_000)
    # 9,300 lines of the largest amount sum past 2^63: the check must not wrap.
    lines = [
        line(f"r{n:05d}", 0, "checkout_capture", "issuer", "merchant", MAX_AMOUNT, minute=n % 50)
        for n in range(9_300)
    ]
    lines.sort(key=lambda item: (item.booked_at, item.reference, item.seq))
    expected = Totals(
        amount=sum(item.amount for item in lines),
        count=len(lines),
        points=sum(item.points or 0 for item in lines),
    )
    assert expected.amount > 2**63

    export_window([lines[:5_000], lines[5_000:]], tmp_path / "w", expected)

    monkeypatch.undo()
    assert len(list((tmp_path / "w").glob("part-*.parquet"))) == 5
    assert exported_totals(tmp_path / "w") == expected
    back = _lines(list(read_window(tmp_path / "w")))
    assert back["amount"].tolist() == [MAX_AMOUNT] * len(lines)
    assert back["reference"].tolist() == [item.reference for item in lines]


def test_empty_window_exports_one_empty_part(tmp_path: Path) -> None:
    assert export_window([], tmp_path / "w", Totals(0, 0, 0)) == Totals(0, 0, 0)
    assert [p.name for p in (tmp_path / "w").iterdir()] == ["part-00000.parquet"]
    assert list(read_window(tmp_path / "w")) == []

"""The dashboard's charts, drawn on the server as SVG (matplotlib, Agg): no script in the page.

Text is drawn as paths (matplotlib's default for SVG), so a chart looks the same whatever fonts
the browser has. A figure is made per request with the object API, never pyplot's global
state, so charts drawn on two threads at once do not mix.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from datetime import date
from functools import cache

import matplotlib

matplotlib.use("Agg")

from matplotlib.axes import Axes
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

CHART_CSP = "default-src 'none'; style-src 'unsafe-inline'"
"""matplotlib's SVG styles its elements inline; it holds no script and loads nothing."""
_SIZE = (7.2, 3.0)
_CJK = "Noto Sans CJK SC"
_COLOURS = ("#1f5fbf", "#1e7b34", "#b3561e", "#7a3fb3", "#b3261e", "#5b6475")


def _day(value: date) -> float:
    """A date on matplotlib's date axis (days since its epoch)."""
    return float(date2num(value))  # type: ignore[no-untyped-call]


def _grouped(value: float, _position: object) -> str:
    return f"{int(value):,}"


@cache
def _families() -> list[str]:
    """DejaVu first, then a CJK face where one is installed, for zh-CN legends."""
    from matplotlib import font_manager

    names = {font.name for font in font_manager.fontManager.ttflist}
    return ["DejaVu Sans", _CJK] if _CJK in names else ["DejaVu Sans"]


def _figure() -> Figure:
    matplotlib.rcParams["font.family"] = _families()
    figure = Figure(figsize=_SIZE, layout="constrained")
    figure.patch.set_alpha(0)
    return figure


def _svg(figure: Figure) -> bytes:
    out = io.BytesIO()
    # No date in the file: the same figures give the same bytes.
    figure.savefig(out, format="svg", metadata={"Date": None})
    return out.getvalue()


def _frame(axes: Axes) -> None:
    locator = AutoDateLocator(maxticks=8)  # type: ignore[no-untyped-call]
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    # Points and operations are whole numbers: no tick between two of them.
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.yaxis.set_major_formatter(FuncFormatter(_grouped))
    axes.grid(axis="y", color="#d8dde6", linewidth=0.6)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    axes.tick_params(labelsize=8)


def lines(series: Mapping[str, Sequence[tuple[date, int]]]) -> bytes:
    """One line per series (e.g. each program's closing points per day), as SVG."""
    figure = _figure()
    axes = figure.add_subplot()
    for i, (name, points) in enumerate(series.items()):
        days = [_day(d) for d, _ in points]
        values = [v for _, v in points]
        axes.plot(days, values, label=name, color=_COLOURS[i % len(_COLOURS)], linewidth=1.6)
    axes.xaxis_date()
    if not series:
        axes.text(0.5, 0.5, "-", transform=axes.transAxes, ha="center")
    else:
        axes.legend(fontsize=8, frameon=False, loc="upper left")
    _frame(axes)
    return _svg(figure)


def bars(days: Sequence[date], series: Mapping[str, Sequence[int]]) -> bytes:
    """Bars per day, one colour per series side by side (e.g. operations of each kind), as SVG."""
    figure = _figure()
    axes = figure.add_subplot()
    count = max(len(series), 1)
    width = 0.8 / count
    for i, (name, values) in enumerate(series.items()):
        offset = (i - (count - 1) / 2) * width
        axes.bar(
            [_day(d) + offset for d in days],
            values,
            width=width,
            label=name,
            color=_COLOURS[i % len(_COLOURS)],
        )
    axes.xaxis_date()
    if series:
        axes.legend(fontsize=8, frameon=False, loc="upper left")
    _frame(axes)
    return _svg(figure)

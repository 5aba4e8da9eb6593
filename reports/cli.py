"""`clearing report ...`: the reports from the command line, as a table or a file.

The command line is the platform's own tool: it reads every party's figures, or one party's
with `--org` (its days then in that party's zone).
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import Engine

from clearing.core.errors import InvalidInput
from reports.query import ReportTable

report_app = typer.Typer(
    help="Reports: flows, positions, liability; tables and files.", no_args_is_help=True
)


class OutputFormat(StrEnum):
    TABLE = "table"
    CSV = "csv"
    XLSX = "xlsx"
    PARQUET = "parquet"


def _database(ctx: typer.Context) -> Engine:
    """The configured database, opened (schema checked) by the command line that mounts this."""
    open_database: Callable[[], Engine] = ctx.obj
    if not callable(open_database):
        raise RuntimeError("the report commands run under `clearing`, which opens the database")
    return open_database()


def _business_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"not a date (YYYY-MM-DD): {text!r}") from None


def _org(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise typer.BadParameter(f"not an organisation id: {text!r}") from None


@report_app.command("list")
def list_command() -> None:
    """List the reports by name, with their titles."""
    from reports.catalogue import REPORTS

    for spec in REPORTS.values():
        typer.echo(f"{spec.name}\t{spec.title}")


@report_app.command("show")
def show_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The report's name (see `clearing report list`)")],
    date_from: Annotated[
        date, typer.Option("--from", help="First business date, YYYY-MM-DD", parser=_business_date)
    ],
    date_to: Annotated[
        date, typer.Option("--to", help="Last business date, YYYY-MM-DD", parser=_business_date)
    ],
    org: Annotated[
        uuid.UUID | None, typer.Option("--org", help="One party's figures", parser=_org)
    ] = None,
    program: Annotated[str | None, typer.Option("--program", help="One program's code")] = None,
    output: Annotated[
        OutputFormat, typer.Option("--format", help="table, or a file: csv, xlsx, parquet")
    ] = OutputFormat.TABLE,
    out: Annotated[Path | None, typer.Option("--out", help="Write the file here")] = None,
) -> None:
    """Show one report over [--from, --to] as a table, or write it as CSV, XLSX or Parquet
    (to --out; CSV without --out goes to stdout)."""
    from clearing.core.db import transaction
    from reports.exports import EXPORTS, write_csv
    from reports.service import report_spec, run_report, scope_of

    report_spec(name)  # an unknown name is said before the database is opened
    if output in (OutputFormat.XLSX, OutputFormat.PARQUET) and out is None:
        raise InvalidInput(f"--format {output.value} writes a file: give --out FILE", field="out")
    engine = _database(ctx)
    with transaction(engine) as session:
        table = run_report(session, name, date_from, date_to, scope_of(None, org), program)
    if output is OutputFormat.TABLE:
        _print_table(table)
    elif out is None:
        write_csv(table, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    else:
        with out.open("wb") as file:
            EXPORTS[output.value].write(table, file)
        typer.echo(f"{out} ({len(table.rows)} rows)")


def _print_table(table: ReportTable) -> None:
    """The report as a rich table: money in major units of its currency, numbers right-aligned."""
    from rich.console import Console
    from rich.table import Table

    from clearing.core.money import format_minor
    from reports.exports import cell_text
    from reports.query import ColumnKind

    names = [c.name for c in table.columns]
    currency_at = names.index("currency") if "currency" in names else None
    shown = Table(title=table.report)
    for column in table.columns:
        numeric = column.kind not in (ColumnKind.DATE, ColumnKind.TEXT)
        shown.add_column(column.name, justify="right" if numeric else "left")
    for row in table.rows:
        cells = []
        for value, column in zip(row, table.columns, strict=True):
            if column.kind is ColumnKind.MONEY and currency_at is not None and value is not None:
                cells.append(format_minor(value, row[currency_at]))
            else:
                cells.append(cell_text(value))
        shown.add_row(*cells)
    Console(width=max(120, Console().width)).print(shown)
    if not table.rows:
        typer.echo("no rows")

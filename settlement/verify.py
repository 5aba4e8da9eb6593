"""Independent check of a party's settlement folder: control totals, hashes, signature, XSD."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import iterparse

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from openpyxl import load_workbook

from clearing.core.money import exponent, is_known_currency, parse_minor
from settlement.camt053 import NAMESPACE, OMISSION_REASONS, camt_can_hold, validation_errors
from settlement.files import CAMT_NAME, CSV_NAME, XLSX_NAME
from settlement.manifest import MANIFEST_NAME, SIGNATURE_NAME, canonical_json
from settlement.statement_csv import (
    DETAIL_FIELDS,
    HEADER_FIELDS,
    LAYOUT,
    SUMMARY_FIELDS,
    TRAILER_FIELDS,
)
from settlement.statement_xlsx import TRAILER_LABELS

_NS = f"{{{NAMESPACE}}}"


@dataclass
class _CsvFacts:
    currency: str = ""
    count: int = 0
    debits: int = 0
    credits: int = 0
    points: int = 0
    largest: int = 0
    """The largest magnitude of any detail's gross, fee or net: what a camt.053 entry carries."""
    body_sha256: str = ""
    summary: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0] * 5))
    batches: dict[tuple[str, str], list[int]] = field(
        default_factory=lambda: defaultdict(lambda: [0, 0])
    )

    @property
    def net(self) -> int:
        return self.credits - self.debits


def _trailer_offset(path: Path) -> int:
    # The trailer is the last record and holds no quoted text, so it starts after the
    # second-to-last CRLF of the file.
    size = path.stat().st_size
    with open(path, "rb") as fh:
        start = max(0, size - 4096)
        fh.seek(start)
        tail = fh.read()
    end = tail.rstrip(b"\r\n")
    cut = end.rfind(b"\r\n")
    return start + cut + 2 if cut >= 0 else 0


def _body_sha256(path: Path, length: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        left = length
        while left:
            chunk = fh.read(min(left, 1 << 20))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def _check_csv(path: Path, errors: list[str]) -> _CsvFacts | None:
    """Read a statement CSV once, record by record, collecting every error; its facts.

    Long on purpose: one streaming pass over a file that may hold millions of records, with
    the header, detail, summary and trailer checks sharing the running totals of that pass.
    """
    facts = _CsvFacts()
    name = path.name
    with open(path, "rb") as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:
        records = csv.reader(text)
        header = next(records, None)
        if header is None or len(header) != len(HEADER_FIELDS) or header[0] != "H":
            errors.append(f"{name}: first record is not a header of {len(HEADER_FIELDS)} fields")
            return None
        if header[1] != LAYOUT:
            errors.append(f"{name}: layout {header[1]!r}, expected {LAYOUT!r}")
        cur = facts.currency = header[HEADER_FIELDS.index("currency")]
        if not is_known_currency(cur):
            errors.append(f"{name}: unknown currency {cur!r}")
            return None
        summaries: dict[str, list[int]] = {}
        trailer: list[str] | None = None
        expected_line = 1
        for number, record in enumerate(records, start=2):
            kind = record[0] if record else ""
            try:
                if trailer is not None:
                    errors.append(f"{name}: record {number} follows the trailer")
                elif kind == "D":
                    if summaries:
                        errors.append(f"{name}: detail record {number} after summary records")
                    if len(record) != len(DETAIL_FIELDS):
                        errors.append(f"{name}: detail record {number} has {len(record)} fields")
                        continue
                    if int(record[1]) != expected_line:
                        errors.append(f"{name}: line number {record[1]}, expected {expected_line}")
                    expected_line += 1
                    gross, fee, net = (parse_minor(v, cur) for v in record[10:13])
                    if net != gross + fee:
                        errors.append(f"{name}: line {record[1]} net is not gross + fee")
                    if record[13] != ("C" if net >= 0 else "D"):
                        errors.append(f"{name}: line {record[1]} debit/credit mark disagrees")
                    facts.count += 1
                    facts.largest = max(facts.largest, abs(gross), abs(fee), abs(net))
                    if net >= 0:
                        facts.credits += net
                    else:
                        facts.debits -= net
                    facts.points += int(record[7])
                    s = facts.summary[record[5]]
                    s[0] += -gross if gross < 0 else 0
                    s[1] += gross if gross > 0 else 0
                    s[2] += fee
                    s[3] += net
                    s[4] += 1
                    b = facts.batches[(record[5], record[4])]
                    b[0] += 1
                    b[1] += net
                elif kind == "S":
                    if len(record) != len(SUMMARY_FIELDS):
                        errors.append(f"{name}: summary record {number} has {len(record)} fields")
                        continue
                    values = [parse_minor(v, cur) for v in record[2:6]] + [int(record[6])]
                    summaries[record[1]] = values
                elif kind == "T":
                    trailer = record
                else:
                    errors.append(f"{name}: record {number} has unknown type {kind!r}")
            except ValueError as exc:
                errors.append(f"{name}: record {number}: {exc}")
    for counterparty in sorted(set(summaries) | set(facts.summary)):
        want = facts.summary.get(counterparty)
        got = summaries.get(counterparty)
        if want != got:
            errors.append(
                f"{name}: summary of {counterparty} is {got}, details add up to {want}"
                " (payable, receivable, fees, net, count)"
            )
    if trailer is None or len(trailer) != len(TRAILER_FIELDS):
        errors.append(f"{name}: no trailer record of {len(TRAILER_FIELDS)} fields")
        return None
    facts.body_sha256 = _body_sha256(path, _trailer_offset(path))
    try:
        checks = {
            "detail_count": (int(trailer[1]), facts.count),
            "summary_count": (int(trailer[2]), len(facts.summary)),
            "total_debits": (parse_minor(trailer[3], cur), facts.debits),
            "total_credits": (parse_minor(trailer[4], cur), facts.credits),
            "net": (parse_minor(trailer[5], cur), facts.net),
            "points_total": (int(trailer[6]), facts.points),
        }
    except ValueError as exc:
        errors.append(f"{name}: trailer: {exc}")
        return None
    for label, (stated, recomputed) in checks.items():
        if stated != recomputed:
            errors.append(f"{name}: trailer {label} {stated}, recomputed {recomputed}")
    if trailer[7] != facts.body_sha256:
        errors.append(f"{name}: body SHA-256 {facts.body_sha256} differs from trailer {trailer[7]}")
    return facts


# The files a party's folder may be published without, when its manifest says why: only the
# camt.053 (FILES.md, "Totals and their widths"); the CSV and XLSX are always there.
_MAY_BE_OMITTED = frozenset({CAMT_NAME})


def _omitted(manifest: dict[str, Any], listed: dict[Any, Any], errors: list[str]) -> dict[str, str]:
    """The manifest's declared omissions (name -> reason), every malformed one reported."""
    declared = manifest.get("omitted", [])
    if not isinstance(declared, list) or (not declared and "omitted" in manifest):
        # An empty list is never written: a complete folder's manifest has no "omitted".
        errors.append(f"{MANIFEST_NAME}: omitted is not a non-empty list")
        return {}
    omitted: dict[str, str] = {}
    for entry in declared:
        name = entry.get("name") if isinstance(entry, dict) else None
        reason = entry.get("reason") if isinstance(entry, dict) else None
        if not isinstance(name, str) or name not in _MAY_BE_OMITTED:
            errors.append(f"{MANIFEST_NAME}: declares {name!r} omitted, which no folder may be")
        elif not isinstance(reason, str) or reason not in OMISSION_REASONS:
            errors.append(f"{MANIFEST_NAME}: omits {name} for an unknown reason {reason!r}")
        elif name in listed or name in omitted:
            errors.append(f"{MANIFEST_NAME}: {name} is both listed and declared omitted")
        else:
            omitted[name] = reason
    return omitted


def _check_manifest(
    directory: Path, public_key: Ed25519PublicKey, errors: list[str]
) -> dict[str, str]:
    """Check the signed manifest and the files it lists; return the files it declares omitted
    (name -> reason)."""
    manifest_path = directory / MANIFEST_NAME
    sig_path = directory / SIGNATURE_NAME
    if not manifest_path.is_file() or not sig_path.is_file():
        errors.append(f"{MANIFEST_NAME} or {SIGNATURE_NAME} is missing")
        return {}
    data = manifest_path.read_bytes()
    try:
        public_key.verify(sig_path.read_bytes(), data)
    except InvalidSignature:
        errors.append(f"{SIGNATURE_NAME}: Ed25519 signature does not verify")
    try:
        manifest: Any = json.loads(data)
    except ValueError as exc:
        errors.append(f"{MANIFEST_NAME}: not JSON ({exc})")
        return {}
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        errors.append(f"{MANIFEST_NAME}: not an object with a files list")
        return {}
    if canonical_json(manifest) != data:
        errors.append(f"{MANIFEST_NAME}: not in canonical form")
    listed = {
        entry.get("name"): entry.get("sha256")
        for entry in manifest.get("files", [])
        if isinstance(entry, dict)
    }
    omitted = _omitted(manifest, listed, errors)
    for required in (CSV_NAME, XLSX_NAME, CAMT_NAME):
        if required not in listed and required not in omitted:
            errors.append(f"{MANIFEST_NAME}: does not list {required}")
    for gone in sorted(omitted):
        if (directory / gone).exists():
            errors.append(f"{gone} is present, but {MANIFEST_NAME} declares it omitted")
    for name, digest in sorted(listed.items(), key=lambda kv: str(kv[0])):
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
            errors.append(f"{MANIFEST_NAME}: file name {name!r} is not a plain name")
            continue
        path = directory / name
        if not path.is_file():
            errors.append(f"{MANIFEST_NAME}: lists {name}, which is missing")
            continue
        with open(path, "rb") as fh:
            actual = hashlib.file_digest(fh, "sha256").hexdigest()
        if actual != digest:
            errors.append(f"{name}: SHA-256 {actual} differs from manifest {digest}")
    return omitted


def _check_camt_omission(facts: _CsvFacts | None, errors: list[str]) -> None:
    # The one reason there is (OMITTED_TOO_LARGE) must hold: a figure the camt.053 would carry
    # (a detail's amount, or the net position) has more than 18 digits. Otherwise the folder
    # merely lacks a camt.053 it could have had.
    if facts is not None and camt_can_hold(facts.largest) and camt_can_hold(facts.net):
        errors.append(
            f"{MANIFEST_NAME}: declares {CAMT_NAME} omitted, but every figure of "
            f"{CSV_NAME} fits a camt.053 amount"
        )


def _signed_amount(element: Any, cur: str) -> int:
    amount = element.find(f"{_NS}Amt")
    mark = element.find(f"{_NS}CdtDbtInd")
    value = parse_minor(amount.text or "", cur)
    return -value if mark is not None and mark.text == "DBIT" else value


def _check_camt(path: Path, facts: _CsvFacts | None, errors: list[str]) -> None:
    schema_errors = validation_errors(path)
    errors.extend(schema_errors)
    if schema_errors or facts is None:
        return
    cur = facts.currency
    balances: dict[str, int] = {}
    entries = 0
    batches: list[tuple[str, int, int]] = []
    batch_entries = 0
    last_ref = ""
    try:
        for _event, element in iterparse(path):
            if element.tag == f"{_NS}Ntry":
                entries += 1
                count = element.findtext(f"{_NS}NtryDtls/{_NS}Btch/{_NS}NbOfTxs")
                if count is not None:
                    batch_entries += 1
                    code = element.findtext(f"{_NS}BkTxCd/{_NS}Prtry/{_NS}Cd") or ""
                    ref, _dot, part = (element.findtext(f"{_NS}NtryRef") or "").partition(".")
                    amount = _signed_amount(element, cur)
                    if part not in ("", "1") and ref == last_ref and batches[-1][0] == code:
                        # B<n>.2, B<n>.3...: pieces of one sum too large for one camt amount.
                        _code, before, total = batches[-1]
                        batches[-1] = (code, before + int(count), total + amount)
                    else:
                        batches.append((code, int(count), amount))
                    last_ref = ref
                element.clear()
            elif element.tag == f"{_NS}Bal":
                code = element.findtext(f"{_NS}Tp/{_NS}CdOrPrtry/{_NS}Cd") or ""
                balances[code] = _signed_amount(element, cur)
    except ValueError as exc:
        errors.append(f"{path.name}: {exc}")
        return
    if balances.get("OPBD") != 0:
        errors.append(f"{path.name}: opening balance is {balances.get('OPBD')}, not 0")
    if balances.get("CLBD") != facts.net:
        errors.append(
            f"{path.name}: closing balance {balances.get('CLBD')} differs from CSV net {facts.net}"
        )
    if batches:
        # A large statement: one batch entry per (counterparty, event type), in that order.
        want = [(ev, c, net) for (_cp, ev), (c, net) in sorted(facts.batches.items())]
        if batch_entries != entries or batches != want:
            errors.append(
                f"{path.name}: batch entries do not match the CSV details per counterparty "
                "and event type"
            )
    elif entries != facts.count:
        errors.append(f"{path.name}: {entries} entries, CSV has {facts.count} detail lines")


def _check_xlsx(path: Path, facts: _CsvFacts | None, errors: list[str]) -> None:
    if facts is None:
        return
    try:
        workbook = load_workbook(path, read_only=True)
    except Exception as exc:  # a corrupt zip or XML can raise almost anything
        errors.append(f"{path.name}: cannot be opened ({exc})")
        return
    try:
        detail_rows = 0
        for sheet in workbook.worksheets:
            if sheet.title == "Details" or sheet.title.startswith("Details "):
                detail_rows += sum(1 for _ in sheet.iter_rows(min_row=2, values_only=True))
        trailer = {
            str(row[0]): row[1]
            for row in workbook["Trailer"].iter_rows(values_only=True)
            if row and row[0] in TRAILER_LABELS
        }
    except KeyError:
        errors.append(f"{path.name}: no Trailer sheet")
        return
    finally:
        workbook.close()
    in_workbook = trailer.get("details_in_workbook", facts.count)
    if in_workbook not in (facts.count, 0) or detail_rows != in_workbook:
        errors.append(
            f"{path.name}: {detail_rows} detail rows ({in_workbook!r} stated), "
            f"CSV has {facts.count}"
        )
    stated = {
        "detail_count": facts.count,
        "points_total": facts.points,
        "csv_body_sha256": facts.body_sha256,
    }
    for label, want in stated.items():
        got_value = trailer.get(label)
        if isinstance(want, int) and isinstance(got_value, str) and got_value.lstrip("-").isdigit():
            # Counts of EXCEL_EXACT and above are stored as exact text.
            got_value = int(got_value)
        if got_value != want:
            errors.append(f"{path.name}: trailer {label} {trailer.get(label)!r}, CSV {want!r}")
    for label, want in (
        ("total_debits", facts.debits),
        ("total_credits", facts.credits),
        ("net", facts.net),
    ):
        got = trailer.get(label)
        try:
            # Cells hold exact decimal text; openpyxl reads numbers back as int or float.
            value = parse_minor(_plain(got, cur=facts.currency), facts.currency)
        except ValueError:
            value = None
        if value != want:
            errors.append(f"{path.name}: trailer {label} {got!r}, CSV {want}")


def _plain(value: object, *, cur: str) -> str:
    exp = exponent(cur)
    if isinstance(value, int):
        return f"{value}.{'0' * exp}" if exp else str(value)
    if isinstance(value, float):
        return f"{value:.{exp}f}"
    return str(value)


def verify_directory(path: Path, public_key: Ed25519PublicKey) -> list[str]:
    """Every problem found in a party's settlement folder; empty means it checks out."""
    errors: list[str] = []
    omitted = _check_manifest(path, public_key, errors)
    facts: _CsvFacts | None = None
    csv_path = path / CSV_NAME
    if csv_path.is_file():
        try:
            facts = _check_csv(csv_path, errors)
        except (UnicodeDecodeError, csv.Error) as exc:
            errors.append(f"{CSV_NAME}: unreadable ({exc})")
    else:
        errors.append(f"{CSV_NAME} is missing")
    camt_path = path / CAMT_NAME
    if CAMT_NAME in omitted:
        # Declared and signed; _check_manifest has refused a camt053.xml present all the same.
        _check_camt_omission(facts, errors)
    elif camt_path.is_file():
        _check_camt(camt_path, facts, errors)
    else:
        errors.append(f"{CAMT_NAME} is missing")
    xlsx_path = path / XLSX_NAME
    if xlsx_path.is_file():
        _check_xlsx(xlsx_path, facts, errors)
    else:
        errors.append(f"{XLSX_NAME} is missing")
    return errors

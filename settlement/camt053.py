"""ISO 20022 camt.053.001.08 bank-to-customer statement of a party's settlement."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Sequence
from decimal import Decimal
from functools import lru_cache
from importlib.resources import as_file, files
from itertools import chain, repeat
from pathlib import Path
from typing import IO, Any
from xml.sax.saxutils import escape, quoteattr

import xmlschema

from clearing.core.money import format_minor
from settlement.lines import Party
from settlement.statement import (
    DetailRow,
    StatementInputError,
    StatementMeta,
    StatementTotals,
    decimal_text,
    statement_file_id,
    utc_text,
)
from settlement.statement_csv import DetailTexts, window_text

NAMESPACE = "urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"
# The official XSD as shipped by the camt053 package (ISO 20022 Standards Editor output).
XSD_PACKAGE = "camt053"
XSD_RESOURCE = "xsd/camt.053.001.08.xsd"
PROPRIETARY_ISSUER = "PCS"
CAMT_MAX = 10**18 - 1
"""The largest minor-unit magnitude a camt.053 amount holds: its amounts and sums are decimals of
at most 18 digits, whatever the currency's exponent."""


OMITTED_TOO_LARGE = "amount_beyond_iso20022_18_digits"
"""Why a party's folder has no camt.053, as its manifest states it: a figure the camt.053 must
carry (a detail's amount, or the net position in `CLBD`) has more than the 18 digits an
ISO 20022 amount may have. statement.csv and statement.xlsx hold every figure exactly."""
OMISSION_REASONS = frozenset({OMITTED_TOO_LARGE})
"""Every reason a manifest may give for leaving the camt.053 out (see FILES.md)."""


class CamtAmountTooLarge(StatementInputError):
    """Raised by the writer on an amount it cannot write; the files step catches it and
    publishes the folder without a camt.053 (`OMITTED_TOO_LARGE`): one party's figures never
    stop a batch."""

    code = "camt_amount_too_large"
    title = "An amount is too large for camt.053"


def camt_can_hold(minor: int) -> bool:
    """Whether a camt.053 amount (at most 18 digits) can hold `minor` minor units."""
    return abs(minor) <= CAMT_MAX


def split_amount(value: int, parts: int) -> list[int]:
    """`value` in `parts` pieces of the same sign that differ by at most one and add up to it."""
    quotient, remainder = divmod(abs(value), parts)
    sign = -1 if value < 0 else 1
    return [sign * (quotient + (1 if i < remainder else 0)) for i in range(parts)]


@lru_cache(maxsize=1)
def camt053_schema() -> Any:
    """The camt.053.001.08 schema, loaded once per process."""
    with as_file(files(XSD_PACKAGE).joinpath(XSD_RESOURCE)) as path:
        return xmlschema.XMLSchema(str(path))


def validation_errors(path: Path, *, limit: int = 20) -> list[str]:
    """XSD validation errors of the camt file at `path` (lazy: large files stream)."""
    resource = xmlschema.XMLResource(str(path), lazy=True)
    errors: list[str] = []
    for error in camt053_schema().iter_errors(resource):
        errors.append(f"{path.name}: {error.reason} at {error.path}")
        if len(errors) >= limit:
            break
    return errors


def _fit(value: str, size: int) -> str:
    # ISO 20022 ids are MaxNText; a longer id of ours is replaced by a stable digest of it
    # (the full value is always repeated in a free-text element).
    if 1 <= len(value) <= size:
        return value
    return "H" + hashlib.sha256(value.encode("utf-8")).hexdigest()[: size - 1]


def _t(value: str) -> str:
    return escape(value)


def _sum(minor: int, currency: str) -> str:
    # Sums are optional in TxsSummry; one past CAMT_MAX is left out (statement.csv has it).
    return f"<Sum>{format_minor(minor, currency)}</Sum>" if camt_can_hold(minor) else ""


def _cd(minor: int) -> str:
    return "CRDT" if minor >= 0 else "DBIT"


def _by_value(values: Sequence[str], render: Callable[[str], str]) -> list[str]:
    """render() once per distinct value, spread back to every row."""
    lookup = {v: render(v) for v in dict.fromkeys(values)}
    return list(map(lookup.__getitem__, values))


def _escaped(values: Sequence[str] | list[str]) -> list[str]:
    """_t of every value; values without a character to escape go through as they are."""
    joined = "".join(values)
    if any(c in joined for c in "&<>"):
        return [_t(v) for v in values]
    return list(values)


def _fitted(values: Sequence[str], size: int) -> list[str]:
    """_fit of every value (ids longer than `size` become their digest), escaped."""
    if all(1 <= len(v) <= size for v in values):
        return _escaped(values)
    return _escaped([_fit(v, size) for v in values])


_DETAIL_ENTRY = (
    "<Ntry><NtryRef>{0}</NtryRef>{1}<Sts><Cd>BOOK</Cd></Sts>"
    "<BookgDt><DtTm>{2}</DtTm></BookgDt><ValDt><Dt>{3}</Dt></ValDt>"
    "<AcctSvcrRef>{4}</AcctSvcrRef><BkTxCd><Prtry><Cd>{5}</Cd>"
    f"<Issr>{PROPRIETARY_ISSUER}</Issr></Prtry></BkTxCd>"
    "<AmtDtls><TxAmt>{6}</TxAmt></AmtDtls>{7}<NtryDtls><TxDtls><Refs>"
    "<AcctSvcrRef>{4}</AcctSvcrRef>{8}</Refs>{9}"
    "<AddtlTxInf>{10}</AddtlTxInf></TxDtls></NtryDtls></Ntry>\n"
).format
"""One detail Ntry, exactly as write_row writes it, from the fragments of write_details."""
_INFO = "reference={0}{1};counterparty={2}{3}".format


class Camt053Writer:
    """Writes entries to a side file while streaming, then assembles the statement around them."""

    def __init__(self, party: Party, meta: StatementMeta, entries: IO[bytes]) -> None:
        self._party = party
        self._meta = meta
        self._cur = meta.currency
        self._entries = entries
        self._value_date = meta.settlement_date.isoformat()
        self._batches: list[int] = []
        """Signed net of every batch entry written (batched statements only)."""
        self._refs: list[int] = []

    def _amt(self, minor: int) -> str:
        if not camt_can_hold(minor):
            raise CamtAmountTooLarge(
                f"camt.053 of {self._party.id}: {format_minor(minor, self._cur)} {self._cur} "
                f"exceeds the 18 digits an ISO 20022 amount may have"
            )
        return f'<Amt Ccy="{self._cur}">{format_minor(abs(minor), self._cur)}</Amt>'

    def write_row(self, row: DetailRow) -> None:
        """Append the Ntry of one detail row."""
        net = row.gross + row.fee
        info = [f"reference={row.reference}"]
        if row.original_reference:
            info.append(f"original={row.original_reference}")
        info.append(f"counterparty={row.counterparty}")
        if row.program:
            info.append(f"program={row.program}")
        if row.points:
            info.append(f"points={row.points}")
        if row.point_value is not None:
            info.append(f"point_value={decimal_text(row.point_value)}")
        if row.point_value_version is not None:
            info.append(f"point_value_version={row.point_value_version}")
        parts = [
            f"<Ntry><NtryRef>{row.line_no}</NtryRef>",
            self._amt(net),
            f"<CdtDbtInd>{_cd(net)}</CdtDbtInd><Sts><Cd>BOOK</Cd></Sts>",
            f"<BookgDt><DtTm>{utc_text(row.booked_at)}</DtTm></BookgDt>",
            f"<ValDt><Dt>{self._value_date}</Dt></ValDt>",
            f"<AcctSvcrRef>{_t(_fit(row.reference, 35))}</AcctSvcrRef>",
            f"<BkTxCd><Prtry><Cd>{_t(row.event_type)}</Cd>",
            f"<Issr>{PROPRIETARY_ISSUER}</Issr></Prtry></BkTxCd>",
            f"<AmtDtls><TxAmt>{self._amt(row.gross)}</TxAmt></AmtDtls>",
        ]
        if row.fee:
            # The entry amount is the net: the fee is included in it (ChrgInclInd).
            fee = format_minor(abs(row.fee), self._cur)
            parts.append(
                f'<Chrgs><TtlChrgsAndTaxAmt Ccy="{self._cur}">{fee}</TtlChrgsAndTaxAmt>'
                f"<Rcrd>{self._amt(row.fee)}<CdtDbtInd>{_cd(row.fee)}</CdtDbtInd>"
                "<ChrgInclInd>true</ChrgInclInd></Rcrd></Chrgs>"
            )
        parts.append("<NtryDtls><TxDtls><Refs>")
        parts.append(f"<AcctSvcrRef>{_t(_fit(row.reference, 35))}</AcctSvcrRef>")
        if row.original_reference:
            parts.append(
                f"<Prtry><Tp>ORIGINAL</Tp><Ref>{_t(_fit(row.original_reference, 35))}</Ref></Prtry>"
            )
        parts.append(f"</Refs>{self._amt(row.gross)}<CdtDbtInd>{_cd(row.gross)}</CdtDbtInd>")
        parts.append(f"<AddtlTxInf>{_t(';'.join(info)[:500])}</AddtlTxInf></TxDtls></NtryDtls>")
        parts.append("</Ntry>\n")
        self._entries.write("".join(parts).encode("utf-8"))

    def _amt_text(self, text: str) -> str:
        """_amt of a money text as the CSV writes it (format_minor)."""
        magnitude = text.removeprefix("-")
        if len(magnitude) - ("." in magnitude) > 18:
            raise CamtAmountTooLarge(
                f"camt.053 of {self._party.id}: {text} {self._cur} "
                f"exceeds the 18 digits an ISO 20022 amount may have"
            )
        return f'<Amt Ccy="{self._cur}">{magnitude}</Amt>'

    def write_details(self, chunk: DetailTexts) -> None:
        """Append the Ntry of every detail of a chunk of CSV texts (the bytes of write_row)."""
        if not chunk.line_no:
            return
        cur = self._cur

        def cd(text: str) -> str:
            return "DBIT" if text.startswith("-") else "CRDT"

        def fee(text: str) -> str:
            if not text.strip("-0."):
                return ""
            return (
                f'<Chrgs><TtlChrgsAndTaxAmt Ccy="{cur}">{text.removeprefix("-")}'
                f"</TtlChrgsAndTaxAmt><Rcrd>{self._amt_text(text)}<CdtDbtInd>{cd(text)}"
                "</CdtDbtInd><ChrgInclInd>true</ChrgInclInd></Rcrd></Chrgs>"
            )

        def original(text: str) -> str:
            if not text:
                return ""
            return f"<Prtry><Tp>ORIGINAL</Tp><Ref>{_t(_fit(text, 35))}</Ref></Prtry>"

        def point_value(text: str) -> str:
            # As write_row prints the Decimal the old reader made of the CSV's text.
            return f";point_value={decimal_text(Decimal(text))}" if text else ""

        if max(map(len, chain(chunk.gross, chunk.net, chunk.fee))) > 18:
            # Some text may hold more than 18 digits: _amt_text says which (and raises).
            for column in (chunk.net, chunk.gross, chunk.fee):
                for text in column:
                    self._amt_text(text)
        amt = f'<Amt Ccy="{cur}">'
        gross_amt = [
            f"{amt}{v[1:]}</Amt>" if v[0] == "-" else f"{amt}{v}</Amt>" for v in chunk.gross
        ]
        nets = [
            f"{amt}{v[1:]}</Amt><CdtDbtInd>DBIT</CdtDbtInd>"
            if v[0] == "-"
            else f"{amt}{v}</Amt><CdtDbtInd>CRDT</CdtDbtInd>"
            for v in chunk.net
        ]
        infos = list(
            map(
                _INFO,
                chunk.reference,
                _by_value(chunk.original_reference, lambda o: f";original={o}" if o else ""),
                chunk.counterparty,
                map(
                    "{}{}{}{}".format,
                    _by_value(chunk.program, lambda p: f";program={p}" if p else ""),
                    _by_value(chunk.points, lambda p: "" if p == "0" else f";points={p}"),
                    _by_value(chunk.point_value, point_value),
                    _by_value(
                        chunk.point_value_version,
                        lambda v: f";point_value_version={v}" if v else "",
                    ),
                ),
            )
        )
        if any(len(i) > 500 for i in infos):
            infos = [i[:500] for i in infos]
        references = _fitted(chunk.reference, 35)
        entries = map(
            _DETAIL_ENTRY,
            chunk.line_no,
            nets,
            chunk.booked_at,
            repeat(self._value_date),
            references,
            _by_value(chunk.event_type, _t),
            gross_amt,
            _by_value(chunk.fee, fee),
            _by_value(chunk.original_reference, original),
            [
                f"{a}<CdtDbtInd>{'DBIT' if g[0] == '-' else 'CRDT'}</CdtDbtInd>"
                for a, g in zip(gross_amt, chunk.gross, strict=True)
            ],
            _escaped(infos),
        )
        self._entries.write("".join(entries).encode("utf-8"))

    def write_batch(
        self, counterparty: str, event_type: str, count: int, gross: int, fee: int, net: int
    ) -> None:
        """Append one batch Ntry: every detail of one counterparty and event type, summed.

        A sum past CAMT_MAX goes out as consecutive entries `B<n>.1`, `B<n>.2`... that add up
        to it (count, gross, fee and net each), every amount within the 18 digits allowed."""
        ref = len(self._refs) + 1
        self._refs.append(ref)
        # Each piece's net is its gross plus its fee: both halves stay within CAMT_MAX / 2 + 1.
        pieces = (abs(gross) + abs(fee)) // (CAMT_MAX // 2) + 1
        if pieces == 1:
            self._batch_entry(f"B{ref}", counterparty, event_type, count, gross, fee)
            return
        for i, (c, g, f) in enumerate(
            zip(
                split_amount(count, pieces),
                split_amount(gross, pieces),
                split_amount(fee, pieces),
                strict=True,
            ),
            start=1,
        ):
            self._batch_entry(f"B{ref}.{i}", counterparty, event_type, c, g, f, (i, pieces))

    def _batch_entry(
        self,
        ntry_ref: str,
        counterparty: str,
        event_type: str,
        count: int,
        gross: int,
        fee: int,
        part: tuple[int, int] | None = None,
    ) -> None:
        net = gross + fee
        self._batches.append(net)
        info = (
            f"counterparty={counterparty};event_type={event_type};details={count};"
            + ("" if part is None else f"part={part[0]}/{part[1]};")
            + "lines=statement.csv"
        )
        parts = [
            f"<Ntry><NtryRef>{ntry_ref}</NtryRef>",
            self._amt(net),
            f"<CdtDbtInd>{_cd(net)}</CdtDbtInd><Sts><Cd>BOOK</Cd></Sts>",
            f"<BookgDt><Dt>{self._value_date}</Dt></BookgDt>",
            f"<ValDt><Dt>{self._value_date}</Dt></ValDt>",
            f"<BkTxCd><Prtry><Cd>{_t(event_type)}</Cd>",
            f"<Issr>{PROPRIETARY_ISSUER}</Issr></Prtry></BkTxCd>",
            f"<AmtDtls><TxAmt>{self._amt(gross)}</TxAmt></AmtDtls>",
        ]
        if fee:
            parts.append(
                f'<Chrgs><TtlChrgsAndTaxAmt Ccy="{self._cur}">'
                f"{format_minor(abs(fee), self._cur)}</TtlChrgsAndTaxAmt>"
                f"<Rcrd>{self._amt(fee)}<CdtDbtInd>{_cd(fee)}</CdtDbtInd>"
                "<ChrgInclInd>true</ChrgInclInd></Rcrd></Chrgs>"
            )
        parts.append(
            f"<NtryDtls><Btch><NbOfTxs>{count}</NbOfTxs>"
            f'<TtlAmt Ccy="{self._cur}">{format_minor(abs(net), self._cur)}</TtlAmt>'
            f"<CdtDbtInd>{_cd(net)}</CdtDbtInd></Btch></NtryDtls>"
        )
        parts.append(f"<AddtlNtryInf>{_t(info[:500])}</AddtlNtryInf></Ntry>\n")
        self._entries.write("".join(parts).encode("utf-8"))

    def finish(self, totals: StatementTotals, out: IO[bytes]) -> None:
        """Write the whole document to `out`, copying the entries written so far."""
        meta, party, cur = self._meta, self._party, self._cur
        file_id = statement_file_id(meta, party.id)
        created = utc_text(meta.generated_at)
        day = self._value_date

        def balance(code: str, minor: int) -> str:
            return (
                f"<Bal><Tp><CdOrPrtry><Cd>{code}</Cd></CdOrPrtry></Tp>{self._amt(minor)}"
                f"<CdtDbtInd>{_cd(minor)}</CdtDbtInd><Dt><Dt>{day}</Dt></Dt></Bal>\n"
            )

        net = totals.net
        count, credit_count, credits, debits = (
            totals.count,
            totals.credit_count,
            totals.credits,
            totals.debits,
        )
        batched = bool(self._batches)
        if batched:
            count = len(self._batches)
            credit_count = sum(1 for b in self._batches if b >= 0)
            credits = sum(b for b in self._batches if b >= 0)
            debits = -sum(b for b in self._batches if b < 0)
        head = [
            '<?xml version="1.0" encoding="UTF-8"?>\n',
            f"<Document xmlns={quoteattr(NAMESPACE)}>\n<BkToCstmrStmt>\n",
            f"<GrpHdr><MsgId>{_t(_fit(file_id, 35))}</MsgId><CreDtTm>{created}</CreDtTm>",
            f"<MsgRcpt><Nm>{_t(party.name[:140] or party.id[:140])}</Nm></MsgRcpt>",
            f"<AddtlInf>{_t(f'file_id={file_id};batch={meta.batch_id}'[:500])}</AddtlInf>",
            "</GrpHdr>\n<Stmt>\n",
            f"<Id>{_t(_fit(file_id, 35))}</Id>",
            f"<ElctrncSeqNb>{meta.sequence}</ElctrncSeqNb>",
            f"<CreDtTm>{created}</CreDtTm>",
            f"<FrToDt><FrDtTm>{window_text(meta.window_start, meta.zone)}</FrDtTm>",
            f"<ToDtTm>{window_text(meta.window_end, meta.zone)}</ToDtTm></FrToDt>\n",
            f"<Acct><Id><Othr><Id>{_t(_fit(party.id, 34))}</Id>",
            "<SchmeNm><Prtry>ORGANISATION</Prtry></SchmeNm>",
            f"<Issr>{PROPRIETARY_ISSUER}</Issr></Othr></Id>",
            f"<Ccy>{cur}</Ccy><Nm>{_t(party.name[:70] or party.id[:70])}</Nm></Acct>\n",
            balance("OPBD", 0),
            balance("CLBD", net),
            "<TxsSummry><TtlNtries>",
            f"<NbOfNtries>{count}</NbOfNtries>",
            _sum(credits + debits, cur),
            f"<TtlNetNtry><Amt>{format_minor(abs(net), cur)}</Amt>",
            f"<CdtDbtInd>{_cd(net)}</CdtDbtInd></TtlNetNtry></TtlNtries>",
            f"<TtlCdtNtries><NbOfNtries>{credit_count}</NbOfNtries>",
            f"{_sum(credits, cur)}</TtlCdtNtries>",
            f"<TtlDbtNtries><NbOfNtries>{count - credit_count}</NbOfNtries>",
            f"{_sum(debits, cur)}</TtlDbtNtries>",
            "</TxsSummry>\n",
        ]
        out.write("".join(head).encode("utf-8"))
        self._entries.flush()
        self._entries.seek(0)
        shutil.copyfileobj(self._entries, out, 1 << 20)
        extra = f";entries=batched;details={totals.count}" if batched else ""
        tail = f"<AddtlStmtInf>{_t(f'file_id={file_id}{extra}'[:500])}</AddtlStmtInf>\n"
        out.write((tail + "</Stmt>\n</BkToCstmrStmt>\n</Document>\n").encode("utf-8"))

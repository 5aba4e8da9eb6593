"""The Spark engine: nets a batch's exported window and writes every party's folder on Apache
Spark, byte-identical to the pandas engine (settlement/SCALE.md). Imported only when the
`spark` engine runs: pyspark starts a JVM."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from settlement.files import BatchWrite
from settlement.lines import Party
from settlement.netting import Totals
from settlement.probe import NO_PROBE, BatchProbe
from settlement.statement import StatementMeta

if TYPE_CHECKING:
    from settlement.service import NetAndWrite


def spark_net_and_write(
    window: Path,
    folders: Mapping[str, Path],
    parties: Sequence[Party],
    metas: Mapping[str, StatementMeta],
    *,
    signing_key: Ed25519PrivateKey,
    key_id: str,
    expected: dict[str, Totals],
    platform_id: str,
    master: str,
    probe: BatchProbe = NO_PROBE,
) -> NetAndWrite:
    """What service.net_and_write does, on Spark, from the Parquet window at `window`."""
    raise NotImplementedError("the Spark engine is being built (issue 14)")


def spark_write_folders(
    window: Path,
    folders: Mapping[str, Path],
    parties: Sequence[Party],
    metas: Mapping[str, StatementMeta],
    *,
    signing_key: Ed25519PrivateKey,
    key_id: str,
    expected_nets: Mapping[str, int],
    master: str,
    probe: BatchProbe = NO_PROBE,
) -> BatchWrite:
    """What files.write_batch_folders does, on Spark, from the Parquet window at `window`."""
    raise NotImplementedError("the Spark engine is being built (issue 14)")

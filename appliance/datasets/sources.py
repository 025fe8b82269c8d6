"""Where a stage's candidate rows come from: one function per source, each
`(db, stage, trainable) -> [DatasetRow]`, listed in SOURCES in the order their rows are
preferred (the per-task cap keeps the first rows of a task). Every row names its origin
in its provenance (`Provenance.origin`); `versions.build` puts all of them through the
same hold-out check, deduplication, per-task cap and quality gates, and records what it
took from each origin and what it dropped and why.

- campaign: this box's own campaigns (`rows.candidate_rows`);
- imports: the rows of ingested data packages (appliance.datapackages), origin
  `import:NAME-VERSION`.

The operator's feedback on solve runs (appliance.datasets.operator, origin `operator`)
is the third source; `versions.build` adds its rows after these, because the same pass
also lists the runs it must hold back, which the version records.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from appliance.datapackages import store as data_packages
from appliance.datapackages.store import ImportedRow
from appliance.datasets.rows import DatasetRow, Provenance, candidate_rows, forge_revision

KINDS = ("sft", "dpo")
Trainable = Callable[[str, str | None, str], bool]


def campaign_rows(db, stage: str, trainable: Trainable) -> list[DatasetRow]:
    """Rows from the campaigns' triples, synthetic pairs and logged calls."""
    return candidate_rows(db, stage, trainable)


def imported_rows(db, stage: str, trainable: Trainable) -> list[DatasetRow]:
    """Every row ingested data packages hold for `stage`. Their commits were checked at
    ingest; the builder checks them again against the hold-out as it is now."""
    return [_imported(stage, r) for kind in KINDS for r in data_packages.rows(db, stage, kind)]


def _imported(stage: str, imported: ImportedRow) -> DatasetRow:
    row = imported.row
    origin = imported.origin
    # A free-standing row is a task of its own, named so it is no corpus commit's.
    task = row.task or f"{origin}@{stage}-{imported.line}"
    messages = [m.model_dump() for m in row.messages]
    return DatasetRow(
        stage=stage,
        kind=row.kind,
        task=task,
        source=row.source,
        messages=messages,
        # No model here rendered it: the messages themselves stand for the prompt.
        prompt=json.dumps(messages, sort_keys=True),
        finish_reason=row.finish_reason,
        provenance=Provenance(
            task=task,
            sample=imported.line,
            call_id=None,
            base_sha256="",
            adapter=None,
            forge_revision=forge_revision(),
            params={},
            origin=origin,
        ),
        completion=row.completion,
        chosen=row.chosen,
        rejected=row.rejected,
    )


SOURCES: tuple[Callable[[object, str, Trainable], list[DatasetRow]], ...] = (
    campaign_rows,
    imported_rows,
)


def candidates(db, stage: str, trainable: Trainable) -> list[DatasetRow]:
    """Every source's rows for `stage`, in SOURCES order."""
    return [row for source in SOURCES for row in source(db, stage, trainable)]

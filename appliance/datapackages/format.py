"""The data package format: `manifest.json` and one `STAGE.jsonl` of rows per stage,
validated with pydantic (docs/data-package.md). Bump SCHEMA_VERSION when it changes.

A row is Forge's own SFT or DPO row (appliance.datasets.rows.DatasetRow) as a teacher
can write it: the chat messages a stage's prompt is made of, and the answer to learn
(SFT `completion`) or two answers to compare (DPO `chosen` over `rejected`), naming the
corpus package and commit it is about, or neither (a free-standing row). Its messages
must be a prompt Forge itself would build for the stage (`prompt_problem`): the stage's
system prompt word for word, and a user message that is the stage's template with its
fields filled in. Everything here is parsed within bounds (packages.manifest.parse_json).
"""

from __future__ import annotations

import functools
import hashlib
import json
import string
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from appliance.config import STAGES
from appliance.errors import ForgeError
from appliance.packages.manifest import Name, Sha, Sha256, Version
from appliance.stages.templates import templates

KIND = "data"
SCHEMA_VERSION = 1
READABLE_VERSIONS = (1,)
MANIFEST_NAME = "manifest.json"
ROWS_SUFFIX = ".jsonl"
MAX_MANIFEST_BYTES = 1 << 20  # a few dozen lines; more is not a data package's manifest
MAX_MESSAGE_CHARS = 1 << 20
Text = Annotated[str, StringConstraints(max_length=4096)]
Label = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Answer = Annotated[str, StringConstraints(max_length=MAX_MESSAGE_CHARS)]


def rows_file(stage: str) -> str:
    """The file name of a stage's rows."""
    return f"{stage}{ROWS_SUFFIX}"


def stage_of(file_name: str) -> str | None:
    """The stage a rows file holds, or None when the name is not STAGE.jsonl of a stage."""
    stem = file_name.removesuffix(ROWS_SUFFIX)
    return stem if file_name.endswith(ROWS_SUFFIX) and stem in STAGES else None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Message(_Model):
    role: Literal["system", "user"]
    content: Annotated[str, StringConstraints(max_length=MAX_MESSAGE_CHARS)]


class DataRow(_Model):
    """One row of a STAGE.jsonl file."""

    kind: Literal["sft", "dpo"]
    package: Name | None = None  # the corpus package the row is about (its name) …
    commit: Sha | None = None  # … and the commit; neither for a free-standing row
    source: Text = "teacher"  # why the row exists, as the writer says it
    messages: list[Message] = Field(min_length=1, max_length=16)
    completion: Answer | None = None  # sft
    chosen: Answer | None = None  # dpo
    rejected: Answer | None = None  # dpo
    finish_reason: Literal["stop", "length"] = "stop"

    @model_validator(mode="after")
    def _consistent(self) -> DataRow:
        if (self.package is None) != (self.commit is None):
            raise ValueError("name both `package` and `commit`, or neither (a free-standing row)")
        if self.kind == "sft" and (self.completion is None or self.chosen or self.rejected):
            raise ValueError("an sft row has `completion` and no `chosen` or `rejected`")
        if self.kind == "dpo":
            if self.chosen is None or self.rejected is None or self.completion is not None:
                raise ValueError("a dpo row has `chosen` and `rejected` and no `completion`")
            if self.chosen == self.rejected:
                raise ValueError("a dpo row's `chosen` and `rejected` are the same answer")
        return self

    @property
    def task(self) -> str | None:
        """NAME@SHA, as campaign rows name their task; None for a free-standing row."""
        return f"{self.package}@{self.commit}" if self.package else None

    def to_line(self) -> str:
        """The row as one JSONL line (what the writer writes)."""
        return json.dumps(self.model_dump(mode="json", exclude_none=True), sort_keys=True) + "\n"


class DataSource(_Model):
    """Where the rows come from."""

    generator: Label  # the program that wrote them, e.g. "forge teacher run (rev abc123)"
    model: Label  # the teacher model
    license: Label  # under which the rows may be used
    created: Annotated[str, StringConstraints(min_length=1, max_length=64)]  # ISO 8601


class FileEntry(_Model):
    sha256: Sha256
    size: int = Field(ge=0)
    rows: int = Field(ge=0)


def _rows_file_name(name: str) -> str:
    if stage_of(name) is None:
        raise ValueError(
            f"{name[:100]!r} is not a rows file: name it STAGE.jsonl with a stage of "
            f"{', '.join(STAGES)}"
        )
    return name


RowsFileName = Annotated[str, StringConstraints(max_length=64)]


class DataManifest(_Model):
    kind: Literal["data"]
    schema_version: Literal[1]
    name: Name
    version: Version
    description: Text = ""
    source: DataSource
    files: dict[RowsFileName, FileEntry] = Field(min_length=1, max_length=len(STAGES))

    @model_validator(mode="after")
    def _rows_files(self) -> DataManifest:
        for name in self.files:
            _rows_file_name(name)
        return self

    @property
    def label(self) -> str:
        """NAME-VERSION, as provenance names the package (`import:NAME-VERSION`)."""
        return f"{self.name}-{self.version}"

    @property
    def content_sha256(self) -> str:
        """The rows' identity, whatever the name, version or description: the same rows
        under another name are the same package."""
        return content_sha256({name: entry.sha256 for name, entry in self.files.items()})

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2) + "\n"


def content_sha256(file_hashes: Mapping[str, str]) -> str:
    data = json.dumps(sorted(file_hashes.items())).encode()
    return hashlib.sha256(data).hexdigest()


def origin(label: str) -> str:
    """The provenance of rows from package NAME-VERSION."""
    return f"import:{label}"


@functools.cache
def _user_literals(stage: str) -> tuple[str, ...]:
    """The text of the stage's user template around its fields, in order (a field between
    every two)."""
    literals = [""]
    for literal, field, _spec, _conversion in string.Formatter().parse(templates()[stage]["user"]):
        literals[-1] += literal
        if field is not None:
            literals.append("")
    return tuple(literals)


def fills_template(text: str, literals: tuple[str, ...]) -> bool:
    """Whether `text` is the literals with anything between them: found left to right,
    each at its first place after the one before (linear time, whatever the text holds)."""
    if len(literals) == 1:
        return text == literals[0]
    first, *middle, last = literals
    if len(text) < len(first) + len(last) or not text.startswith(first):
        return False
    end = len(text) - len(last)
    if not text.endswith(last):
        return False
    at = len(first)
    for literal in middle:
        found = text.find(literal, at, end)
        if found < 0:
            return False
        at = found + len(literal)
    return True


def prompt_problem(stage: str, messages: list[Message]) -> str | None:
    """Why `messages` are not a prompt Forge would build for `stage` (None when they
    are): a system message that is the stage's system prompt, then a user message that is
    the stage's user template filled in (appliance/stages/prompts.toml)."""
    template = templates()[stage]
    if [m.role for m in messages] != ["system", "user"]:
        roles = ", ".join(m.role for m in messages)
        return f"the messages are [{roles}]; a {stage} prompt is [system, user]"
    if messages[0].content != template["system"].strip():
        return f"the system message is not the {stage} stage's system prompt"
    if not fills_template(messages[1].content, _user_literals(stage)):
        return f"the user message is not the {stage} stage's template filled in"
    return None


class DataPackageError(ForgeError):
    """A data package cannot be written or read as the format says."""

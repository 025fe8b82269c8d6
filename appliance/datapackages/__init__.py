"""Data packages: a teacher's SFT and DPO rows carried over the air gap (the format, its
one writer, validation, ingest, and the table of ingested packages). docs/data-package.md
describes the format."""

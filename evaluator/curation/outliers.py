"""Images far from their artist's centroid: a robust z-score of the cosine to it.

Per artist (labelled images only, at least ``MIN_IMAGES``): centroid = the normalised
mean of its L2-normalised embeddings; each image's cosine to it; z = 0.6745 (cos -
median) / MAD (Iglewicz & Hoaglin's modified z-score, robust to the outliers themselves).
An image is an outlier when z < -threshold. Fewer images, or a MAD of 0, leave z NULL:
undecided, not "fine".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

MIN_IMAGES = 5  # below this a median and MAD say nothing about one image
MAD_SCALE = 0.6745  # makes the MAD a standard-deviation estimate under normality


def centroid_scores(vecs: np.ndarray, artists: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """(cosine to the artist centroid, robust z) per row; NaN where undecided."""
    import numpy as np

    x = np.asarray(vecs, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    cos = np.full(len(x), np.nan)
    z = np.full(len(x), np.nan)
    labels = np.array([a or "" for a in artists], dtype=object)
    for artist in sorted(set(labels.tolist()) - {""}):
        rows = np.flatnonzero(labels == artist)
        centre = x[rows].mean(axis=0)
        centre /= max(np.linalg.norm(centre), 1e-12)
        cos[rows] = x[rows] @ centre
        if len(rows) < MIN_IMAGES:
            continue
        median = np.median(cos[rows])
        mad = np.median(np.abs(cos[rows] - median))
        if mad > 0:
            z[rows] = MAD_SCALE * (cos[rows] - median) / mad
    return cos, z

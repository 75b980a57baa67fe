"""Scoring: the metric registry, the statistics behind it, and the scoring run.

Reads the store's images, embeddings and the catalog; writes ``image_scores``,
``artist_scores``, ``checkpoint_scores``, ``artist_neighbors`` and ``comparisons``.
"""

"""Scoring: the metric registry, the statistics behind it, and the scoring run.

Reads the store's images, embeddings and the catalog; writes ``image_scores``,
``artist_scores``, ``checkpoint_scores``, ``artist_neighbors`` and ``comparisons``.

- ``metrics``: the registry and the vectorised metric functions;
- ``stats``: bootstrap intervals and verdicts;
- ``inputs``: what a run reads (manifests, store state, catalog, embeddings) and its fingerprint;
- ``aggregate``: image scores -> artist -> checkpoint, neighbours, comparisons (pure);
- ``notices``: what the numbers cannot say (undecided verdicts, NULL metrics, why) for ``score`` to print;
- ``write``: the one transaction that writes every table, ``score_state`` and the run rows;
- ``run``: ``score(workdir, ScoreConfig)``, the entry point that runs them in order.
"""

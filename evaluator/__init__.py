"""atelier evaluator: one sub-package per stage (workspace, generation, ingest, embedding,
scoring), tiny test components, the demo and the CLI; ``errors`` is their common base."""

"""atelier evaluator: checkpoints, generation, embedding, FAISS, metrics and the DuckDB store."""

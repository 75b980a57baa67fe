"""Embedding: open_clip image and text embeddings and the FAISS index over them.

Reads manifest images; writes ``embeddings/<model>/part-*.parquet`` and
``index/<model>.faiss``.
"""

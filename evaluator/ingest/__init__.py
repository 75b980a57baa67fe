"""Ingest: bring images atelier did not make (a folder, a labels CSV, reference sets).

Reads image folders and labels; writes ``imported/``, thumbnails, manifest shards and
the ``reference_images`` / ``reference_prototypes`` tables.
"""

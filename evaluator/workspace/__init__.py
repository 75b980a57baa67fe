"""The workdir every stage shares: its layout and lock, the DuckDB store, manifest shards,
run/image records with their provenance, thumbnails and the settings read from the environment.

Reads and writes only inside one workdir (``Workdir.resolve_inside`` refuses the rest).
"""

"""`atelier serve`: a read-only HTTP API over a workdir, for other programs.

Reads DIR/atelier.duckdb (through a copy of it, see ``snapshot``), the FAISS index and
the image files inside DIR; writes nothing. Modules:

- ``config``: ``ServeConfig`` (what the server answers and how) and the token file;
- ``errors``: ``ApiError`` (status, message, the bad field, close names) and ``suggest``;
- ``reader``: ``SnapshotReader`` / ``DirectReader``, a request's read-only view of the store;
- ``snapshot``: the server's copy of the store; ``readmodel``: each copy's hot tables as encoded JSON rows;
- ``search``: ``SearchEngine``, nearest images by image id (no torch) or text (CLIP, lazily);
- ``app``: ``create_app(config)``, the FastAPI application;
- ``client``: ``AtelierClient``, a small httpx client (the tests use it).
"""

"""Generation: load checkpoints (hub id, folder, single file, base + LoRA / textual
inversion) and render a plan's work units into PNGs with A1111 ``parameters``.

Reads a plan and a checkpoints TOML; writes ``images/``, ``thumbs/``, manifest shards,
``checkpoints/`` records and ``runs/<run_id>.json`` into the workdir.
"""

"""atelier catalog: artists, prompt templates, selections and the work-unit plan.

Reads ``styles.csv`` (``model``, checked by ``validate``; columns in ``schema``), the
template TOML files (``templates``) and, to rebuild the catalog, the public source lists
(``build``); writes ``styles.csv`` and plan files, always atomically (``atomic``).
"""

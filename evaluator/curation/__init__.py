"""Curation: sort and filter an image set before it is trained on or trusted.

Per image (content-addressed by SHA-256): decodability, size and aspect, perceptual
hashes, Stable Diffusion's invisible watermark, a visible-watermark probability, a LAION
aesthetic score and an artist-outlier score; per set: exact and near-duplicate groups.
Each image gets reason codes from :data:`evaluator.curation.config.REASONS`; nothing is
deleted. ``config`` (thresholds, reason codes), ``signals`` (the per-file worker),
``sdmark`` / ``detector`` / ``aesthetic`` (the models), ``duplicates`` / ``outliers``
(set-level), ``sources`` (what is curated), ``runner`` (the run), ``export`` (kohya/flat).
"""

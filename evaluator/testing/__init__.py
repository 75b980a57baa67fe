"""Tiny random-weight components (Stable Diffusion pipelines, CLIP) and a synthetic store,
built locally with no download: for tests, benchmarks and the demo.
"""

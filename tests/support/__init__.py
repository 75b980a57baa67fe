"""Helpers the tests share (builders, subprocess runners, store checks); not tests themselves.

Imported as ``support.<module>``: ``tests/`` is on ``sys.path`` because ``tests/conftest.py``
sits there. Fixtures live in ``tests/conftest.py``; test files never import each other.
"""

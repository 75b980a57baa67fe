"""Commands of this area (see evaluator/cli.py). Only click is imported at module level."""

from __future__ import annotations

import click  # noqa: F401

COMMANDS: list = []

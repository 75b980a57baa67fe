"""The one base class of every error atelier raises on purpose.

A bad input (a catalog line, a checkpoint file, a locked store) raises a subclass of
``AtelierError``; the CLI prints its message as one line and exits 1. Anything else is a
bug and keeps its traceback. Each subclass also derives from the builtin it used to be
(``ValueError`` or ``RuntimeError``), so code that caught those still works.

This module imports nothing, so every package (``catalog`` included) can depend on it
without an import circle.
"""

from __future__ import annotations


class AtelierError(Exception):
    """An expected failure with a message for the user (a file, line or field that is wrong)."""


class InputError(AtelierError, ValueError):
    """An input that cannot be used: the message names the file, line or field."""


class StateError(AtelierError, RuntimeError):
    """The workdir or the store is not in a state the command can work from."""

"""The serve snapshot's background copy yields the CPU: `at_low_priority`."""

from __future__ import annotations

import os
import threading

import pytest

from evaluator.serve.snapshot import BACKGROUND_NICE, at_low_priority


def _own_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_the_work_runs_at_the_lowest_priority_and_the_caller_keeps_its_own():
    before = _own_nice()
    inside, thread = at_low_priority(lambda: (_own_nice(), threading.get_native_id()))
    assert inside == max(before, BACKGROUND_NICE) == 19
    assert thread != threading.get_native_id()  # another thread: the caller's nice cannot be raised back
    assert _own_nice() == before


def test_the_result_and_the_error_reach_the_caller():
    assert at_low_priority(sum, [1, 2, 3]) == 6
    with pytest.raises(FileNotFoundError, match="no-such-store"):
        at_low_priority(open, "/nonexistent/no-such-store.duckdb")

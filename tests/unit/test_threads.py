"""The CLI makes torch's OpenMP threads sleep when idle, before torch loads, unless told otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

from evaluator.workspace.threads import WAIT_POLICY, prefer_sleeping_threads


def test_the_default_is_passive_and_a_users_choice_wins():
    assert prefer_sleeping_threads({}) == "PASSIVE"
    chosen = {WAIT_POLICY: "ACTIVE"}
    assert prefer_sleeping_threads(chosen) == "ACTIVE"
    assert chosen == {WAIT_POLICY: "ACTIVE"}


def test_the_cli_sets_the_policy_before_torch_is_imported():
    """Importing the CLI sets it (GNU OpenMP reads it once, when torch loads) and loads no torch."""
    env = {k: v for k, v in os.environ.items() if k != WAIT_POLICY}
    code = ("import os, sys; import evaluator.cli.main; "
            "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["PASSIVE", "False"]

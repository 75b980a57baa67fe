"""How torch's OpenMP threads wait: asleep, not spinning, unless the user says otherwise.

torch's CPU wheels use GNU OpenMP, whose idle threads spin for a while after each parallel
region before they sleep. Between the model's operations that spinning holds both cores of
a small machine, and the embedder's decode workers then run only when the kernel preempts
it. With ``OMP_WAIT_POLICY=PASSIVE`` the threads sleep at once: in bench/bench_embed.py (2
cores, ViT-B-32, 1 decode worker) the model alone ran as fast either way, while the
pipeline went from 79-83% of it to 85-87%.

GNU OpenMP reads the variable once, when torch loads it, so this must run before the first
``import torch``: the CLI calls it as it starts, bench/ calls it in its own processes, and a
library user who imports torch first keeps their own policy.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

WAIT_POLICY = "OMP_WAIT_POLICY"


def prefer_sleeping_threads(environ: MutableMapping[str, str] = os.environ) -> str:
    """Default ``OMP_WAIT_POLICY`` to PASSIVE (a value already set wins); the policy in force."""
    return environ.setdefault(WAIT_POLICY, "PASSIVE")

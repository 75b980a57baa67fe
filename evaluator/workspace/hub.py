"""Whether the model hub can be reached, decided once per process and said in one line.

Without this, a machine with no route to the hub spends a minute in huggingface_hub's
retries (5 per file, each logged twice) before the load fails with a message about
HEAD requests. One TCP connection to the hub's host answers the question in at most
``timeout`` seconds; when it fails, huggingface_hub is switched to its offline mode for
this process (what ``HF_HUB_OFFLINE=1`` does), so cached weights still load at once and
missing ones fail at once. Reads ``HF_HUB_OFFLINE`` through settings; writes nothing.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from urllib.parse import urlparse

OFFLINE_NOTE = ("note: the model hub ({host}) is unreachable from here: only weights already in the "
                "local cache, local files and local folders can load")


@lru_cache(maxsize=1)
def hub_offline(timeout: float = 2.0) -> bool:
    """True when the hub must not be asked: ``HF_HUB_OFFLINE`` is set, or its host does not answer."""
    import socket

    from huggingface_hub import constants

    from evaluator.workspace import settings

    if settings.hub_offline() or constants.HF_HUB_OFFLINE:
        constants.HF_HUB_OFFLINE = True
        return True
    parsed = urlparse(constants.ENDPOINT)
    host, port = parsed.hostname or "huggingface.co", parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return False
    except OSError:
        constants.HF_HUB_OFFLINE = True  # read at call time by hf_hub_download and get_session
        print(OFFLINE_NOTE.format(host=host), file=sys.stderr)
        return True

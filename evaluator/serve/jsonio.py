"""JSON for the API: data frames as records (NaN and infinities as null, times as ISO text).

Reads and writes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

from starlette.responses import JSONResponse


def _default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if hasattr(value, "tolist"):  # numpy scalars and arrays (embeddings, list columns)
        return value.tolist()
    if isinstance(value, bytes | bytearray):
        return value.hex()
    return str(value)


def _clean(value: Any) -> Any:
    """A value JSON can carry: a missing or non-finite number is null, not NaN."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def records(frame) -> list[dict[str, Any]]:
    """The rows of a data frame as JSON-ready dicts (column order kept; NaN, NaT -> None)."""
    import numpy as np

    frame = frame.replace([np.inf, -np.inf], np.nan)
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


class ApiJSON(JSONResponse):
    """Strict JSON: never NaN (invalid JSON that JavaScript's JSON.parse refuses)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(_clean(content), default=_default, allow_nan=False,
                          ensure_ascii=False, separators=(",", ":")).encode("utf-8")

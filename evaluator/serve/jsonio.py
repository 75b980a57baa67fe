"""JSON for the API: data frames as records (NaN and infinities as null, times as ISO text).

Reads and writes nothing. A page of rows is encoded in C (by pandas, ``records_json``, or
by DuckDB for the read model's tables, ``readmodel.encode``) and spliced into the
response as is (``RawJSON``); the rest of a response goes through orjson.
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


class RawJSON:
    """JSON already encoded (a frame's rows, a read model's page), put into a response as it is."""

    __slots__ = ("data",)

    def __init__(self, text: str | bytes) -> None:
        self.data = text.encode("utf-8") if isinstance(text, str) else text


def records_json(frame) -> RawJSON:
    """The rows of a data frame as a JSON array: NaN, infinities and NaT as null, times ISO (µs),
    numbers rounded to 15 decimals."""
    return RawJSON(frame.to_json(orient="records", date_format="iso", date_unit="us", double_precision=15,
                                 force_ascii=False))


def _dumps(value: Any) -> bytes:
    """orjson (NaN and infinities as null, numpy values as numbers), ~10x json's speed; json for
    what orjson refuses (integers past 64 bits, from user SQL's HUGEINT sums)."""
    import orjson

    try:
        return orjson.dumps(value, default=_default, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(_clean(value), default=_default, allow_nan=False, ensure_ascii=False,
                          separators=(",", ":")).encode("utf-8")


class ApiJSON(JSONResponse):
    """Strict JSON: never NaN (invalid JSON that JavaScript's JSON.parse refuses); ``RawJSON``
    values of a top-level object are spliced in unchanged."""

    def render(self, content: Any) -> bytes:
        if isinstance(content, dict) and any(isinstance(v, RawJSON) for v in content.values()):
            parts = [_dumps(str(k)) + b":" + (v.data if isinstance(v, RawJSON) else _dumps(v))
                     for k, v in content.items()]
            return b"{" + b",".join(parts) + b"}"
        return _dumps(content)

"""JSON bodies with exact integers of any size: every body the API and the live stream send.

A position stays within signed 64 bits (``streams.contract.MAX_SIDE_TOTAL``), but a total over
many positions (a government, a province, the nation) need not: JSON numbers have no size limit
and Python's integers are exact, while orjson, fast on every other body, refuses an integer past
64 bits. So a body is encoded by orjson, and only when that fails on such an integer are those
integers written as they are (``orjson.Fragment``), digit for digit. Never a float, never a
string. (A JavaScript client reading totals past 2^53 needs a big-integer JSON parser; no real
balance comes near: the whole nation's local finance is about 10^15 KRW a year.)
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse

_INT64 = range(-(2**63), 2**64)  # what orjson writes itself (it takes unsigned 64-bit too)


def dumps(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj)
    except TypeError as exc:
        if "64-bit" not in str(exc):
            raise
    return orjson.dumps(_wide(obj))


def _wide(obj: Any) -> Any:
    """``obj`` with every integer beyond orjson's range as a fragment of its exact digits."""
    if isinstance(obj, int) and not isinstance(obj, bool):
        return obj if obj in _INT64 else orjson.Fragment(str(obj).encode())
    if isinstance(obj, dict):
        return {k: _wide(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_wide(v) for v in obj]
    return obj


class ExactJSONResponse(JSONResponse):
    """The API's JSON response (``dumps``)."""

    def render(self, content: Any) -> bytes:
        return dumps(content)

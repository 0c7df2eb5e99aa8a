"""How the typed results (`RunSummary`, `Analysis`, `Comparison`) become JSON: one plain
serialisation, the same for every output (docs/json-schema.md).

Dataclasses become objects with their fields in order, enums their value (an `IntEnum` such as
`Outcome` its lower-case name, e.g. `http_5xx`), tuples lists, dict keys strings. Three field
markers shape it: `NOT_SERIALISED` (what renderers need but the JSON does not carry, such as
the spec a summary describes), `OMIT_NONE` (the key is left out rather than null) and `FLATTEN`
(a nested object or dict whose keys sit in the parent object), and `rounded(digits)` (the
value is kept exact in memory, and written to that many decimals).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from typing import Any

import numpy as np

NOT_SERIALISED = {"serialise": False}
OMIT_NONE = {"omit_none": True}
FLATTEN = {"flatten": True}


def rounded(digits: int) -> dict[str, int]:
    return {"round": digits}


def plain(value: Any) -> Any:
    """`value` as JSON-able data (dicts, lists, str, int, float, bool, None)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            if not f.metadata.get("serialise", True):
                continue
            item = getattr(value, f.name)
            if item is None and f.metadata.get("omit_none"):
                continue
            if isinstance(item, float) and "round" in f.metadata:
                item = round(item, f.metadata["round"])
            if f.metadata.get("flatten"):
                out.update(plain(item) or {})
            else:
                out[f.name] = plain(item)
        return out
    if isinstance(value, enum.Enum):
        return value.name.lower() if isinstance(value, int) else value.value
    if isinstance(value, dict):
        return {_key(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no infinity (an open bucket's bound)
    return value


def dumps(value: Any) -> str:
    """`value` as the JSON every output writes: plain, indented, and strict JSON (a NaN or an
    infinity, which `plain` turns into null, would be a bug: it raises, never reaches a reader)."""
    return json.dumps(plain(value), indent=2, allow_nan=False)


def _key(key: Any) -> str:
    if isinstance(key, enum.Enum):
        return plain(key)
    return str(key)

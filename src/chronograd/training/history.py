"""History of a training run: one record per epoch."""

from __future__ import annotations

import math
from typing import Any


class History:
    """Per-epoch values (``loss``, ``val_loss``, ``val_<metric>``, ``lr``, ...).

    ``history["val_loss"]`` is the list of values in epoch order (NaN where an epoch lacks the
    value); ``history.records`` the raw records.
    """

    def __init__(self, records: list[dict[str, float]] | None = None) -> None:
        self.records: list[dict[str, float]] = list(records or [])

    def append(self, epoch: int, **values: float) -> None:
        """Add the record of ``epoch`` with its ``values``."""
        self.records.append({"epoch": float(epoch), **{k: float(v) for k, v in values.items()}})

    def update_last(self, **values: float) -> None:
        """Add values to the latest epoch's record (e.g. from a handler)."""
        if not self.records:
            raise ValueError("history is empty: no epoch has completed yet")
        self.records[-1].update({k: float(v) for k, v in values.items()})

    @property
    def keys(self) -> list[str]:
        """Every key recorded so far, in first-seen order."""
        seen: dict[str, None] = {}
        for r in self.records:
            for k in r:
                seen[k] = None
        return list(seen)

    def __getitem__(self, key: str) -> list[float]:
        if key not in self.keys:
            raise KeyError(f"no {key!r} in history; available: {self.keys}")
        return [r.get(key, math.nan) for r in self.records]

    def __contains__(self, key: object) -> bool:
        return key in self.keys

    def __len__(self) -> int:
        return len(self.records)

    def last(self, key: str) -> float:
        """The last recorded value of ``key``."""
        return self[key][-1]

    def best(self, key: str, mode: str = "min") -> float:
        """The smallest (``mode="min"``) or largest finite value of ``key``."""
        vals = [v for v in self[key] if not math.isnan(v)]
        if not vals:
            raise ValueError(f"no finite {key!r} values in history")
        return min(vals) if mode == "min" else max(vals)

    def state_dict(self) -> dict[str, Any]:
        """The records, for checkpoints."""
        return {"records": [dict(r) for r in self.records]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the records with :meth:`state_dict`'s."""
        self.records = [dict(r) for r in state["records"]]

    def __repr__(self) -> str:
        return f"History({len(self)} epochs, keys={self.keys})"

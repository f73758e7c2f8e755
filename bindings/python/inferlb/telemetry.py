"""Telemetry: the Python face of ilb_telemetry."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Iterator, Mapping

from ._ffi import SIGNAL_FIELDS, ilb_telemetry


@dataclass
class Telemetry(Mapping[str, float]):
    """Signals of one replica; a signal that is None is not present.

    Dict-like over the present signals: ``t["kv_cache_usage"]``,
    ``dict(t)``, ``"ttft_s" in t``. ``stale`` names the present signals whose
    age reached ILB_OPT_TELEMETRY_MAX_AGE_MS (output of Pool.telemetry()).
    """
    requests_waiting: float | None = None
    requests_running: float | None = None
    kv_cache_usage: float | None = None
    gpu_utilization: float | None = None
    gpu_memory_free: float | None = None
    gpu_memory_total: float | None = None
    prefix_hit_rate: float | None = None
    gen_tokens_per_s: float | None = None
    ttft_s: float | None = None
    queue_time_s: float | None = None
    request_rate: float | None = None
    max_concurrency: float | None = None
    model_ready: float | None = None
    kv_block_size: float | None = None
    kv_blocks_total: float | None = None
    timestamp_ns: int = 0
    stale: frozenset[str] = field(default_factory=frozenset)

    # Mapping over present signals
    def __getitem__(self, name: str) -> float:
        if name not in SIGNAL_FIELDS:
            raise KeyError(name)
        v = getattr(self, name)
        if v is None:
            raise KeyError(name)
        return v

    def __iter__(self) -> Iterator[str]:
        return (n for n in SIGNAL_FIELDS if getattr(self, n) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Telemetry):
            return all(getattr(self, f.name) == getattr(other, f.name)
                       for f in fields(self))
        return Mapping.__eq__(self, other)

    __hash__ = None  # type: ignore[assignment]

    def fresh(self) -> dict[str, float]:
        """The present signals that are not stale."""
        return {k: v for k, v in self.items() if k not in self.stale}

    def to_c(self) -> ilb_telemetry:
        t = ilb_telemetry()
        present = 0
        for bit, name in enumerate(SIGNAL_FIELDS):
            v = getattr(self, name)
            if v is not None:
                setattr(t, name, float(v))
                present |= 1 << bit
        t.present = present
        t.timestamp_ns = int(self.timestamp_ns)
        return t

    @classmethod
    def from_c(cls, t: ilb_telemetry) -> "Telemetry":
        kw: dict[str, object] = {}
        stale = []
        for bit, name in enumerate(SIGNAL_FIELDS):
            if t.present >> bit & 1:
                kw[name] = getattr(t, name)
                if t.stale >> bit & 1:
                    stale.append(name)
        return cls(timestamp_ns=int(t.timestamp_ns), stale=frozenset(stale),
                   **kw)  # type: ignore[arg-type]

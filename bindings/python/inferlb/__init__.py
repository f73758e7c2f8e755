"""inferlb: Python binding (ctypes) of the inferlb load-balancing library.

    import inferlb
    with inferlb.Pool(policy="composite", scan_max=16) as pool:
        pool.add_replica("http://gpu-0:8000", weight=5)
        pool.add_replica("http://gpu-1:8000", weight=2)
        with pool.pick() as t:          # completes OK, or as an error on raise
            send(t.replica_id)

Since 0.6, a Router over pools (routes, splits, mirrors, rate limits,
sticky sessions, prefill/decode pairs):

    with inferlb.Router() as router:
        router.add_pool(llama_v1, "llama-3", "v1")
        router.add_pool(llama_v2, "llama-3", "v2")
        router.set_routes([inferlb.Route("canary", backends=[
            inferlb.Backend("llama-3", "v1", weight=95),
            inferlb.Backend("llama-3", "v2", weight=5)])])
        with router.pick(model="llama-3", key=session) as r:
            send(r.host_data)

The library is loaded by SONAME (libinferlb.so.0); set INFERLB_LIBRARY to
a build tree's libinferlb.so.0 to use that one. A library of another major
version is refused with ImportError.
"""
from __future__ import annotations

import ctypes as _ctypes

from . import _constants as constants
from ._constants import *  # noqa: F401,F403  (ILB_* names and the enums)
from ._constants import (AllStale, Breaker, Dialect, DueKind, Errno,
                         EventType, Excluded, Health, KVEventType, LogLevel,
                         MatchKind, NoKey, Option, OutcomeStatus, Policy,
                         PoolRole, PrefixMode, Priority, ProbeResult, Reason,
                         ReplicaState, RetryOn, RetryVerdict, Signal)
from ._ffi import BINDING_MAJOR, lib as _lib
from .errors import *  # noqa: F401,F403
from .errors import ERRORS, InferlbError, check as _check
from .pool import (Autoscale, Due, Event, Outcome, Pool, PoolStatus,
                   PrefixStats, Replica, ReplicaInfo, Request, RetryDecision,
                   RetryState, Ticket, log_to_logging, option_bounds,
                   option_id, policy_id)
from .router import (Backend, Match, RateLimit, Route, RouteResult, Router,
                     RouteTicket, stats_prometheus)
from .scrape import Scrape
from .telemetry import Telemetry

__version__ = "0.6.0"


def version() -> int:
    """ilb_version(): MAJOR * 10000 + MINOR * 100 + PATCH of the library."""
    return int(_lib.ilb_version())


def version_string() -> str:
    return _lib.ilb_version_string().decode()


def strerror(code: int) -> str:
    return _lib.ilb_strerror(code).decode()


def err_name(code: int) -> str:
    return _lib.ilb_err_name(code).decode()


def policy_name(policy: int) -> str | None:
    s = _lib.ilb_policy_name(policy)
    return s.decode() if s is not None else None


def signal_name(signal: int) -> str | None:
    s = _lib.ilb_signal_name(signal)
    return s.decode() if s is not None else None


def dialect_name(dialect: int) -> str | None:
    s = _lib.ilb_dialect_name(dialect)
    return s.decode() if s is not None else None


def health_name(health: int) -> str | None:
    """"unknown", "healthy", "unhealthy", "starting" (None: unknown value)."""
    s = _lib.ilb_health_name(health)
    return s.decode() if s is not None else None


def reason_name(reason: int) -> str | None:
    """"none", "probe_passed", ... (Reason in lower case; None: unknown)."""
    s = _lib.ilb_reason_name(reason)
    return s.decode() if s is not None else None


def breaker_name(breaker: int) -> str | None:
    """"closed", "open", "half_open" (None: unknown value)."""
    s = _lib.ilb_breaker_name(breaker)
    return s.decode() if s is not None else None


def hash64(data: bytes | str, seed: int = 0) -> int:
    """XXH64, the hash the hashing policies apply to keys (seed 0)."""
    if isinstance(data, str):
        data = data.encode()
    out = _ctypes.c_uint64()
    _check(_lib.ilb_hash64(_ctypes.byref(out), data, len(data), seed))
    return out.value


__all__ = ["Pool", "Ticket", "Replica", "ReplicaInfo", "Event", "Scrape",
           "Telemetry", "Request", "Outcome", "Due", "PoolStatus",
           "PrefixStats", "RetryState", "RetryDecision", "Autoscale",
           "Router", "Route", "Match", "Backend", "RateLimit", "RouteTicket",
           "RouteResult", "stats_prometheus", "InferlbError",
           "ERRORS", "AllStale", "Breaker", "Dialect", "DueKind", "Errno",
           "EventType", "Excluded", "Health", "KVEventType", "LogLevel",
           "MatchKind", "NoKey", "Option", "OutcomeStatus", "Policy",
           "PoolRole", "PrefixMode",
           "Priority", "ProbeResult", "Reason",
           "ReplicaState", "RetryOn", "RetryVerdict", "Signal", "constants",
           "version", "version_string", "strerror", "err_name",
           "policy_name", "signal_name", "dialect_name", "health_name",
           "reason_name", "breaker_name", "hash64",
           "option_bounds", "option_id", "policy_id", "log_to_logging",
           "BINDING_MAJOR"]

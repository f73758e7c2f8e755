"""Pool, Ticket, ReplicaInfo, Event, (since 0.4) health, drain and
retries, (since 0.5) prefix-cache-aware routing and (since 0.6) locality
and the autoscaling signal: the Pythonic face of ilb_pool."""
from __future__ import annotations

import array
import ctypes
import logging
import operator
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import (Any, Callable, Iterable, Iterator, Mapping, NamedTuple,
                    TypeVar)

from ._constants import (ILB_KV_RESTART, Breaker, DueKind, Errno, EventType,
                         Excluded, Health, KVEventType, LogLevel, Option,
                         OutcomeStatus, Policy, Priority, ProbeResult, Reason,
                         ReplicaState, RetryVerdict)
from ._ffi import (CLOCK_FN, EVENT_FN, LOG_FN, PREFIX_STATS_FIELDS,
                   SIGNAL_FIELDS, c_int32, c_int64, c_size_t, c_uint64,
                   ilb_autoscale, ilb_due, ilb_host, ilb_kv_event, ilb_label,
                   ilb_outcome, ilb_pick_result, ilb_pool_status,
                   ilb_prefix_stats, ilb_replica_info, ilb_replica_spec,
                   ilb_request, ilb_retry_result, ilb_retry_state,
                   ilb_telemetry, lib)
from .errors import (InferlbError, InvalidArgumentError, ReplicaRemovedError,
                     StaleTicketError, check, error)
from .telemetry import Telemetry

_log = logging.getLogger("inferlb")
_byref = ctypes.byref

ClockFn = Callable[[], int]
EventFn = Callable[["Event"], None]
LogFn = Callable[[LogLevel, str], None]


def log_to_logging(level: int, msg: str) -> None:
    """A ready-made ``log=`` callback: forward to the "inferlb" logger."""
    py = {1: logging.ERROR, 2: logging.WARNING, 3: logging.INFO}
    _log.log(py.get(int(level), logging.DEBUG), "%s", msg)


def policy_id(policy: int | str) -> int:
    """A policy's id from its name ("p2c") or id."""
    if isinstance(policy, str):
        out = c_int32()
        check(lib.ilb_policy_from_name(_byref(out), policy.encode()),
              f"policy {policy!r}")
        return out.value
    return int(policy)


def option_id(option: int | str) -> int:
    """An option's id from its lower-case name ("p2c_choices") or id."""
    if isinstance(option, str):
        try:
            return int(Option[option.upper()])
        except KeyError:
            raise error(Errno.EUNKNOWN, f"option {option!r}") from None
    return int(option)


def option_bounds(option: int | str) -> tuple[int, int, int]:
    """(min, max, default) of an option."""
    lo, hi, de = c_int64(), c_int64(), c_int64()
    check(lib.ilb_option_bounds(_byref(lo), _byref(hi), _byref(de),
                                option_id(option)), f"option {option!r}")
    return lo.value, hi.value, de.value


_E = TypeVar("_E")


def _enum(cls: Callable[[int], _E], value: int) -> _E | int:
    """cls(value), or the plain int for a value this binding does not know
    (a newer library of the same major version)."""
    try:
        return cls(value)
    except ValueError:
        return int(value)


@dataclass(frozen=True)
class Event:
    """One replica state change (ilb_event).

    Pool-wide events (EventType.PANIC) have replica_id and host_data None
    and no states (old_state and new_state None). reason says why (since
    0.4; Reason.NONE for the events of 0.3: added, removed, weight, state).
    For HEALTH and BREAKER events old_value / new_value are Health /
    Breaker values; see the header for the other types."""
    type: EventType
    old_state: ReplicaState | None
    new_state: ReplicaState | None
    replica_id: str | None
    host_data: Any
    old_value: int
    new_value: int
    timestamp_ns: int
    reason: Reason = Reason.NONE


@dataclass(frozen=True)
class ReplicaInfo:
    """State of a replica (ilb_replica_info). latency_ewma_ms is None when
    peak_ewma has no observation yet."""
    id: str
    weight: int
    capacity: int
    state: ReplicaState
    in_flight: int
    completed: int
    failed: int
    tokens_in_flight: int
    latency_ewma_ms: float | None
    n_labels: int
    host_data: Any
    # since 0.4
    health: Health
    breaker: Breaker
    excluded: Excluded  # what keeps it out of picks; 0 = nothing
    ejections: int
    errors: int
    weight_percent: int  # effective weight, < 100 during slow start

    @property
    def available(self) -> bool:
        """Eligible for picks now (state ACTIVE): nothing excludes it --
        the host, health, ejection, breaker, drain. During a panic only
        the host, a drain and the health of a replica not ready yet
        (Health.UNKNOWN, Health.STARTING) keep it out; an UNHEALTHY,
        ejected or breaker-open replica is available then."""
        return self.state == ReplicaState.ACTIVE


Replica = ReplicaInfo


@dataclass(frozen=True)
class Request:
    """What the host knows about a request (ilb_request), for
    pick(request=...) and retry(..., request=...). key: affinity key of
    the hashing policies; prompt_tokens / output_tokens: estimates;
    priority: Priority.SHEDDABLE requests are shed first (since 0.4).

    Since 0.5, for the prefix policy (ignored by the others):
    block_hashes: the prompt as a chain of block hashes (ints 0..2^64-1,
    in order; an array.array("Q") is passed without a copy; give a
    sequence, not an iterator, when the Request is reused); prompt: the
    prompt text (str, sent as UTF-8, or bytes), which the library cuts
    into prefix_block_bytes blocks and hashes itself (block_hashes wins
    when both are given); model: the request attribute "model", which
    seeds that hashing; attrs: other request attributes (str -> str).

    Since 0.6: zone: the client's zone (locality: the pool picks among
    the replicas of that zone while they are healthy and not overloaded,
    see Option.LOCALITY); attrs and model are also what a Router's routes
    match on."""
    key: bytes | str | None = None
    prompt_tokens: int = 0
    output_tokens: int = 0
    priority: int = Priority.CRITICAL
    block_hashes: Iterable[int] | None = None
    prompt: bytes | str | None = None
    model: str | None = None
    attrs: Mapping[str, str] | None = None
    zone: str | None = None


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended (ilb_outcome), for retry(). Measurements are
    clamped as in Ticket.complete()."""
    status: int = OutcomeStatus.OK
    http_status: int = 0
    latency_ns: int = 0
    ttft_ns: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0


class Due(NamedTuple):
    """One thing ilb_next_due asks the host to do now: probe the replica's
    health endpoint (DueKind.PROBE, then health_report()) or scrape its
    /metrics (DueKind.SCRAPE, then report()). health: its current health,
    to choose the probe's timeout."""
    replica_id: str
    host_data: Any
    kind: DueKind
    health: Health


@dataclass(frozen=True)
class PrefixStats:
    """What the prefix index holds and has done (ilb_pool_prefix_stats).
    Counters count since the policy was chosen or the index was emptied
    (prefix_table_blocks changed)."""
    entries: int         # block entries with at least one holder
    capacity: int        # entries the index can hold
    memory_bytes: int    # bytes allocated for the index
    lookups: int         # picks that carried blocks
    blocks: int          # blocks those picks looked up
    matched_blocks: int  # of them, in the matched prefix of the replica picked
    recorded: int        # (block, replica) records written
    evicted: int         # entries evicted by the global cap
    dropped: int         # updates skipped: bucket busy
    events: int          # KV events applied
    stale_events: int    # KV events refused as stale

    @property
    def hit_rate(self) -> float:
        """matched_blocks / blocks: the index's predicted cache hit rate
        (0.0 before any lookup)."""
        return self.matched_blocks / self.blocks if self.blocks else 0.0


@dataclass(frozen=True)
class PoolStatus:
    """Pool-wide health (ilb_pool_health)."""
    replicas: int
    eligible: int        # none of the Excluded bits set
    healthy: int         # active health HEALTHY
    ejected: int
    breakers_open: int   # open, not half-open
    draining: int
    panic: bool
    in_flight: int
    retries: int                 # granted by retry() so far
    retries_denied_budget: int   # refused by the retry budget
    shed: int                    # picks refused with ShedError


@dataclass(frozen=True)
class Autoscale:
    """One step of the pool's autoscaling signal (ilb_pool_autoscale):
    what it recommends and why. Feed ``recommended`` to the autoscaler
    (KEDA, an HPA external metric, the host's own)."""
    current: int          # replicas in the pool
    ready: int            # of them, routable now
    desired: int          # raw recommendation now (before the windows)
    recommended: int      # after the stabilisation windows
    in_flight: int        # requests in flight in the pool
    waiting: int          # requests waiting on the replicas (telemetry)
    arrival_per_s: float  # picks per second since the previous call
    service_per_s: float  # requests per second the ready replicas finish
                          # (0.0: unknown, no latency yet)
    utilization: float    # arrival / service (0.0 when unknown)
    overloaded: bool      # arrival > service: add replicas or shed


class RetryState:
    """One request's attempts so far (ilb_retry_state): make one per
    request after its first pick (Pool.retry_state()) and pass it to every
    Pool.retry() of that request. Its contents are the library's. It may
    be shared by threads (say, attempts of one request running at once):
    Pool.retry() holds its lock around the C call, so the attempts never
    pass retry_max_attempts (at most ILB_RETRY_TRIED_MAX)."""
    __slots__ = ("_c", "_lock")

    def __init__(self) -> None:
        self._c = ilb_retry_state()
        self._lock = threading.Lock()
        check(lib.ilb_retry_state_init(_byref(self._c)),
              "ilb_retry_state_init")

    @property
    def attempts(self) -> int:
        """Picks made for the request, the first included."""
        with self._lock:
            return int(self._c.attempts)

    def __repr__(self) -> str:
        return f"RetryState(attempts={self.attempts})"


@dataclass(frozen=True)
class RetryDecision:
    """What retry() decided. verdict YES: send the request again on
    ``ticket`` (a new Ticket, to complete or retry like any other) after
    backoff_ns. NO_REPLICA: the pick failed with ``error`` (an InferlbError:
    NoReplicaError, SaturatedError, ShedError, ...), backoff_ns its
    retry_after_ns. Otherwise (NOT_RETRYABLE, ATTEMPTS, BUDGET) give up.
    True in a boolean context exactly when verdict is YES. (Rarely the new
    ticket is on the replica that just failed: when the retry raced that
    other replica's removal -- see Pool.retry.)"""
    verdict: RetryVerdict
    error: InferlbError | None
    backoff_ns: int
    ticket: "Ticket | None"

    def __bool__(self) -> bool:
        return self.verdict == RetryVerdict.YES

    @property
    def replica_id(self) -> str | None:
        return self.ticket.replica_id if self.ticket is not None else None

    @property
    def host_data(self) -> Any:
        return self.ticket.host_data if self.ticket is not None else None

    @property
    def backoff_s(self) -> float:
        return self.backoff_ns / 1e9


class _Record:
    """What the handle in a replica's C host_data stands for."""
    __slots__ = ("id", "host_data")

    def __init__(self, id: str, host_data: Any) -> None:
        self.id = id
        self.host_data = host_data


def _status_of(exc: BaseException) -> int:
    """Outcome for a ticket whose ``with`` block raised: the exception's
    ``inferlb_status`` attribute if it has one, TIMEOUT for TimeoutError,
    REFUSED for ConnectionRefusedError (nothing was done: safe to retry),
    CANCELLED for a cancellation or KeyboardInterrupt, else CONNECT_ERROR."""
    st = getattr(exc, "inferlb_status", None)
    if st is not None:
        return int(st)
    if isinstance(exc, TimeoutError):
        return OutcomeStatus.TIMEOUT
    if isinstance(exc, ConnectionRefusedError):
        return OutcomeStatus.REFUSED
    name = type(exc).__name__
    if name == "CancelledError" or isinstance(exc, KeyboardInterrupt):
        return OutcomeStatus.CANCELLED
    return OutcomeStatus.CONNECT_ERROR


_I32_MIN, _I32_MAX = -(1 << 31), (1 << 31) - 1
_U32_MAX, _U64_MAX = (1 << 32) - 1, (1 << 64) - 1


def _clamp(value: int, hi: int) -> int:
    """A measurement clamped to 0..hi (like the Go binding's nonNeg)."""
    v = int(value)
    return 0 if v < 0 else hi if v > hi else v


def _code(value: int, what: str) -> int:
    """status / http_status / priority: an int32, else InvalidArgumentError
    (the ticket stays valid, as for the C library's own EINVAL)."""
    v = int(value)
    if not _I32_MIN <= v <= _I32_MAX:
        raise error(Errno.EINVAL, f"{what} {v} out of range")
    return v


def _c_outcome(status: int, http_status: int, latency_ns: int, ttft_ns: int,
               prompt_tokens: int, output_tokens: int) -> ilb_outcome | None:
    """The ilb_outcome of a completion (None: OK, nothing measured).
    status and http_status must fit an int32 (InvalidArgumentError); the
    measurements are clamped to their C range, never wrapped."""
    status = _code(status, "status")
    http_status = _code(http_status, "http_status")
    latency_ns = _clamp(latency_ns, _U64_MAX)
    ttft_ns = _clamp(ttft_ns, _U64_MAX)
    prompt_tokens = _clamp(prompt_tokens, _U32_MAX)
    output_tokens = _clamp(output_tokens, _U32_MAX)
    if (status == 0 and not http_status and not latency_ns and
            not ttft_ns and not prompt_tokens and not output_tokens):
        return None
    return ilb_outcome(_OUTCOME_SIZE, status, http_status, latency_ns,
                       ttft_ns, prompt_tokens, output_tokens)


_index = operator.index


def _c_hashes(hashes: Iterable[int] | None, what: str) -> tuple[Any, int]:
    """Block hashes as a C uint64 array (None when there are none) and
    their count. Each must be an integer 0..2^64-1: a negative or too large
    one is InvalidArgumentError (ctypes would wrap it), a non-integer (or a
    str / bytes instead of a sequence) TypeError. They are converted (and
    range-checked) by array.array("Q"); one given as such an array is used
    in place, without a copy."""
    if hashes is None:
        return None, 0
    if not (isinstance(hashes, array.array) and hashes.itemsize == 8 and
            hashes.typecode in "QL"):
        if isinstance(hashes, (str, bytes, bytearray, memoryview)):
            # array.array would read bytes as raw machine words
            raise TypeError(f"{what}: block_hashes must be a sequence of "
                            f"ints, not {type(hashes).__name__}")
        try:
            hashes = array.array("Q", hashes)
        except OverflowError:
            raise error(Errno.EINVAL, f"{what}: a block hash is outside "
                        "0..2^64-1") from None
        except TypeError as e:
            raise TypeError(f"{what}: block_hashes must be a sequence of "
                            f"ints ({e})") from None
    n = len(hashes)
    return ((c_uint64 * n).from_buffer(hashes) if n else None), n


def _c_str(value: Any, what: str) -> bytes:
    """A str as NUL-terminated UTF-8 for C (InvalidArgumentError when it
    holds a NUL, which C would read as its end)."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    b = value.encode()
    if b"\0" in b:
        raise error(Errno.EINVAL, f"{what} {value!r} contains a NUL")
    return b


def _c_attrs(model: str | None, attrs: Mapping[str, str] | None) -> Any:
    """The request attributes as a C ilb_label array (None when none):
    model first, as "model"; giving "model" both ways is an error."""
    items: list[ilb_label] = []
    if model is not None:
        items.append(ilb_label(b"model", _c_str(model, "model")))
    if attrs:
        for k, v in attrs.items():
            if k == "model" and model is not None:
                raise error(Errno.EINVAL, "model given both as model= and "
                            "in attrs")
            items.append(ilb_label(_c_str(k, "attribute key"),
                                   _c_str(v, f"attribute {k!r}")))
    return (ilb_label * len(items))(*items) if items else None


def _c_request(key: bytes | str | None, prompt_tokens: int,
               output_tokens: int, priority: int,
               block_hashes: Iterable[int] | None = None,
               prompt: bytes | str | None = None, model: str | None = None,
               attrs: Mapping[str, str] | None = None,
               zone: str | None = None
               ) -> tuple[ilb_request | None, tuple[Any, ...]]:
    """The ilb_request of a pick or retry (None: no request) and what it
    points to (key bytes, block hash array, prompt bytes, attributes,
    zone), which the caller keeps referenced until the C call has
    returned."""
    if (key is None and not prompt_tokens and not output_tokens and
            not priority and block_hashes is None and prompt is None and
            model is None and not attrs and zone is None):
        return None, ()
    req = ilb_request()
    kb = None
    if key is not None:
        kb = key.encode() if isinstance(key, str) else bytes(key)
        req.key = ctypes.cast(ctypes.c_char_p(kb), ctypes.c_void_p)
        req.key_len = len(kb)
    req.prompt_tokens = prompt_tokens
    req.output_tokens = output_tokens
    req.priority = _code(priority, "priority")
    arr, n = _c_hashes(block_hashes, "request")
    if arr is not None:
        req.block_hashes = ctypes.cast(arr, ctypes.POINTER(c_uint64))
        req.n_blocks = n
    pb = None
    if prompt is not None:
        if isinstance(prompt, str):
            pb = prompt.encode()
        elif isinstance(prompt, (bytes, bytearray, memoryview)):
            pb = bytes(prompt)
        else:
            raise TypeError("prompt must be str or bytes, not "
                            f"{type(prompt).__name__}")
        req.prompt = pb
        req.prompt_len = len(pb)
    labels = _c_attrs(model, attrs)
    if labels is not None:
        req.attrs = ctypes.cast(labels, ctypes.POINTER(ilb_label))
        req.n_attrs = len(labels)
    zb = None
    if zone is not None:
        zb = _c_str(zone, "zone")
        req.zone = zb
    return req, (kb, arr, pb, labels, zb)


def _request_args(request: Request) -> tuple[Any, ...]:
    """A Request's fields in _c_request's order."""
    return (request.key, request.prompt_tokens, request.output_tokens,
            request.priority, request.block_hashes, request.prompt,
            request.model, request.attrs, request.zone)


class Ticket:
    """One picked request. Complete it exactly once, with complete() or by
    using it as a context manager (OK on normal exit, an error outcome --
    see _status_of -- when the block raises; latency measured)."""
    __slots__ = ("_pool", "ticket", "replica_id", "host_data", "_done",
                 "_t0")

    def __init__(self, pool: "Pool", ticket: int, replica_id: str,
                 host_data: Any) -> None:
        self._pool = pool
        self.ticket = ticket
        self.replica_id = replica_id
        self.host_data = host_data
        self._done = False
        self._t0 = time.monotonic_ns()

    @property
    def done(self) -> bool:
        return self._done

    def complete(self, status: int = OutcomeStatus.OK, http_status: int = 0,
                 latency_ns: int = 0, ttft_ns: int = 0,
                 prompt_tokens: int = 0, output_tokens: int = 0) -> None:
        """ilb_complete. A second call raises StaleTicketError (ESTALE);
        ReplicaRemovedError (EREMOVED) means the ticket was released but its
        replica is gone. On InvalidArgumentError the ticket stays valid.

        The measurements latency_ns, ttft_ns (uint64) and prompt_tokens,
        output_tokens (uint32) are clamped to their C range: a negative
        value becomes 0 ("unknown"), as in the Go binding, a too large one
        the type's maximum -- never wrapped around. status and http_status
        are checked by the C library; values that do not even fit its
        int32 raise InvalidArgumentError (the ticket stays valid)."""
        if self._done:
            raise StaleTicketError(Errno.ESTALE,
                                   f"ticket {self.ticket:#x} already completed")
        out = _c_outcome(status, http_status, latency_ns, ttft_ns,
                         prompt_tokens, output_tokens)
        self._finish(self._complete_c(None if out is None else _byref(out)))

    def _complete_c(self, out_p: Any) -> int:
        """The C completion (ilb_complete; a router's ticket: overridden)."""
        pool = self._pool._h
        if not pool:
            raise error(Errno.EINVAL, "pool is closed")
        return _ilb_complete(pool, self.ticket, out_p)

    def _closed(self) -> bool:
        return not self._pool._h

    def _finish(self, rc: int) -> None:
        """Mark the ticket done as the completion's code says, or raise."""
        if rc == 0:
            self._done = True
            return
        if rc in (Errno.EREMOVED, Errno.ESTALE):
            self._done = True
        raise error(rc, f"complete {self.replica_id!r}")

    def __enter__(self) -> "Ticket":
        return self

    def __exit__(self, et: Any, exc: BaseException | None, tb: Any) -> None:
        """Complete the ticket. When the block raised, this never raises
        over its exception: an outcome the C library rejects (say the
        exception's http_status is 999) is completed again with the status
        alone, then as CONNECT_ERROR; a completion that still fails (pool
        closed) is logged."""
        if self._done:
            return
        latency = max(1, time.monotonic_ns() - self._t0)
        if exc is None:
            try:
                self.complete(latency_ns=latency)
            except ReplicaRemovedError:
                pass  # released; the replica left the pool meanwhile
            return
        try:
            status = int(_status_of(exc))
        except Exception:
            status = OutcomeStatus.CONNECT_ERROR
        try:
            http = int(getattr(exc, "http_status", 0) or 0)
        except Exception:
            http = 0
        attempts = [dict(status=status, http_status=http, latency_ns=latency),
                    dict(status=status, latency_ns=latency),
                    dict(status=OutcomeStatus.CONNECT_ERROR,
                         latency_ns=latency)]
        last: BaseException | None = None
        for kw in attempts:
            try:
                self.complete(**kw)  # type: ignore[arg-type]
                return
            except InvalidArgumentError as e:  # ticket still valid: retry
                last = e
                if self._closed():
                    break
            except InferlbError:
                return  # EREMOVED / ESTALE: released
            except Exception as e:
                last = e
                break
        _log.warning("inferlb: could not complete %r after %s: %s",
                     self, type(exc).__name__, last)

    def __repr__(self) -> str:
        return (f"Ticket({self.replica_id!r}, ticket={self.ticket:#x}, "
                f"done={self._done})")


_OUTCOME_SIZE = ctypes.sizeof(ilb_outcome)
_new_struct = ctypes.Structure.__new__
_ilb_pick = lib.ilb_pick
_ilb_complete = lib.ilb_complete
_PICK_SIZE = ctypes.sizeof(ilb_pick_result)
_PICK_RETRIES = 8
_CANCELLED = ilb_outcome(_OUTCOME_SIZE, int(OutcomeStatus.CANCELLED))


class Pool:
    """A set of replicas and the policy that chooses among them.

    Pool(policy="p2c", seed=0, clock=None, on_event=None, log=None,
         log_level=LogLevel.WARN, **options)

    clock() -> int nanoseconds (monotonic); on_event(Event); log(level,
    msg). Exceptions raised by them are logged (logger "inferlb") and never
    reach C; a failing clock returns its last good value. options are
    ILB_OPT_* by lower-case name, e.g. max_in_flight=1024, scan_max=8.
    Thread-safe like the C pool; close() must not race other calls.
    """

    def __init__(self, policy: int | str = "p2c", seed: int = 0,
                 clock: ClockFn | None = None,
                 on_event: EventFn | None = None,
                 log: LogFn | None = None,
                 log_level: int = LogLevel.WARN,
                 **options: int | str) -> None:
        self._h = ctypes.c_void_p()
        self._records: dict[int, _Record] = {}
        self._by_id: dict[str, int] = {}
        self._next_handle = 1
        self._lock = threading.RLock()
        # Open batch() depth, and handles of replicas removed inside it:
        # picks see the old snapshot (and may return them) until the
        # outermost commit, so their records stay until then.
        self._batch_depth = 0
        self._removed: list[int] = []
        # Set by Router.add_pool: the router holds a reference to the C
        # pool (and this object), which may outlive close().
        self._in_router = False
        host = ilb_host()
        check(lib.ilb_host_init(_byref(host)), "ilb_host_init")
        host.seed = seed
        host.log_level = int(log_level)
        # The CFUNCTYPE objects live on the pool as long as the C pool does.
        self._callbacks: list[Any] = []
        if clock is not None:
            host.clock_ns = self._keep(_wrap_clock(clock))
        if on_event is not None:
            host.on_event = self._keep(_wrap_event(on_event, self._records))
        if log is not None:
            host.log = self._keep(_wrap_log(log))
        check(lib.ilb_pool_new(_byref(self._h), _byref(host)), "ilb_pool_new")
        try:
            self.set_option(Option.POLICY, policy)
            for name, value in options.items():
                self.set_option(name, value)
        except BaseException:
            self.close()
            raise

    def _keep(self, cb: Any) -> Any:
        self._callbacks.append(cb)
        return cb

    def _handle(self) -> ctypes.c_void_p:
        h = self._h
        if not h:
            raise error(Errno.EINVAL, "pool is closed")
        return h

    # --- lifetime -------------------------------------------------------
    def close(self) -> None:
        """Free the C pool (outstanding tickets become invalid). A pool
        added to a Router lives on in it until the router is closed: this
        only drops the host's reference (the router still picks from it,
        so its callbacks and replica records are kept)."""
        if self._h:
            lib.ilb_pool_free(self._h)
            self._h = ctypes.c_void_p()
        if not self._in_router:
            self._callbacks = []

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # --- options --------------------------------------------------------
    def set_option(self, option: int | str, value: int | str) -> None:
        """ilb_pool_set_option; option by name or id, policy by name too."""
        opt = option_id(option)
        if opt == Option.POLICY:
            value = policy_id(value)
        with self._lock:
            check(lib.ilb_pool_set_option(self._handle(), opt, int(value)),
                  f"option {option!r} = {value!r}")

    def get_option(self, option: int | str) -> int:
        out = c_int64()
        opt = option_id(option)
        check(lib.ilb_pool_get_option(_byref(out), self._handle(), opt),
              f"option {option!r}")
        return Policy(out.value) if opt == Option.POLICY else out.value

    @property
    def policy(self) -> str:
        return lib.ilb_policy_name(self.get_option(Option.POLICY)).decode()

    @contextmanager
    def batch(self) -> Iterator["Pool"]:
        """Group writes; picks see them all at once at the end (the
        outermost commit). Batches nest.

        When the block raises, the batch is still committed and the block's
        exception propagates; a failing commit then is only logged. When the
        block ends normally and the commit fails (NoMemoryError: the C
        library could not build the snapshot), that error is raised and,
        as in C, the batch stays open: retry with batch_commit()."""
        with self._lock:
            check(lib.ilb_pool_batch_begin(self._handle()), "batch_begin")
            self._batch_depth += 1
            try:
                yield self
            except BaseException:
                try:
                    self.batch_commit()
                except Exception:
                    _log.exception("inferlb: batch commit failed while "
                                   "unwinding an exception (batch open)")
                raise
            self.batch_commit()

    def batch_commit(self) -> None:
        """ilb_pool_batch_commit: end one level of batch(). Only needed to
        retry a commit that failed at the end of a ``with pool.batch()``
        block (the batch then stays open)."""
        with self._lock:
            check(lib.ilb_pool_batch_commit(self._handle()), "batch_commit")
            if self._batch_depth > 0:
                self._batch_depth -= 1
            if self._batch_depth == 0:
                for handle in self._removed:  # published: picks are past it
                    self._records.pop(handle, None)
                self._removed.clear()

    # --- replicas -------------------------------------------------------
    def __len__(self) -> int:
        n = c_size_t()
        check(lib.ilb_pool_count(_byref(n), self._handle()))
        return n.value

    def __contains__(self, id: object) -> bool:
        return id in self._by_id

    def ids(self) -> list[str]:
        """The replica ids (the C API has no enumeration: mirrored here)."""
        return list(self._by_id)

    def add_replica(self, id: str, weight: int = 1, capacity: int = 0,
                    zone: str | None = None,
                    labels: Mapping[str, str] | None = None,
                    host_data: Any = None) -> None:
        spec = ilb_replica_spec()
        check(lib.ilb_replica_spec_init(_byref(spec)))
        bid = id.encode()
        spec.id = bid
        spec.weight = weight
        spec.capacity = capacity
        spec.zone = zone.encode() if zone is not None else None
        if labels:
            arr = (ilb_label * len(labels))(*[
                ilb_label(k.encode(), v.encode()) for k, v in labels.items()])
            spec.labels = arr
            spec.n_labels = len(labels)
        with self._lock:
            handle = self._next_handle
            self._next_handle += 1
            spec.host_data = handle
            # In the table before the call: ADDED fires inside it.
            self._records[handle] = _Record(id, host_data)
            rc = lib.ilb_replica_add(self._handle(), _byref(spec))
            if rc < 0:
                del self._records[handle]
                raise error(rc, f"add {id!r}")
            self._by_id[id] = handle

    def remove_replica(self, id: str) -> None:
        """ilb_replica_remove. Outside a batch the removal is published
        when this returns; inside one, at the outermost commit -- until
        then picks may still return the replica, with its host_data."""
        with self._lock:
            check(lib.ilb_replica_remove(self._handle(), id.encode()),
                  f"remove {id!r}")
            handle = self._by_id.pop(id, None)
            if handle is not None:
                if self._batch_depth > 0:
                    self._removed.append(handle)
                else:
                    self._records.pop(handle, None)

    remove = remove_replica

    def set_weight(self, id: str, weight: int) -> None:
        with self._lock:
            check(lib.ilb_replica_set_weight(self._handle(), id.encode(),
                                             weight), f"set_weight {id!r}")

    def set_available(self, id: str, available: bool) -> None:
        with self._lock:
            check(lib.ilb_replica_set_available(
                self._handle(), id.encode(), 1 if available else 0),
                f"set_available {id!r}")

    def replica(self, id: str) -> ReplicaInfo:
        info = ilb_replica_info()
        check(lib.ilb_replica_get(_byref(info), self._handle(), id.encode()),
              f"replica {id!r}")
        rec = self._records.get(info.host_data or 0)
        ewma = info.latency_ewma_ms
        return ReplicaInfo(id=id, weight=info.weight, capacity=info.capacity,
                           state=ReplicaState(info.state),
                           in_flight=info.in_flight,
                           completed=info.completed, failed=info.failed,
                           tokens_in_flight=info.tokens_in_flight,
                           latency_ewma_ms=None if ewma < 0 else ewma,
                           n_labels=info.n_labels,
                           host_data=rec.host_data if rec else None,
                           health=_enum(Health, info.health),
                           breaker=_enum(Breaker, info.breaker),
                           excluded=Excluded(info.excluded),
                           ejections=info.ejections, errors=info.errors,
                           weight_percent=info.weight_percent)

    def replicas(self) -> list[ReplicaInfo]:
        return [self.replica(i) for i in self.ids()]

    # --- telemetry ------------------------------------------------------
    def report(self, id: str, telemetry: Mapping[str, float] | None = None,
               *, timestamp_ns: int = 0, **signals: float) -> None:
        """ilb_replica_report: signals by field name (requests_waiting=3,
        kv_cache_usage=0.5, ...) and/or a Telemetry / mapping of them."""
        t = ilb_telemetry()
        present = 0
        merged: dict[str, float] = dict(telemetry or {})
        merged.update(signals)
        for name, value in merged.items():
            try:
                bit = SIGNAL_FIELDS.index(name)
            except ValueError:
                raise error(Errno.EUNKNOWN, f"signal {name!r}") from None
            if value is None:
                continue
            setattr(t, name, float(value))
            present |= 1 << bit
        t.present = present
        if not timestamp_ns and isinstance(telemetry, Telemetry):
            timestamp_ns = telemetry.timestamp_ns
        t.timestamp_ns = timestamp_ns
        check(lib.ilb_replica_report(self._handle(), id.encode(), _byref(t)),
              f"report {id!r}")

    def telemetry(self, id: str) -> Telemetry:
        t = ilb_telemetry()
        check(lib.ilb_replica_telemetry(_byref(t), self._handle(),
                                        id.encode()), f"telemetry {id!r}")
        return Telemetry.from_c(t)

    # --- pick -----------------------------------------------------------
    def pick(self, key: bytes | str | None = None, prompt_tokens: int = 0,
             output_tokens: int = 0, priority: int = Priority.CRITICAL, *,
             request: Request | None = None,
             block_hashes: Iterable[int] | None = None,
             prompt: bytes | str | None = None, model: str | None = None,
             attrs: Mapping[str, str] | None = None,
             zone: str | None = None) -> Ticket:
        """Choose a replica; returns a Ticket to complete exactly once.
        request=Request(...) gives every field at once (the other arguments
        are then ignored). block_hashes, prompt, model and attrs (since
        0.5): the prompt for the prefix policy, see Request. zone (since
        0.6): the client's zone, for locality (Option.LOCALITY). Raises
        NoReplicaError, SaturatedError and ShedError (with
        .retry_after_ns), NoKeyError, TicketsFullError;
        InvalidArgumentError for a block hash outside 0..2^64-1 or a NUL in
        model / attrs, TypeError for arguments of the wrong type."""
        h = self._h
        if not h:
            raise error(Errno.EINVAL, "pool is closed")
        if request is not None:
            key, prompt_tokens, output_tokens, priority = (
                request.key, request.prompt_tokens, request.output_tokens,
                request.priority)
            block_hashes, prompt, model, attrs, zone = (
                request.block_hashes, request.prompt, request.model,
                request.attrs, request.zone)
        if (key is None and not prompt_tokens and not output_tokens and
                not priority and block_hashes is None and prompt is None and
                model is None and not attrs and zone is None):
            return self._pick(h, None)
        req, keep = _c_request(key, prompt_tokens, output_tokens, priority,
                               block_hashes, prompt, model, attrs, zone)
        t = self._pick(h, _byref(req))
        del keep  # referenced until here: req points into it
        return t

    def _pick(self, h: ctypes.c_void_p, req_p: Any) -> Ticket:
        res = _new_struct(ilb_pick_result)  # skips the Python __init__
        res.struct_size = _PICK_SIZE
        for _ in range(_PICK_RETRIES):
            rc = _ilb_pick(_byref(res), h, req_p)
            if rc < 0:
                e = error(rc, "pick")
                e.retry_after_ns = (  # type: ignore[attr-defined]
                    res.retry_after_ns)
                raise e
            rec = self._records.get(res.host_data)
            if rec is not None:
                return Ticket(self, res.ticket, rec.id, rec.host_data)
            # A removal raced this pick: the C pick read the snapshot from
            # before it was published, and remove_replica() dropped the
            # record once it returned. Give the ticket back (CANCELLED: not
            # the replica's fault; usually EREMOVED) and pick again: a pick
            # starting now no longer sees that replica.
            _ilb_complete(h, res.ticket, _byref(_CANCELLED))
        raise error(Errno.ENOREPLICA,
                    f"pick: chose only removed replicas {_PICK_RETRIES} "
                    "times")

    # --- health and failure handling (since 0.4) -------------------------
    def health_report(self, id: str, result: ProbeResult | int | bool
                      ) -> None:
        """ilb_health_report: one probe result for a replica, at the host
        clock's now. result is a ProbeResult (PASS, FAIL, NOT_READY); a
        bool means passed (True = PASS, False = FAIL)."""
        if isinstance(result, bool):
            result = ProbeResult.PASS if result else ProbeResult.FAIL
        with self._lock:
            check(lib.ilb_health_report(self._handle(), id.encode(),
                                        _code(result, "result")),
                  f"health_report {id!r}")

    def next_due(self, cap: int = 16) -> tuple[list[Due], int | None]:
        """ilb_next_due: run the pool's timers (ejections, breakers, drain
        deadlines, slow start, panic), deliver the pending events (to
        on_event, on this thread), and return (due, next_ns): at most cap
        probes / scrapes due now, and the host-clock time at which to call
        again (None: nothing is scheduled). Call it in a loop; a listed
        item is scheduled again one interval later whether or not it is
        reported. Replicas removed meanwhile are left out."""
        cap = int(cap)
        if cap < 0:
            raise error(Errno.EINVAL, f"next_due cap {cap}")
        arr = (ilb_due * cap)() if cap else None
        n, nxt = c_size_t(), c_uint64()
        with self._lock:
            check(lib.ilb_next_due(arr, ctypes.sizeof(ilb_due), cap,
                                   _byref(n), _byref(nxt), self._handle()),
                  "next_due")
            out = []
            for i in range(n.value):
                d = arr[i]  # type: ignore[index]
                # The record gives the id too (handles are never reused):
                # no C string is read after the call.
                rec = self._records.get(d.host_data or 0)
                if rec is not None:
                    out.append(Due(rec.id, rec.host_data,
                                   _enum(DueKind, d.kind),
                                   _enum(Health, d.health)))
        return out, None if nxt.value == _U64_MAX else nxt.value

    def drain(self, id: str, on: bool = True, timeout_ms: int = 0) -> None:
        """ilb_replica_drain: on=True takes the replica out of new picks;
        EventType.DRAINED fires when its last request in flight completes
        (at the next next_due() when a completion finished it, at once when
        none was in flight), or after timeout_ms (> 0) with new_value = the
        requests still in flight. on=False cancels the drain (no event).
        Remove the replica after DRAINED if wanted (not from on_event: a
        writer there is DeadlockError). Raises InvalidArgumentError for a
        negative timeout_ms and OutOfRangeError above 2^32 ms (about 50
        days: the C library's ILB_ERANGE), never wrapping it."""
        timeout_ms = int(timeout_ms)
        if timeout_ms < 0:
            raise error(Errno.EINVAL, f"drain timeout_ms {timeout_ms}")
        if timeout_ms > _U64_MAX:  # ctypes would wrap it modulo 2^64
            raise error(Errno.ERANGE, f"drain timeout_ms {timeout_ms}")
        with self._lock:
            check(lib.ilb_replica_drain(self._handle(), id.encode(),
                                        1 if on else 0, timeout_ms),
                  f"drain {id!r}")

    def health(self) -> PoolStatus:
        """ilb_pool_health: counts of the pool's replicas by health."""
        st = ilb_pool_status()
        check(lib.ilb_pool_health(_byref(st), self._handle()), "health")
        return PoolStatus(
            replicas=st.replicas, eligible=st.eligible, healthy=st.healthy,
            ejected=st.ejected, breakers_open=st.breakers_open,
            draining=st.draining, panic=bool(st.panic),
            in_flight=st.in_flight, retries=st.retries,
            retries_denied_budget=st.retries_denied_budget, shed=st.shed)

    # --- prefix-cache-aware routing (since 0.5) --------------------------
    def _no_index(self, rc: int) -> str:
        """Context for an EINVAL of the prefix calls: the likely cause."""
        if rc == Errno.EINVAL:
            try:
                if self.get_option(Option.POLICY) != Policy.PREFIX:
                    return f" (policy {self.policy!r} has no prefix index)"
            except InferlbError:
                pass
        return ""

    def kv_event(self, replica_id: str, type: KVEventType | int,
                 block_hashes: Iterable[int] = (), seq: int = 0,
                 restart: bool = False) -> None:
        """ilb_replica_kv_event: a replica's KV-cache event for the prefix
        index (vLLM's BlockStored -> KVEventType.STORED, BlockRemoved ->
        REMOVED, AllBlocksCleared -> CLEARED). block_hashes: the blocks, in
        the prompt's order, hashed as the requests' block_hashes. seq: the
        publisher's sequence number (0 = unordered, always applied); an
        event with seq below the last one applied for this replica is
        stale: StaleTicketError (code ESTALE), nothing changes.
        restart=True (ILB_KV_RESTART): the publisher restarted -- forget
        what the index knows of the replica first and take seq as the new
        baseline. Raises InvalidArgumentError (unknown type, a block hash
        outside 0..2^64-1, seq outside 0..2^64-1, the pool's policy is not
        prefix), NotFoundError, DeadlockError (from a callback)."""
        ev = ilb_kv_event()
        ev.type = _code(type, "type")
        seq = _index(seq)
        if not 0 <= seq <= _U64_MAX:
            raise error(Errno.EINVAL, f"kv_event seq {seq} outside "
                        "0..2^64-1")
        ev.seq = seq
        ev.flags = ILB_KV_RESTART if restart else 0
        arr, n = _c_hashes(block_hashes, "kv_event")
        if arr is not None:
            ev.block_hashes = ctypes.cast(arr, ctypes.POINTER(c_uint64))
            ev.n_blocks = n
        with self._lock:
            rc = lib.ilb_replica_kv_event(self._handle(), replica_id.encode(),
                                          _byref(ev))
        del arr  # referenced until here: ev points into it
        if rc < 0:
            if rc == Errno.ESTALE:
                raise error(rc, f"kv_event {replica_id!r}: seq {seq} is "
                            "below the last one applied (stale event)")
            raise error(rc, f"kv_event {replica_id!r}" + self._no_index(rc))

    def prefix_stats(self) -> PrefixStats:
        """ilb_pool_prefix_stats: what the prefix index holds and has done.
        InvalidArgumentError when the pool's policy is not prefix. Takes
        the pool's lock; O(prefix_table_blocks)."""
        st = ilb_prefix_stats()
        rc = lib.ilb_pool_prefix_stats(_byref(st), self._handle())
        if rc < 0:
            raise error(rc, "prefix_stats" + self._no_index(rc))
        return PrefixStats(*[getattr(st, f) for f in PREFIX_STATS_FIELDS])

    # --- autoscaling signal (since 0.6) -----------------------------------
    def autoscale(self) -> Autoscale:
        """ilb_pool_autoscale: one step of the pool's autoscaling signal.
        Call it periodically (every 5 to 30 s): the arrival rate is
        measured between calls, and ``recommended`` follows the
        stabilisation windows (Option.SCALE_UP_WINDOW_MS,
        SCALE_DOWN_WINDOW_MS) over the calls' history. Tuned by the
        scale_* options. Takes the pool's lock (DeadlockError from a
        callback); O(replicas)."""
        a = ilb_autoscale()
        check(lib.ilb_pool_autoscale(_byref(a), self._handle()), "autoscale")
        return Autoscale(
            current=a.current, ready=a.ready, desired=a.desired,
            recommended=a.recommended, in_flight=a.in_flight,
            waiting=a.waiting, arrival_per_s=a.arrival_per_s,
            service_per_s=a.service_per_s, utilization=a.utilization,
            overloaded=bool(a.overloaded))

    def retry_state(self) -> RetryState:
        """A new RetryState for one request (attempts = 1: its first pick)."""
        return RetryState()

    def retry(self, state: RetryState, ticket: Ticket,
              outcome: Outcome | int | None,
              request: Request | None = None) -> RetryDecision:
        """ilb_retry: an attempt ended with outcome (an Outcome, or just an
        OutcomeStatus); complete ``ticket`` with it (passive health sees
        it) and decide whether to try again, on another replica than the
        request's earlier attempts when one has room. request should be the
        one of the first pick (its key, for the hashing policies).

        Returns a RetryDecision (true when verdict is YES: its .ticket is
        the next attempt's). The old ticket is done once this returns,
        also when its replica was removed meanwhile. Raises
        InvalidArgumentError (a bad outcome: the ticket stays valid) and
        StaleTicketError (the ticket was completed already).

        state may be shared by threads: its lock is held around the C
        call. A retry that races a removal (the replica the library chose
        for it was removed before its record was read) falls back to a
        plain pick(), which does not know the request's earlier attempts:
        it may return the replica that just failed (or another one tried
        before). Compare decision.replica_id with the failed ticket's when
        that matters."""
        if ticket._done:
            raise StaleTicketError(Errno.ESTALE, f"ticket {ticket.ticket:#x}"
                                   " already completed")
        h = self._handle()
        if outcome is None:
            out = None
        elif isinstance(outcome, Outcome):
            out = _c_outcome(outcome.status, outcome.http_status,
                             outcome.latency_ns, outcome.ttft_ns,
                             outcome.prompt_tokens, outcome.output_tokens)
        else:
            out = _c_outcome(int(outcome), 0, 0, 0, 0, 0)
        if request is None:
            req, keep = None, ()
        else:
            req, keep = _c_request(*_request_args(request))
        req_p = None if req is None else _byref(req)
        res = ilb_retry_result()
        with state._lock:  # attempts never pass ILB_RETRY_TRIED_MAX
            rc = lib.ilb_retry(_byref(res), h, _byref(state._c), req_p,
                               ticket.ticket, None if out is None else
                               _byref(out))
        if rc < 0:
            if rc == Errno.ESTALE:
                ticket._done = True
            raise error(rc, f"retry {ticket.replica_id!r}")
        ticket._done = True
        verdict = _enum(RetryVerdict, res.verdict)
        backoff = int(res.backoff_ns)
        err: InferlbError | None = None
        new: Ticket | None = None
        if verdict == RetryVerdict.YES:
            rec = self._records.get(res.host_data or 0)
            if rec is not None:
                new = Ticket(self, res.ticket, rec.id, rec.host_data)
            else:
                # The replica's removal raced this pick (see pick()): give
                # the ticket back and pick as pick() does. That plain pick
                # does not avoid the request's earlier attempts: it may
                # return the replica that just failed (documented above).
                _ilb_complete(h, res.ticket, _byref(_CANCELLED))
                try:
                    new = self._pick(h, req_p)
                except InferlbError as e:
                    verdict, err = RetryVerdict.NO_REPLICA, e
                    backoff = int(getattr(e, "retry_after_ns", 0) or 0)
        elif res.error:
            err = error(res.error, "retry: pick")
            err.retry_after_ns = backoff  # type: ignore[attr-defined]
        del keep  # referenced until here: req points into it
        return RetryDecision(verdict=verdict,  # type: ignore[arg-type]
                             error=err, backoff_ns=backoff, ticket=new)


def _wrap_clock(fn: ClockFn) -> Any:
    last = [0]

    def clock_cb(_ud: Any) -> int:
        try:
            v = int(fn())
            last[0] = v
            return v
        except BaseException:
            _log.exception("inferlb: clock callback raised; using %d",
                           last[0])
            return last[0]
    return CLOCK_FN(clock_cb)


def _wrap_event(fn: EventFn, records: dict[int, _Record]) -> Any:
    def event_cb(p: Any, _ud: Any) -> None:
        try:
            ev = p.contents
            rec = records.get(ev.replica_host_data or 0)
            rid = ev.replica_id  # NULL for pool-wide events (PANIC)
            fn(Event(type=_enum(EventType, ev.type),  # type: ignore[arg-type]
                     old_state=_enum(ReplicaState, ev.old_state)
                     if ev.old_state else None,  # type: ignore[arg-type]
                     new_state=_enum(ReplicaState, ev.new_state)
                     if ev.new_state else None,  # type: ignore[arg-type]
                     replica_id=None if rid is None else rid.decode(),
                     host_data=rec.host_data if rec else None,
                     old_value=ev.old_value, new_value=ev.new_value,
                     timestamp_ns=ev.timestamp_ns,
                     reason=_enum(Reason, ev.reason)))  # type: ignore
        except BaseException:
            _log.exception("inferlb: on_event callback raised (ignored)")
    return EVENT_FN(event_cb)


def _wrap_log(fn: LogFn) -> Any:
    def log_cb(level: int, msg: Any, n: int, _ud: Any) -> None:
        try:
            text = ctypes.string_at(msg, n).decode("utf-8", "replace")
            try:
                lv: int = LogLevel(level)
            except ValueError:
                lv = level
            fn(lv, text)  # type: ignore[arg-type]
        except BaseException:
            _log.exception("inferlb: log callback raised (ignored)")
    return LOG_FN(log_cb)


__all__ = ["Pool", "Ticket", "ReplicaInfo", "Replica", "Event", "Request",
           "Outcome", "Due", "PoolStatus", "PrefixStats", "RetryState",
           "RetryDecision", "Autoscale",
           "log_to_logging", "option_bounds", "option_id", "policy_id",
           "InferlbError"]

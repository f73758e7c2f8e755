"""Router (since 0.6): pools by model and version, routes (matches,
weighted splits, mirrors), rate limits, sticky sessions and
prefill/decode pairs -- the Pythonic face of ilb_router -- and the
Prometheus text export of a router's or a pool's stats."""
from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence, TypeVar

from ._constants import (Errno, LogLevel, MatchKind, OutcomeStatus, PoolRole,
                         Priority)
from ._ffi import (c_int64, c_size_t, c_uint32, ilb_backend, ilb_host,
                   ilb_label, ilb_match, ilb_outcome, ilb_rate_limit,
                   ilb_route, ilb_route_result, ilb_router_pool_spec, lib)
from .errors import check, error
from .pool import (ClockFn, LogFn, Outcome, Pool, Request, Ticket,
                   _c_outcome, _c_request, _c_str, _code, _wrap_clock,
                   _wrap_log, option_id)

_byref = ctypes.byref
_U32_MAX, _U64_MAX = (1 << 32) - 1, (1 << 64) - 1


# --- what the host configures ------------------------------------------------

@dataclass(frozen=True)
class Match:
    """One condition of a route on a request attribute (ilb_match):
    MatchKind.EXACT (the attribute's value equals ``value``), PREFIX
    (starts with it), PRESENT, ABSENT (``value`` unused: leave it None).
    Attributes are what the request carries in attrs= (headers, ":path")
    and model= ("model"); compared byte for byte."""
    key: str
    value: str | None = None
    kind: int = MatchKind.EXACT


@dataclass(frozen=True)
class Backend:
    """A route's target (ilb_backend): the pool added as (model, version).
    model None: the request's own model (its "model" attribute); version
    None: "". weight: the odds of a split, 0..ILB_WEIGHT_MAX (0 takes
    nothing; a route needs one above 0)."""
    model: str | None = None
    version: str | None = None
    weight: int = 1


@dataclass(frozen=True)
class Route:
    """One route (ilb_route): the first route whose matches all hold
    (none: every request -- a default route, placed last) sends the
    request to one of its backends, by weight (with an affinity key the
    side of a split is fixed by the key's hash). mirror_model /
    mirror_version: a pool that gets a copy of mirror_percent (0..100) of
    the route's requests (RouteResult.mirror). Matches and backends may be
    given as Match / Backend, or as dicts of their fields."""
    name: str
    backends: Sequence[Backend | Mapping[str, Any]] | Backend
    matches: Sequence[Match | Mapping[str, Any]] | Match = ()
    mirror_model: str | None = None
    mirror_version: str | None = None
    mirror_percent: int = 0


@dataclass(frozen=True)
class RateLimit:
    """A rate limit (ilb_rate_limit, GCRA: a bucket of ``burst`` tokens
    refilled at rate per period_ms), one bucket per key. key_attr: the
    request attribute whose value is the key ("x-api-key", "tenant",
    "model"; a request without it is not limited by this limit); None:
    the request's affinity key (key=); "": one key for every request (a
    global limit)."""
    name: str
    rate: int
    period_ms: int = 1000
    burst: int = 1
    key_attr: str | None = None


_T = TypeVar("_T")


def _as(cls: type[_T], value: Any, what: str) -> _T:
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        return cls(**value)
    raise TypeError(f"{what} must be a {cls.__name__} or a dict, not "
                    f"{type(value).__name__}")


def _items(cls: type[_T], value: Any, what: str) -> list[_T]:
    """A sequence of cls (or dicts), or a single one."""
    if value is None:
        return []
    if isinstance(value, (cls, Mapping)):
        return [_as(cls, value, what)]
    return [_as(cls, v, what) for v in value]


def _opt_str(value: str | None, what: str) -> bytes | None:
    return None if value is None else _c_str(value, what)


def _uint(value: int, hi: int, what: str, code: int) -> int:
    """An unsigned C field: an int in 0..hi, else the error ``code`` (ctypes
    would wrap it silently)."""
    v = int(value)
    if not 0 <= v <= hi:
        raise error(code, f"{what} {v} out of range")
    return v


# --- tickets -----------------------------------------------------------------

class RouteTicket(Ticket):
    """A ticket of a router's pool: complete it exactly once with
    complete() or as a context manager (as a Ticket), through the router
    (ilb_router_complete). ``pool`` is the Pool it is in. A mirror's copy
    of a request (RouteResult.mirror) is one."""
    __slots__ = ("_router", "pool")

    def __init__(self, router: "Router", pool: Pool, ticket: int,
                 replica_id: str, host_data: Any) -> None:
        super().__init__(pool, ticket, replica_id, host_data)
        self._router = router
        self.pool = pool

    def _complete_c(self, out_p: Any) -> int:
        h = self._router._h
        if not h:
            raise error(Errno.EINVAL, "router is closed")
        return _ilb_router_complete(h, self.ticket, out_p)

    def _closed(self) -> bool:
        return not self._router._h

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.replica_id!r}, "
                f"ticket={self.ticket:#x}, done={self._done})")


class RouteResult(RouteTicket):
    """The answer of Router.pick (ilb_route_result): a RouteTicket
    (ticket, replica_id, host_data, pool; for a prefill/decode pair the
    decode replica) and how it was chosen.

    model, version: its pool's. route, backend: index of the route that
    matched and of its backend (-1: routed by model). sticky: the
    session's replica was reused. A pair (is_pair; its pool's role is
    DECODE) names the prefill replica too: prefill_replica_id,
    prefill_host_data, prefill_pool; complete() completes both halves
    with one outcome, complete_pair() with one each. mirror: a RouteTicket
    for a copy of the request (None: no mirror, not this request, or the
    mirror pick failed), sent by the host, its answer ignored, completed
    on its own -- leaving this result's ``with`` block does not complete
    it."""
    __slots__ = ("model", "version", "route", "backend",
                 "prefill_replica_id", "prefill_host_data", "prefill_pool",
                 "mirror", "sticky")

    def __init__(self, router: "Router", pool: Pool, ticket: int,
                 replica_id: str, host_data: Any, model: str, version: str,
                 route: int, backend: int) -> None:
        super().__init__(router, pool, ticket, replica_id, host_data)
        self.model = model
        self.version = version
        self.route = route
        self.backend = backend
        self.prefill_replica_id: str | None = None
        self.prefill_host_data: Any = None
        self.prefill_pool: Pool | None = None
        self.mirror: RouteTicket | None = None
        self.sticky = False

    @property
    def is_pair(self) -> bool:
        return self.prefill_pool is not None

    @property
    def mirror_ticket(self) -> int:
        return self.mirror.ticket if self.mirror is not None else 0

    @property
    def mirror_replica_id(self) -> str | None:
        return self.mirror.replica_id if self.mirror is not None else None

    @property
    def mirror_host_data(self) -> Any:
        return self.mirror.host_data if self.mirror is not None else None

    @property
    def mirror_pool(self) -> Pool | None:
        return self.mirror.pool if self.mirror is not None else None

    def complete_pair(self, prefill: Outcome | int | None = None,
                      decode: Outcome | int | None = None) -> None:
        """ilb_router_complete_pair: complete a pair with an outcome per
        half (an Outcome, an OutcomeStatus, or None: OK, nothing
        measured), so a failing prefill replica is charged for its own
        failures. InvalidArgumentError when this is not a pair (nothing
        changes); ReplicaRemovedError when a half's replica was removed
        (the other half is recorded, the ticket released)."""
        if self._done:
            raise error(Errno.ESTALE,
                        f"ticket {self.ticket:#x} already completed")
        h = self._router._h
        if not h:
            raise error(Errno.EINVAL, "router is closed")
        po, do = _outcome(prefill), _outcome(decode)
        rc = lib.ilb_router_complete_pair(
            h, self.ticket, None if po is None else _byref(po),
            None if do is None else _byref(do))
        self._finish(rc)

    def __repr__(self) -> str:
        pair = (f", prefill={self.prefill_replica_id!r}"
                if self.is_pair else "")
        return (f"RouteResult({self.replica_id!r}, model={self.model!r}, "
                f"version={self.version!r}, route={self.route}{pair}, "
                f"ticket={self.ticket:#x}, done={self._done})")


def _outcome(o: Outcome | int | None) -> ilb_outcome | None:
    if o is None:
        return None
    if isinstance(o, Outcome):
        return _c_outcome(o.status, o.http_status, o.latency_ns, o.ttft_ns,
                          o.prompt_tokens, o.output_tokens)
    return _c_outcome(int(o), 0, 0, 0, 0, 0)


class _Entry:
    """A pool as the router's records know it (by its C address)."""
    __slots__ = ("pool", "model", "version")

    def __init__(self, pool: Pool, model: str, version: str) -> None:
        self.pool = pool
        self.model = model
        self.version = version


_ilb_router_pick = lib.ilb_router_pick
_ilb_router_complete = lib.ilb_router_complete
_RES_SIZE = ctypes.sizeof(ilb_route_result)
_new_struct = ctypes.Structure.__new__
_PICK_RETRIES = 8
_CANCELLED = ilb_outcome(ctypes.sizeof(ilb_outcome),
                         int(OutcomeStatus.CANCELLED))


# --- the router --------------------------------------------------------------

class Router:
    """A router over pools (ilb_router): each pool serves one model at
    one version; routes, or else the request's model, choose the pool, and
    the pool's policy the replica.

    Router(seed=0, clock=None, log=None, log_level=LogLevel.WARN,
           **options)

    clock() -> int ns and log(level, msg) serve the router itself (sticky
    sessions' expiry, rate limits); each pool keeps its own. options: the
    router_* options by lower-case name (router_sticky_entries=0, ...).
    A context manager (close() at the end).

    Thread-safe like the C router: pick() and the tickets' complete()
    never wait for a writer; the other calls are serialised. close() must
    not race other calls. A pool added here lives until both it and the
    router are closed, in either order."""

    def __init__(self, seed: int = 0, clock: ClockFn | None = None,
                 log: LogFn | None = None, log_level: int = LogLevel.WARN,
                 **options: int) -> None:
        self._h = ctypes.c_void_p()
        self._lock = threading.RLock()
        # C address of each pool ever added -> its entry (kept after
        # remove_pool: its requests in flight still complete here).
        self._pools: dict[int, _Entry] = {}
        self._callbacks: list[Any] = []
        host = ilb_host()
        check(lib.ilb_host_init(_byref(host)), "ilb_host_init")
        host.seed = seed
        host.log_level = int(log_level)
        if clock is not None:
            host.clock_ns = self._keep(_wrap_clock(clock))
        if log is not None:
            host.log = self._keep(_wrap_log(log))
        check(lib.ilb_router_new(_byref(self._h), _byref(host)),
              "ilb_router_new")
        try:
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
            raise error(Errno.EINVAL, "router is closed")
        return h

    # --- lifetime -------------------------------------------------------
    def close(self) -> None:
        """Free the C router (ilb_router_free) and drop its references to
        its pools: a pool closed already is freed now."""
        if self._h:
            lib.ilb_router_free(self._h)
            self._h = ctypes.c_void_p()
            for e in self._pools.values():
                e.pool._in_router = False
                if not e.pool._h:  # closed while we held it: free now
                    e.pool._callbacks = []
            self._pools = {}
        self._callbacks = []

    def __enter__(self) -> "Router":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # --- options --------------------------------------------------------
    def set_option(self, option: int | str, value: int) -> None:
        """ilb_router_set_option: a router_* option by name or id (a pool
        option is UnknownError here). Changing router_sticky_entries
        forgets every session."""
        v = int(value)
        if not -(1 << 63) <= v < (1 << 63):
            raise error(Errno.ERANGE, f"option {option!r} = {v}")
        with self._lock:
            check(lib.ilb_router_set_option(self._handle(),
                                            option_id(option), v),
                  f"router option {option!r} = {value!r}")

    def get_option(self, option: int | str) -> int:
        out = c_int64()
        check(lib.ilb_router_get_option(_byref(out), self._handle(),
                                        option_id(option)),
              f"router option {option!r}")
        return out.value

    # --- pools ----------------------------------------------------------
    def add_pool(self, pool: Pool, model: str, version: str = "",
                 weight: int = 1, role: int = PoolRole.BOTH,
                 labels: Mapping[str, str] | None = None) -> None:
        """ilb_router_add_pool: route (model, version) to pool. weight: its
        share of the model's requests when no route matches (0: only
        through routes); role: PoolRole.BOTH, or PREFILL / DECODE for a
        prefill/decode split (a DECODE pool's picks are pairs with the
        PREFILL pool of the same model and version, which shares its
        name); labels: kept for the host. A pool joins at most one router
        in its life, and comes back after remove_pool under its own name
        only (BusyError otherwise); tickets it issued before it joined
        complete through it (Ticket), not through the router. Raises
        AlreadyExistsError ((model, version) taken), InvalidArgumentError,
        OutOfRangeError, TooBigError."""
        spec = ilb_router_pool_spec()
        check(lib.ilb_router_pool_spec_init(_byref(spec)))
        spec.model = _c_str(model, "model")
        spec.version = _c_str(version, "version")
        spec.weight = _uint(weight, _U32_MAX, "weight", Errno.ERANGE)
        spec.role = _code(role, "role")
        arr = None
        if labels:
            arr = (ilb_label * len(labels))(*[
                ilb_label(_c_str(k, "label key"), _c_str(v, f"label {k!r}"))
                for k, v in labels.items()])
            spec.labels = arr
            spec.n_labels = len(labels)
        with self._lock:
            ph = pool._handle()
            addr = int(ph.value or 0)
            # In the records before the call: a pick may return the pool as
            # soon as it is added.
            fresh = addr not in self._pools
            if fresh:
                self._pools[addr] = _Entry(pool, model, version)
            rc = lib.ilb_router_add_pool(self._handle(), _byref(spec), ph)
            if rc < 0:
                if fresh:
                    del self._pools[addr]
                raise error(rc, f"add_pool {model!r} {version!r}")
            pool._in_router = True
        del arr

    def remove_pool(self, model: str, version: str = "") -> None:
        """ilb_router_remove_pool: stop routing to (model, version) (both
        pools of a prefill/decode pair of that name). Its
        requests in flight still complete through the router; picks that
        resolve to it raise NoModelError until a pool is added under that
        name again or the routes change. NotFoundError if none."""
        with self._lock:
            check(lib.ilb_router_remove_pool(
                self._handle(), _c_str(model, "model"),
                _c_str(version, "version")),
                f"remove_pool {model!r} {version!r}")

    def pools(self) -> list[tuple[str, str, Pool]]:
        """(model, version, pool) of every pool added (removed ones too:
        the C API has no enumeration, this is the binding's record)."""
        return [(e.model, e.version, e.pool) for e in self._pools.values()]

    # --- routes, weights, rate limits -------------------------------------
    def set_routes(self, routes: Iterable[Route | Mapping[str, Any]]
                   ) -> None:
        """ilb_router_set_routes: replace the route table, at once (a pick
        sees the old table or the new one). Routes are tried in order; an
        empty list leaves routing by model only. A route may name pools
        not added yet. On error the old table stays. Raises
        InvalidArgumentError, OutOfRangeError, TooBigError,
        AlreadyExistsError (two routes with one name)."""
        rs = [_as(Route, r, "route") for r in routes]
        keep: list[Any] = []
        arr = (ilb_route * len(rs))() if rs else None
        for i, r in enumerate(rs):
            c = arr[i]  # type: ignore[index]
            check(lib.ilb_route_init(_byref(c)))
            c.name = _c_str(r.name, "route name")
            ms = _items(Match, r.matches, "match")
            if ms:
                marr = (ilb_match * len(ms))()
                for j, m in enumerate(ms):
                    marr[j].key = _c_str(m.key, "match key")
                    marr[j].value = _opt_str(m.value, "match value")
                    marr[j].kind = _code(m.kind, "match kind")
                c.matches = marr
                c.n_matches = len(ms)
                keep.append(marr)
            bs = _items(Backend, r.backends, "backend")
            if bs:
                barr = (ilb_backend * len(bs))()
                for j, b in enumerate(bs):
                    barr[j].model = _opt_str(b.model, "backend model")
                    barr[j].version = _opt_str(b.version, "backend version")
                    barr[j].weight = _uint(b.weight, _U32_MAX,
                                           "backend weight", Errno.ERANGE)
                c.backends = barr
                c.n_backends = len(bs)
                keep.append(barr)
            c.mirror_model = _opt_str(r.mirror_model, "mirror_model")
            c.mirror_version = _opt_str(r.mirror_version, "mirror_version")
            c.mirror_percent = _uint(r.mirror_percent, _U32_MAX,
                                     "mirror_percent", Errno.EINVAL)
        with self._lock:
            check(lib.ilb_router_set_routes(self._handle(), arr, len(rs)),
                  "set_routes")
        del keep

    def set_weights(self, route: str, weights: Sequence[int]) -> None:
        """ilb_router_set_weights: the weights of a route's backends (one
        per backend, in order), at once: canary steps (95/5, then 80/20,
        ...). Raises NotFoundError (no such route), InvalidArgumentError
        (not one weight per backend; all 0), OutOfRangeError."""
        ws = [_uint(w, _U32_MAX, "weight", Errno.ERANGE) for w in weights]
        arr = (c_uint32 * len(ws))(*ws) if ws else None
        with self._lock:
            check(lib.ilb_router_set_weights(
                self._handle(), _c_str(route, "route name"), arr, len(ws)),
                f"set_weights {route!r}")

    def set_rate_limits(self, limits: Iterable[RateLimit | Mapping[str, Any]]
                        ) -> None:
        """ilb_router_set_rate_limits: replace the rate limits (every
        request is checked against all of them, after its pool is
        resolved). A limit that keeps its name and parameters keeps its
        buckets; others start full. An empty list removes them. A pick over
        a limit raises RateLimitError (.retry_after_ns)."""
        ls = [_as(RateLimit, x, "rate limit") for x in limits]
        arr = (ilb_rate_limit * len(ls))() if ls else None
        for i, x in enumerate(ls):
            c = arr[i]  # type: ignore[index]
            check(lib.ilb_rate_limit_init(_byref(c)))
            c.name = _c_str(x.name, "rate limit name")
            c.key_attr = _opt_str(x.key_attr, "key_attr")
            c.rate = _uint(x.rate, _U64_MAX, "rate", Errno.EINVAL)
            c.period_ms = _uint(x.period_ms, _U64_MAX, "period_ms",
                                Errno.EINVAL)
            c.burst = _uint(x.burst, _U64_MAX, "burst", Errno.EINVAL)
        with self._lock:
            check(lib.ilb_router_set_rate_limits(self._handle(), arr,
                                                 len(ls)),
                  "set_rate_limits")

    # --- sessions -------------------------------------------------------
    def pin(self, key: bytes | str, model: str, replica_id: str | None,
            version: str = "", ttl_ms: int = 0) -> None:
        """ilb_router_pin: the session ``key``'s requests routed to pool
        (model, version) go to replica_id while it can take them, for
        ttl_ms (0: router_sticky_ttl_ms). replica_id None unpins. Raises
        InvalidArgumentError (empty key, sticky sessions off, a negative
        ttl_ms), NoModelError (no such pool), NotFoundError (no such
        replica), OutOfRangeError (ttl_ms too long)."""
        kb = key.encode() if isinstance(key, str) else bytes(key)
        ttl = int(ttl_ms)
        if ttl < 0:
            raise error(Errno.EINVAL, f"pin ttl_ms {ttl}")
        if ttl > _U64_MAX:
            raise error(Errno.ERANGE, f"pin ttl_ms {ttl}")
        rid = None if replica_id is None else _c_str(replica_id,
                                                      "replica_id")
        with self._lock:
            check(lib.ilb_router_pin(self._handle(), kb, len(kb),
                                     _c_str(model, "model"),
                                     _c_str(version, "version"), rid, ttl),
                  f"pin {model!r} {version!r}")

    def unpin(self, key: bytes | str, model: str, version: str = "") -> None:
        """Forget the session ``key`` in pool (model, version)."""
        self.pin(key, model, None, version)

    # --- pick -----------------------------------------------------------
    def pick(self, key: bytes | str | None = None, prompt_tokens: int = 0,
             output_tokens: int = 0, priority: int = Priority.CRITICAL, *,
             request: Request | None = None,
             block_hashes: Iterable[int] | None = None,
             prompt: bytes | str | None = None, model: str | None = None,
             attrs: Mapping[str, str] | None = None,
             zone: str | None = None) -> RouteResult:
        """ilb_router_pick: resolve the request's pool (routes, else
        model=), check the rate limits, and pick its replica (the
        session's, with key= and sticky sessions on). Arguments as
        Pool.pick (or request=Request(...)); routes match on model= and
        attrs=. Returns a RouteResult to complete exactly once (and its
        mirror, if any). Raises NoModelError, RateLimitError (with
        .retry_after_ns), and the pool's errors (NoReplicaError,
        SaturatedError, ShedError, NoKeyError, TicketsFullError)."""
        h = self._h
        if not h:
            raise error(Errno.EINVAL, "router is closed")
        if request is not None:
            req, keep = _c_request(
                request.key, request.prompt_tokens, request.output_tokens,
                request.priority, request.block_hashes, request.prompt,
                request.model, request.attrs, request.zone)
        else:
            req, keep = _c_request(key, prompt_tokens, output_tokens,
                                   priority, block_hashes, prompt, model,
                                   attrs, zone)
        r = self._pick(h, None if req is None else _byref(req))
        del keep  # referenced until here: req points into it
        return r

    def _pick(self, h: ctypes.c_void_p, req_p: Any) -> RouteResult:
        res = _new_struct(ilb_route_result)  # skips the Python __init__
        res.struct_size = _RES_SIZE
        for _ in range(_PICK_RETRIES):
            rc = _ilb_router_pick(_byref(res), h, req_p)
            if rc < 0:
                e = error(rc, "router pick")
                e.retry_after_ns = (  # type: ignore[attr-defined]
                    res.retry_after_ns)
                raise e
            out = self._result(h, res)
            if out is not None:
                return out
            # A replica it chose was removed meanwhile (its record is gone,
            # as in Pool.pick): the tickets were given back; pick again.
        raise error(Errno.ENOREPLICA, f"router pick: chose only removed "
                    f"replicas {_PICK_RETRIES} times")

    def _result(self, h: Any, res: ilb_route_result) -> RouteResult | None:
        pools = self._pools
        ent = pools.get(res.pool or 0)
        rec = ent.pool._records.get(res.host_data or 0) if ent else None
        pent = prec = None
        if rec is not None and res.prefill_pool:
            pent = pools.get(res.prefill_pool)
            if pent is not None:
                prec = pent.pool._records.get(res.prefill_host_data or 0)
        if ent is None or rec is None or (res.prefill_pool and
                                          prec is None):
            _ilb_router_complete(h, res.ticket, _byref(_CANCELLED))
            if res.mirror_ticket:
                _ilb_router_complete(h, res.mirror_ticket,
                                     _byref(_CANCELLED))
            return None
        out = RouteResult(self, ent.pool, res.ticket, rec.id, rec.host_data,
                          ent.model, ent.version, res.route, res.backend)
        out.sticky = bool(res.sticky)
        if pent is not None and prec is not None:
            out.prefill_replica_id = prec.id
            out.prefill_host_data = prec.host_data
            out.prefill_pool = pent.pool
        if res.mirror_ticket:
            ment = pools.get(res.mirror_pool or 0)
            mrec = (ment.pool._records.get(res.mirror_host_data or 0)
                    if ment else None)
            if ment is None or mrec is None:  # a mirror never fails a pick
                _ilb_router_complete(h, res.mirror_ticket,
                                     _byref(_CANCELLED))
            else:
                out.mirror = RouteTicket(self, ment.pool, res.mirror_ticket,
                                         mrec.id, mrec.host_data)
        return out


# --- stats export ------------------------------------------------------------

_STATS_SIZE = [16384]  # grows to the largest text seen


def stats_prometheus(router: Router | None = None,
                     pool: Pool | None = None) -> str:
    """ilb_stats_prometheus: the library's counters and gauges as
    Prometheus text (exposition format 0.0.4), of a router's pools
    (router=) or of one pool (pool=) -- exactly one of them. The buffer
    grows as needed (ILB_ENOSPC is never raised). Takes the router's lock,
    then each pool's in turn: not from a pool's on_event callback.
    O(replicas + routes)."""
    if (router is None) == (pool is None):
        raise error(Errno.EINVAL, "stats_prometheus: give router= or pool=")
    rh = router._handle() if router is not None else None
    ph = pool._handle() if pool is not None else None
    n = c_size_t()
    size = _STATS_SIZE[0]
    for _ in range(16):  # the text may grow between two calls
        buf = ctypes.create_string_buffer(size)
        rc = lib.ilb_stats_prometheus(buf, size, _byref(n), rh, ph)
        if rc == 0:
            if size > _STATS_SIZE[0]:
                _STATS_SIZE[0] = size
            return ctypes.string_at(buf, n.value).decode("utf-8", "replace")
        if rc != Errno.ENOSPC:
            raise error(rc, "stats_prometheus")
        size = max(size * 2, n.value + 1 + n.value // 4 + 1024)
    raise error(Errno.ENOSPC, "stats_prometheus: the text kept growing")


__all__ = ["Router", "Route", "Match", "Backend", "RateLimit",
           "RouteTicket", "RouteResult", "stats_prometheus"]

"""Low level: load libinferlb by SONAME, mirror its structs, declare every
exported function's argtypes/restype from one table (FUNCTIONS)."""
from __future__ import annotations

import ctypes
import os
from ctypes import (CFUNCTYPE, POINTER, Structure, c_char_p, c_double, c_int,
                    c_int32, c_int64, c_size_t, c_uint32, c_uint64, c_void_p)
from typing import Any

from ._constants import ILB_RETRY_TRIED_MAX, ILB_VERSION_MAJOR

SONAME = "libinferlb.so.0"
ENV_LIBRARY = "INFERLB_LIBRARY"
#: The major version this binding speaks; a library with another is refused.
BINDING_MAJOR = ILB_VERSION_MAJOR


# --- structs (field for field as in inferlb.h; struct_size filled by init) --

class _Sized(Structure):
    """A public struct: struct_size is set to sizeof() on construction."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.struct_size = ctypes.sizeof(self)


class ilb_event(_Sized):
    _fields_ = [("struct_size", c_size_t), ("type", c_int32),
                ("old_state", c_int32), ("new_state", c_int32),
                ("reason", c_int32),  # since 0.4 (reserved0 before)
                ("replica_id", c_char_p),  # NULL for ILB_EVENT_PANIC
                ("replica_host_data", c_void_p), ("old_value", c_uint64),
                ("new_value", c_uint64), ("timestamp_ns", c_uint64)]


CLOCK_FN = CFUNCTYPE(c_uint64, c_void_p)
EVENT_FN = CFUNCTYPE(None, POINTER(ilb_event), c_void_p)
LOG_FN = CFUNCTYPE(None, c_int32, POINTER(ctypes.c_char), c_size_t, c_void_p)
ALLOC_FN = CFUNCTYPE(c_void_p, c_size_t, c_void_p)
FREE_FN = CFUNCTYPE(None, c_void_p, c_void_p)
RAND_FN = CFUNCTYPE(c_uint64, c_void_p)


class ilb_host(_Sized):
    _fields_ = [("struct_size", c_size_t), ("clock_ns", CLOCK_FN),
                ("on_event", EVENT_FN), ("log", LOG_FN), ("alloc", ALLOC_FN),
                ("free", FREE_FN), ("rand", RAND_FN), ("seed", c_uint64),
                ("log_level", c_int32), ("reserved0", c_int32),
                ("user_data", c_void_p)]


class ilb_label(Structure):
    _fields_ = [("key", c_char_p), ("value", c_char_p)]


class ilb_replica_spec(_Sized):
    _fields_ = [("struct_size", c_size_t), ("id", c_char_p),
                ("weight", c_uint32), ("capacity", c_uint32),
                ("zone", c_char_p), ("labels", POINTER(ilb_label)),
                ("n_labels", c_size_t), ("host_data", c_void_p)]


class ilb_replica_info(_Sized):
    _fields_ = [("struct_size", c_size_t), ("host_data", c_void_p),
                ("weight", c_uint32), ("capacity", c_uint32),
                ("state", c_int32), ("n_labels", c_uint32),
                ("in_flight", c_int64), ("completed", c_uint64),
                ("failed", c_uint64), ("tokens_in_flight", c_uint64),
                ("latency_ewma_ms", c_double),
                # since 0.4
                ("health", c_int32), ("breaker", c_int32),
                ("excluded", c_uint32), ("ejections", c_uint32),
                ("errors", c_uint64), ("weight_percent", c_uint32),
                ("reserved0", c_uint32)]


#: Signal fields of ilb_telemetry, in enum ilb_signal order (bit i = field i).
SIGNAL_FIELDS: tuple[str, ...] = (
    "requests_waiting", "requests_running", "kv_cache_usage",
    "gpu_utilization", "gpu_memory_free", "gpu_memory_total",
    "prefix_hit_rate", "gen_tokens_per_s", "ttft_s", "queue_time_s",
    "request_rate", "max_concurrency", "model_ready", "kv_block_size",
    "kv_blocks_total")


class ilb_telemetry(_Sized):
    _fields_ = ([("struct_size", c_size_t), ("present", c_uint64),
                 ("stale", c_uint64), ("timestamp_ns", c_uint64)]
                + [(name, c_double) for name in SIGNAL_FIELDS])


class ilb_scrape_config(_Sized):
    _fields_ = [("struct_size", c_size_t), ("dialect", c_int32),
                ("reserved0", c_int32), ("label_key", c_char_p),
                ("label_value", c_char_p), ("line_max", c_size_t)]


class ilb_request(_Sized):
    _fields_ = [("struct_size", c_size_t), ("key", c_void_p),
                ("key_len", c_size_t), ("block_hashes", POINTER(c_uint64)),
                ("n_blocks", c_size_t), ("prompt", c_char_p),
                ("prompt_len", c_size_t), ("prompt_tokens", c_uint32),
                ("output_tokens", c_uint32), ("attrs", POINTER(ilb_label)),
                ("n_attrs", c_size_t),
                # since 0.4
                ("priority", c_int32), ("reserved0", c_int32),
                # since 0.6
                ("zone", c_char_p)]


class ilb_pick_result(_Sized):
    _fields_ = [("struct_size", c_size_t), ("ticket", c_uint64),
                ("replica_id", c_char_p), ("host_data", c_void_p),
                ("retry_after_ns", c_uint64)]


class ilb_outcome(_Sized):
    _fields_ = [("struct_size", c_size_t), ("status", c_int32),
                ("http_status", c_int32), ("latency_ns", c_uint64),
                ("ttft_ns", c_uint64), ("prompt_tokens", c_uint32),
                ("output_tokens", c_uint32)]


# --- health and failure handling (since 0.4) ------------------------------

class ilb_due(Structure):
    """One thing due (ilb_next_due). No struct_size: due_size is passed.
    replica_id is read through the binding's record of host_data, never
    here (see Pool.next_due), so it is a plain pointer."""
    _fields_ = [("replica_id", c_void_p), ("host_data", c_void_p),
                ("kind", c_int32), ("health", c_int32)]


class ilb_pool_status(_Sized):
    _fields_ = [("struct_size", c_size_t), ("replicas", c_uint32),
                ("eligible", c_uint32), ("healthy", c_uint32),
                ("ejected", c_uint32), ("breakers_open", c_uint32),
                ("draining", c_uint32), ("panic", c_int32),
                ("reserved0", c_uint32), ("in_flight", c_uint64),
                ("retries", c_uint64), ("retries_denied_budget", c_uint64),
                ("shed", c_uint64)]


class ilb_retry_state(_Sized):
    _fields_ = [("struct_size", c_size_t), ("attempts", c_uint32),
                ("reserved0", c_uint32),
                ("tried", c_uint64 * ILB_RETRY_TRIED_MAX)]


class ilb_retry_result(_Sized):
    _fields_ = [("struct_size", c_size_t), ("verdict", c_int32),
                ("error", c_int32), ("backoff_ns", c_uint64),
                ("ticket", c_uint64), ("replica_id", c_char_p),
                ("host_data", c_void_p)]


# --- prefix-cache-aware routing (since 0.5) -------------------------------

class ilb_kv_event(_Sized):
    _fields_ = [("struct_size", c_size_t), ("type", c_int32),
                ("flags", c_uint32), ("seq", c_uint64),
                ("block_hashes", POINTER(c_uint64)), ("n_blocks", c_size_t)]


#: Counters of ilb_prefix_stats after struct_size, in order (all uint64).
PREFIX_STATS_FIELDS: tuple[str, ...] = (
    "entries", "capacity", "memory_bytes", "lookups", "blocks",
    "matched_blocks", "recorded", "evicted", "dropped", "events",
    "stale_events")


class ilb_prefix_stats(_Sized):
    _fields_ = ([("struct_size", c_size_t)]
                + [(name, c_uint64) for name in PREFIX_STATS_FIELDS])


# --- the router, autoscaling (since 0.6) ------------------------------------

class ilb_router_pool_spec(_Sized):
    _fields_ = [("struct_size", c_size_t), ("model", c_char_p),
                ("version", c_char_p), ("labels", POINTER(ilb_label)),
                ("n_labels", c_size_t), ("weight", c_uint32),
                ("role", c_int32)]


class ilb_match(Structure):
    """No struct_size: an element of ilb_route.matches."""
    _fields_ = [("key", c_char_p), ("value", c_char_p), ("kind", c_int32),
                ("reserved0", c_int32)]


class ilb_backend(Structure):
    """No struct_size: an element of ilb_route.backends."""
    _fields_ = [("model", c_char_p), ("version", c_char_p),
                ("weight", c_uint32), ("reserved0", c_uint32)]


class ilb_route(_Sized):
    _fields_ = [("struct_size", c_size_t), ("name", c_char_p),
                ("matches", POINTER(ilb_match)), ("n_matches", c_size_t),
                ("backends", POINTER(ilb_backend)), ("n_backends", c_size_t),
                ("mirror_model", c_char_p), ("mirror_version", c_char_p),
                ("mirror_percent", c_uint32), ("reserved0", c_uint32),
                ("match_size", c_size_t), ("backend_size", c_size_t)]


class ilb_rate_limit(_Sized):
    _fields_ = [("struct_size", c_size_t), ("name", c_char_p),
                ("key_attr", c_char_p), ("rate", c_uint64),
                ("period_ms", c_uint64), ("burst", c_uint64)]


class ilb_route_result(_Sized):
    """The strings are plain pointers: the binding reads ids, models and
    versions from its own records (by host_data and pool), never from C
    memory after the call."""
    _fields_ = [("struct_size", c_size_t), ("ticket", c_uint64),
                ("replica_id", c_void_p), ("host_data", c_void_p),
                ("retry_after_ns", c_uint64), ("pool", c_void_p),
                ("model", c_void_p), ("version", c_void_p),
                ("route", c_int32), ("backend", c_int32),
                ("prefill_replica_id", c_void_p),
                ("prefill_host_data", c_void_p), ("prefill_pool", c_void_p),
                ("mirror_ticket", c_uint64), ("mirror_replica_id", c_void_p),
                ("mirror_host_data", c_void_p), ("mirror_pool", c_void_p),
                ("sticky", c_int32), ("reserved0", c_int32)]


class ilb_autoscale(_Sized):
    _fields_ = [("struct_size", c_size_t), ("current", c_uint32),
                ("ready", c_uint32), ("desired", c_uint32),
                ("recommended", c_uint32), ("in_flight", c_uint64),
                ("waiting", c_uint64), ("arrival_per_s", c_double),
                ("service_per_s", c_double), ("utilization", c_double),
                ("overloaded", c_int32), ("reserved0", c_int32)]


#: Every struct with an *_init function, for the layout test.
INIT_FUNCTIONS: dict[str, type[Structure]] = {
    "ilb_host_init": ilb_host,
    "ilb_replica_spec_init": ilb_replica_spec,
    "ilb_telemetry_init": ilb_telemetry,
    "ilb_scrape_config_init": ilb_scrape_config,
    "ilb_request_init": ilb_request,
    "ilb_pick_result_init": ilb_pick_result,
    "ilb_outcome_init": ilb_outcome,
    "ilb_retry_state_init": ilb_retry_state,
    "ilb_retry_result_init": ilb_retry_result,
    "ilb_kv_event_init": ilb_kv_event,
    "ilb_router_pool_spec_init": ilb_router_pool_spec,
    "ilb_route_init": ilb_route,
    "ilb_rate_limit_init": ilb_rate_limit,
    "ilb_route_result_init": ilb_route_result,
}

# --- the one table: name -> (restype, argtypes) --------------------------

_P = c_void_p  # opaque ilb_pool * / ilb_scrape * / ilb_router *
P = POINTER
FUNCTIONS: dict[str, tuple[Any, list[Any]]] = {
    # versions, errors, names
    "ilb_version": (c_uint32, []),
    "ilb_version_string": (c_char_p, []),
    "ilb_strerror": (c_char_p, [c_int]),
    "ilb_err_name": (c_char_p, [c_int]),
    "ilb_policy_name": (c_char_p, [c_int32]),
    "ilb_policy_from_name": (c_int, [P(c_int32), c_char_p]),
    "ilb_signal_name": (c_char_p, [c_int32]),
    "ilb_dialect_name": (c_char_p, [c_int32]),
    "ilb_health_name": (c_char_p, [c_int32]),
    "ilb_reason_name": (c_char_p, [c_int32]),
    "ilb_breaker_name": (c_char_p, [c_int32]),
    "ilb_option_bounds": (c_int, [P(c_int64), P(c_int64), P(c_int64),
                                  c_int32]),
    "ilb_hash64": (c_int, [P(c_uint64), c_void_p, c_size_t, c_uint64]),
    # struct initialisers
    "ilb_host_init": (c_int, [P(ilb_host)]),
    "ilb_replica_spec_init": (c_int, [P(ilb_replica_spec)]),
    "ilb_telemetry_init": (c_int, [P(ilb_telemetry)]),
    "ilb_scrape_config_init": (c_int, [P(ilb_scrape_config)]),
    "ilb_request_init": (c_int, [P(ilb_request)]),
    "ilb_pick_result_init": (c_int, [P(ilb_pick_result)]),
    "ilb_outcome_init": (c_int, [P(ilb_outcome)]),
    "ilb_retry_state_init": (c_int, [P(ilb_retry_state)]),
    "ilb_retry_result_init": (c_int, [P(ilb_retry_result)]),
    "ilb_kv_event_init": (c_int, [P(ilb_kv_event)]),
    # pool
    "ilb_pool_new": (c_int, [P(_P), P(ilb_host)]),
    "ilb_pool_free": (None, [_P]),
    "ilb_pool_set_option": (c_int, [_P, c_int32, c_int64]),
    "ilb_pool_get_option": (c_int, [P(c_int64), _P, c_int32]),
    "ilb_pool_batch_begin": (c_int, [_P]),
    "ilb_pool_batch_commit": (c_int, [_P]),
    "ilb_pool_count": (c_int, [P(c_size_t), _P]),
    # replicas
    "ilb_replica_add": (c_int, [_P, P(ilb_replica_spec)]),
    "ilb_replica_remove": (c_int, [_P, c_char_p]),
    "ilb_replica_set_weight": (c_int, [_P, c_char_p, c_uint32]),
    "ilb_replica_set_available": (c_int, [_P, c_char_p, c_int32]),
    "ilb_replica_get": (c_int, [P(ilb_replica_info), _P, c_char_p]),
    # telemetry
    "ilb_replica_report": (c_int, [_P, c_char_p, P(ilb_telemetry)]),
    "ilb_replica_telemetry": (c_int, [P(ilb_telemetry), _P, c_char_p]),
    # scraping
    "ilb_scrape_new": (c_int, [P(_P), P(ilb_scrape_config), P(ilb_host)]),
    "ilb_scrape_free": (None, [_P]),
    "ilb_scrape_feed": (c_int, [_P, c_char_p, c_size_t]),
    "ilb_scrape_finish": (c_int, [P(ilb_telemetry), _P, c_uint64]),
    "ilb_telemetry_parse": (c_int, [P(ilb_telemetry), _P, c_char_p, c_size_t,
                                    c_uint64]),
    "ilb_scrape_error": (c_int, [P(c_uint64), P(c_char_p), _P]),
    "ilb_scrape_dialect": (c_int, [P(c_int32), _P]),
    # picking
    "ilb_pick": (c_int, [P(ilb_pick_result), _P, P(ilb_request)]),
    "ilb_complete": (c_int, [_P, c_uint64, P(ilb_outcome)]),
    # health and failure handling (since 0.4)
    "ilb_health_report": (c_int, [_P, c_char_p, c_int32]),
    "ilb_next_due": (c_int, [P(ilb_due), c_size_t, c_size_t, P(c_size_t),
                             P(c_uint64), _P]),
    "ilb_replica_drain": (c_int, [_P, c_char_p, c_int32, c_uint64]),
    "ilb_pool_health": (c_int, [P(ilb_pool_status), _P]),
    "ilb_retry": (c_int, [P(ilb_retry_result), _P, P(ilb_retry_state),
                          P(ilb_request), c_uint64, P(ilb_outcome)]),
    # prefix-cache-aware routing (since 0.5)
    "ilb_replica_kv_event": (c_int, [_P, c_char_p, P(ilb_kv_event)]),
    "ilb_pool_prefix_stats": (c_int, [P(ilb_prefix_stats), _P]),
    # the router (since 0.6)
    "ilb_router_pool_spec_init": (c_int, [P(ilb_router_pool_spec)]),
    "ilb_route_init": (c_int, [P(ilb_route)]),
    "ilb_rate_limit_init": (c_int, [P(ilb_rate_limit)]),
    "ilb_route_result_init": (c_int, [P(ilb_route_result)]),
    "ilb_router_new": (c_int, [P(_P), P(ilb_host)]),
    "ilb_router_free": (None, [_P]),
    "ilb_router_set_option": (c_int, [_P, c_int32, c_int64]),
    "ilb_router_get_option": (c_int, [P(c_int64), _P, c_int32]),
    "ilb_router_add_pool": (c_int, [_P, P(ilb_router_pool_spec), _P]),
    "ilb_router_remove_pool": (c_int, [_P, c_char_p, c_char_p]),
    "ilb_router_set_routes": (c_int, [_P, P(ilb_route), c_size_t]),
    "ilb_router_set_weights": (c_int, [_P, c_char_p, P(c_uint32), c_size_t]),
    "ilb_router_set_rate_limits": (c_int, [_P, P(ilb_rate_limit),
                                           c_size_t]),
    "ilb_router_pick": (c_int, [P(ilb_route_result), _P, P(ilb_request)]),
    "ilb_router_complete": (c_int, [_P, c_uint64, P(ilb_outcome)]),
    "ilb_router_complete_pair": (c_int, [_P, c_uint64, P(ilb_outcome),
                                         P(ilb_outcome)]),
    "ilb_router_pin": (c_int, [_P, c_void_p, c_size_t, c_char_p, c_char_p,
                               c_char_p, c_uint64]),
    # autoscaling signal and stats export (since 0.6)
    "ilb_pool_autoscale": (c_int, [P(ilb_autoscale), _P]),
    "ilb_stats_prometheus": (c_int, [P(ctypes.c_char), c_size_t, P(c_size_t),
                                     _P, _P]),
}


def check_version(lib: ctypes.CDLL, expected_major: int = BINDING_MAJOR,
                  where: str = SONAME) -> None:
    """Raise ImportError unless the library's major version is expected."""
    num = int(lib.ilb_version())
    major = num // 10000
    if major != expected_major:
        raise ImportError(
            f"inferlb: {where} is version {major}.{num // 100 % 100}."
            f"{num % 100} but this Python binding needs major version "
            f"{expected_major}; install a matching library or binding")


def load(path: str | None = None) -> ctypes.CDLL:
    """Load the library (INFERLB_LIBRARY, else the SONAME), declare every
    function of FUNCTIONS and check the major version."""
    where = path or os.environ.get(ENV_LIBRARY) or SONAME
    try:
        lib = ctypes.CDLL(where)
    except OSError as e:
        hint = ("" if where != SONAME else
                f" (install libinferlb, or set {ENV_LIBRARY}="
                f"/path/to/build/{SONAME})")
        raise ImportError(f"inferlb: cannot load {where}: {e}{hint}") from e
    for name, (restype, argtypes) in FUNCTIONS.items():
        try:
            fn = getattr(lib, name)
        except AttributeError as e:
            raise ImportError(f"inferlb: {where} lacks {name}; is it older "
                              f"than this binding?") from e
        fn.restype = restype
        fn.argtypes = argtypes
    check_version(lib, BINDING_MAJOR, where)
    return lib


lib = load()

"""Drift: the constants must match include/inferlb/inferlb.h exactly."""
from __future__ import annotations

import re

import inferlb
from inferlb import _constants
from conftest import PYDIR, REPO

import gen_constants  # bindings/python/gen_constants.py

HEADER = REPO / "include" / "inferlb" / "inferlb.h"

# enum name in the header -> (IntEnum in the binding, prefix of its members)
ENUMS = {
    "ilb_option": (inferlb.Option, "ILB_OPT_"),
    "ilb_policy_id": (inferlb.Policy, "ILB_POLICY_"),
    "ilb_outcome_status": (inferlb.OutcomeStatus, "ILB_OUTCOME_"),
    "ilb_signal": (inferlb.Signal, "ILB_SIGNAL_"),
    "ilb_dialect": (inferlb.Dialect, "ILB_DIALECT_"),
    "ilb_replica_state": (inferlb.ReplicaState, "ILB_REPLICA_"),
    "ilb_event_type": (inferlb.EventType, "ILB_EVENT_"),
    "ilb_log_level": (inferlb.LogLevel, "ILB_LOG_"),
    "ilb_no_key": (inferlb.NoKey, "ILB_NO_KEY_"),
    "ilb_all_stale": (inferlb.AllStale, "ILB_ALL_STALE_"),
    # since 0.4
    "ilb_reason": (inferlb.Reason, "ILB_REASON_"),
    "ilb_health": (inferlb.Health, "ILB_HEALTH_"),
    "ilb_probe_result": (inferlb.ProbeResult, "ILB_PROBE_"),
    "ilb_breaker": (inferlb.Breaker, "ILB_BREAKER_"),
    "ilb_excluded": (inferlb.Excluded, "ILB_EXCLUDED_"),
    "ilb_due_kind": (inferlb.DueKind, "ILB_DUE_"),
    "ilb_retry_on": (inferlb.RetryOn, "ILB_RETRY_"),
    "ilb_retry_verdict": (inferlb.RetryVerdict, "ILB_RETRY_"),
    "ilb_priority": (inferlb.Priority, "ILB_PRIORITY_"),
    # since 0.5
    "ilb_prefix_mode": (inferlb.PrefixMode, "ILB_PREFIX_"),
    "ilb_kv_event_type": (inferlb.KVEventType, "ILB_KV_"),
    # since 0.6
    "ilb_pool_role": (inferlb.PoolRole, "ILB_ROLE_"),
    "ilb_match_kind": (inferlb.MatchKind, "ILB_MATCH_"),
}


def header_enum(text: str, name: str) -> dict[str, int]:
    """Members of one enum, parsed here independently of the generator."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    m = re.search(r"enum\s+%s\s*\{(.*?)\};" % name, text, re.S)
    assert m, f"enum {name} not in the header"
    return {k: int(v) for k, v in
            re.findall(r"\b(ILB_[A-Z0-9_]+)\s*=\s*(-?\d+)", m.group(1))}


def test_committed_constants_are_regenerated():
    want = gen_constants.generate(HEADER.read_text())
    got = (PYDIR / "inferlb" / "_constants.py").read_text()
    assert got == want, "run bindings/python/gen_constants.py"


def test_errno_map_matches():
    text = HEADER.read_text()
    entries = re.findall(r'X\((E[A-Z0-9]+),\s*(-?\d+),\s*"([^"]*)"\)', text)
    assert len(entries) >= 17
    for name, value, desc in entries:
        assert inferlb.Errno[name] == int(value), name
        assert getattr(inferlb, "ILB_" + name) == int(value)
        assert _constants.ERRNO_TEXT[int(value)] == desc
        assert inferlb.strerror(int(value)) == desc  # the library agrees
        assert inferlb.err_name(int(value)) == name
        assert int(value) in inferlb.ERRORS, f"no exception class for {name}"
        assert inferlb.ERRORS[int(value)].code == int(value)
    assert len(inferlb.Errno) == len(entries) + 1  # + OK
    m = re.search(r"ILB_ERRNO_MIN\s*=\s*(-?\d+)", text)
    assert inferlb.ILB_ERRNO_MIN == int(m.group(1)) == min(
        int(v) for _, v, _ in entries)


def test_every_enum_matches():
    text = HEADER.read_text()
    stripped = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    in_header = set(re.findall(r"\benum\s+(ilb_\w+)\s*\{", stripped))
    assert in_header - {"ilb_errno"} == set(ENUMS), "enum not checked here"
    for cname, (cls, prefix) in ENUMS.items():
        members = header_enum(text, cname)
        assert members, cname
        for full, value in members.items():
            short = full[len(prefix):]
            assert short in cls.__members__, f"{full} missing from {cls}"
            assert cls[short] == value, full
            assert getattr(inferlb, full) == value
        assert len(cls) == len(members), f"{cls} has extra members"


def test_names_agree_with_library():
    for p in inferlb.Policy:
        assert inferlb.policy_name(p) == p.name.lower()
    for s in inferlb.Signal:
        # signal names are the ilb_telemetry field names
        assert inferlb.signal_name(s) == inferlb._ffi.SIGNAL_FIELDS[s]
    for d in inferlb.Dialect:
        assert inferlb.dialect_name(d) == d.name.lower()
    for h in inferlb.Health:
        assert inferlb.health_name(h) == h.name.lower()
    for r in inferlb.Reason:
        assert inferlb.reason_name(r) == r.name.lower()
    for b in inferlb.Breaker:
        assert inferlb.breaker_name(b) == b.name.lower()
    assert inferlb.health_name(99) is None
    assert inferlb.reason_name(-1) is None
    assert inferlb.breaker_name(3) is None
    assert len(inferlb.Signal) == inferlb.ILB_SIGNAL_COUNT
    for o in inferlb.Option:  # every option is known to the library
        inferlb.option_bounds(o)


def test_defines():
    text = HEADER.read_text()
    for name in ("ILB_VERSION_MAJOR", "ILB_ID_MAX", "ILB_LABELS_MAX",
                 "ILB_THREAD_TICKETS", "ILB_SIGNAL_COUNT", "ILB_WEIGHT_MAX",
                 "ILB_RETRY_TRIED_MAX", "ILB_PREFIX_HOLDERS",
                 "ILB_KV_RESTART", "ILB_ROUTER_POOLS_MAX",
                 "ILB_ROUTE_BACKENDS_MAX", "ILB_ROUTE_MATCHES_MAX",
                 "ILB_ROUTES_MAX", "ILB_RATE_LIMITS_MAX"):
        m = re.search(r"#define %s (\d+)" % name, text)
        assert getattr(inferlb, name) == int(m.group(1)), name

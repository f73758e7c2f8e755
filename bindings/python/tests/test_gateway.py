"""examples/gateway.py against two fake vLLM-like replicas."""
from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from conftest import PYDIR

import inferlb

METRICS = """# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m"} %d
vllm:num_requests_running{model_name="m"} 1
vllm:kv_cache_usage_perc{model_name="m"} %.2f
"""


class FakeReplica:
    def __init__(self, name: str) -> None:
        self.name = name
        self.healthy = True
        self.hits = 0
        self.scrapes = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def reply(self, status, body, ctype="application/json"):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path == "/health":
                    self.reply(200 if outer.healthy else 503, b"{}")
                elif self.path == "/metrics":
                    outer.scrapes += 1
                    self.reply(200, (METRICS % (0, 0.1)).encode(),
                               "text/plain; version=0.0.4")
                else:
                    self.reply(404, b"{}")

            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(n)
                if self.path != "/v1/predict":
                    return self.reply(404, b"{}")
                outer.hits += 1
                time.sleep(0.01)
                self.reply(200, json.dumps({
                    "replica": outer.name,
                    "echo": json.loads(body)}).encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever,
                         daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def post(port: int, body: dict) -> tuple[int, dict]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("POST", "/v1/predict", json.dumps(body),
                  {"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, json.loads(r.read())
    finally:
        c.close()


def start_gateway(*args: str) -> tuple[subprocess.Popen, int]:
    gw = subprocess.Popen(
        [sys.executable, str(PYDIR / "examples" / "gateway.py"),
         "--listen", "127.0.0.1:0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ))
    line = gw.stdout.readline()
    assert "listening on" in line, (line, gw.stderr.read()
                                    if gw.poll() is not None else "")
    return gw, int(line.rsplit(":", 1)[1])


def get_json(port: int, path: str):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", path)
        return json.loads(c.getresponse().read())
    finally:
        c.close()


def test_gateway_routes_spreads_and_fails_closed():
    reps = [FakeReplica("a"), FakeReplica("b")]
    gw, port = start_gateway(
        "--replica", reps[0].url + "@2", "--replica", reps[1].url,
        "--health-interval", "0.1", "--metrics-interval", "0.1")
    try:
        # sequential: each served, echoed, spread by the composite ties
        for i in range(20):
            status, body = post(port, {"prompt": f"p{i}"})
            assert status == 200, body
            assert body["echo"] == {"prompt": f"p{i}"}
        # concurrent
        with ThreadPoolExecutor(8) as ex:
            results = list(ex.map(lambda i: post(port, {"i": i}), range(40)))
        assert all(s == 200 for s, _ in results)
        assert reps[0].hits + reps[1].hits == 60
        assert reps[0].hits > 0 and reps[1].hits > 0
        assert reps[0].scrapes > 0 and reps[1].scrapes > 0
        # keep-alive: two requests on one connection; /replicas shows load
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/health")
        assert c.getresponse().read() and True
        c.request("GET", "/replicas")
        info = json.loads(c.getresponse().read())
        c.close()
        assert sum(r["completed"] for r in info) == 60
        assert all(r["in_flight"] == 0 for r in info)
        assert {r["id"] for r in info} == {reps[0].url, reps[1].url}
        assert any(r["telemetry"].get("kv_cache_usage") == 0.1 for r in info)
        # both unhealthy: the health loop takes them out -> 503
        for r in reps:
            r.healthy = False
        deadline = time.monotonic() + 3
        while True:
            status, body = post(port, {"late": 1})
            if status == 503 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert status == 503, body
        assert "No healthy replicas" in body["detail"]
        # and back
        reps[1].healthy = True
        deadline = time.monotonic() + 3
        while post(port, {"x": 1})[0] != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        gw.terminate()
        gw.wait(5)
        for r in reps:
            r.close()


def test_gateway_prefix_policy_keeps_a_conversation_on_its_replica():
    """--policy prefix: the body is the prompt; a conversation's growing
    history stays on the replica that served its first turn."""
    reps = [FakeReplica(n) for n in "abcd"]
    args = []
    for r in reps:
        args += ["--replica", r.url]
    gw, port = start_gateway(*args, "--policy", "prefix",
                             "--health-interval", "0.1",
                             "--metrics-interval", "0.1")
    try:
        system = "You are a careful assistant. " * 40  # ~1.2 KB: 4 blocks
        for conv in range(3):
            history = system
            served = set()
            for turn in range(4):
                history += f" user {conv}: question {turn} " * 12
                before = [r.hits for r in reps]
                status, body = post(port, {"messages": history})
                assert status == 200, body
                served |= {i for i, r in enumerate(reps)
                           if r.hits > before[i]}
            assert len(served) == 1, (conv, served)
    finally:
        gw.terminate()
        gw.wait(5)
        for r in reps:
            r.close()


def test_gateway_retries_a_refused_replica():
    live = FakeReplica("live")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = "http://127.0.0.1:%d" % s.getsockname()[1]
    s.close()  # connections to it are refused
    # long probe interval: only the requests find out that "dead" is dead
    gw, port = start_gateway("--replica", live.url, "--replica", dead,
                             "--policy", "round_robin",
                             "--health-interval", "30")
    try:
        for i in range(10):
            status, body = post(port, {"i": i})
            assert status == 200, body  # retried on the live replica
            assert body["replica"] == "live"
        assert live.hits == 10
        st = get_json(port, "/health")
        assert st["retries"] >= 1 and st["in_flight"] == 0
        info = {r["id"]: r for r in get_json(port, "/replicas")}
        assert info[dead]["failed"] >= 1
        assert info[dead]["failed"] == st["retries"]
    finally:
        gw.terminate()
        gw.wait(5)
        live.close()


# --- in-process: forward() and timers() of the example's Gateway ----------

def _load_gateway():
    import importlib.util
    name = "inferlb_example_gateway"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, PYDIR / "examples" / "gateway.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


gateway = _load_gateway()

OK_REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
# How a replica can fail once it has the whole request (and may have run it).
AFTER_SEND = {
    "bad_header": b"HTTP/1.1 200 OK\r\nthis line has no colon\r\n\r\n",
    "oversized": b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n{}"
                 % (gateway.MAX_BODY + 1),
    "bad_status": b"garbage\r\n\r\n",
    "partial": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"part",
    "reset": b"",  # closed without an answer
    "hang": None,  # no answer within the gateway's timeout
}


class Upstream:
    """An asyncio replica counting the requests it read in full."""

    def __init__(self, reply: bytes | None) -> None:
        self.reply = reply
        self.requests = 0

    async def start(self) -> "Upstream":
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.url = "http://127.0.0.1:%d" % (
            self.server.sockets[0].getsockname()[1])
        return self

    async def handle(self, r, w) -> None:
        try:
            await r.readline()
            hdrs = await gateway.read_headers(r)
            await gateway.read_body(r, hdrs, until_eof=False)
            self.requests += 1  # the replica has it: it may run it
            if self.reply is None:
                await asyncio.sleep(5)
            else:
                w.write(self.reply)
                await w.drain()
        except (ConnectionError, asyncio.IncompleteReadError,
                asyncio.CancelledError):
            pass
        finally:
            w.close()

    def close(self) -> None:
        self.server.close()


def _gw(urls, **kw):
    kw.setdefault("policy", "round_robin")
    kw.setdefault("health_interval", 3600)
    return gateway.Gateway([(u, 1) for u in urls], **kw)



def test_forward_completes_ticket_on_malformed_response():
    """fetch() raising HttpError (bad header, oversized body) must not leak
    the ticket: the replica's in-flight count goes back to 0."""
    async def main():
        for mode in ("bad_header", "oversized"):
            up = await Upstream(AFTER_SEND[mode]).start()
            gw = _gw([up.url])
            try:
                status, _, body = await gw.forward(
                    "POST", "/v1/predict", [], b"{}", "t")
                assert status == 502, (mode, body)
                info = gw.pool.replica(up.url)
                assert (info.in_flight, info.completed, info.failed) == \
                    (0, 1, 1), (mode, info)
                assert gw.pool.health().in_flight == 0
            finally:
                gw.pool.close()
                up.close()
    asyncio.run(main())


def test_forward_never_resends_a_post_the_replica_got():
    """Once the replica has the whole request, a failure completes the
    ticket (no pool.retry): every client POST runs exactly once."""
    async def main():
        for mode, reply in AFTER_SEND.items():
            bad, good = Upstream(reply), Upstream(OK_REPLY)
            await bad.start()
            await good.start()
            gw = _gw([bad.url, good.url], timeout=0.3)
            try:
                codes = []
                for i in range(4):
                    status, _, _ = await gw.forward(
                        "POST", "/v1/predict", [("Content-Type", "x")],
                        b'{"i": %d}' % i, "t")
                    codes.append(status)
                    assert bad.requests + good.requests == i + 1, \
                        (mode, codes, bad.requests, good.requests)
                assert bad.requests == 2 and good.requests == 2, mode
                want = 504 if mode == "hang" else 502
                assert sorted(codes) == [200, 200, want, want], (mode, codes)
                st = gw.pool.health()
                assert (st.retries, st.in_flight) == (0, 0), (mode, st)
                assert gw.pool.replica(bad.url).failed == 2, mode
            finally:
                gw.pool.close()
                bad.close()
                good.close()
    asyncio.run(main())


def test_forward_resends_only_idempotent_requests():
    """An Idempotency-Key header, or a route declared idempotent, may be
    sent again after the replica got it."""
    async def main():
        for hdrs, routes in (([("Idempotency-Key", "k1")], ()),
                             ([("x-idempotency-key", "k2")], ()),
                             ([], ("/v1/predict",))):
            bad = await Upstream(AFTER_SEND["reset"]).start()
            good = await Upstream(OK_REPLY).start()
            gw = _gw([bad.url, good.url], idempotent_routes=routes)
            try:
                for _ in range(4):
                    status, _, _ = await gw.forward(
                        "POST", "/v1/predict?x=1", hdrs, b"{}", "t")
                    assert status == 200, (hdrs, routes)
                # every attempt on "bad" was sent again, to "good"
                st = gw.pool.health()
                assert good.requests == 4 and bad.requests >= 1
                assert (st.retries, st.in_flight) == (bad.requests, 0)
            finally:
                gw.pool.close()
                bad.close()
                good.close()
    asyncio.run(main())


def test_forward_resends_a_refused_post():
    async def main():
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        dead = "http://127.0.0.1:%d" % s.getsockname()[1]
        s.close()
        good = await Upstream(OK_REPLY).start()
        gw = _gw([dead, good.url])
        seen = []
        real = gw.pool.retry

        def spy(state, ticket, outcome, request=None):
            seen.append(int(outcome.status))
            return real(state, ticket, outcome, request)
        gw.pool.retry = spy
        try:
            for _ in range(4):
                status, _, _ = await gw.forward("POST", "/v1/predict", [],
                                                b"{}", "t")
                assert status == 200
            assert good.requests == 4
            assert seen and set(seen) == {int(gateway.OutcomeStatus.REFUSED)}
            assert gw.pool.replica(dead).failed == len(seen)
            st = gw.pool.health()
            assert (st.retries, st.in_flight) == (len(seen), 0)
        finally:
            gw.pool.close()
            good.close()
    asyncio.run(main())


def test_timers_survive_next_due_errors_and_ignore_unknown_kinds(
        monkeypatch):
    monkeypatch.setattr(gateway, "TIMER_BACKOFF_MIN", 0.001, raising=False)
    gw = _gw(["http://127.0.0.1:9"])
    b = gw.pool.replica("http://127.0.0.1:9").host_data
    calls, probed, scraped = [], [], []

    def next_due(cap=16):
        calls.append(cap)
        if len(calls) <= 2:
            raise inferlb.DeadlockError()
        if len(calls) == 3:
            return [inferlb.Due(b.url, b, 99, inferlb.Health.HEALTHY),
                    inferlb.Due(b.url, b, inferlb.DueKind.PROBE,
                                inferlb.Health.HEALTHY)], None
        return [], None

    async def probe(backend):
        probed.append(backend)

    async def scrape(backend):
        scraped.append(backend)
    gw.pool.next_due = next_due
    gw.probe, gw.scrape = probe, scrape

    async def main():
        task = asyncio.create_task(gw.timers())
        for _ in range(300):
            if probed or task.done():
                break
            await asyncio.sleep(0.01)
        assert not task.done(), task.exception()
        task.cancel()
    try:
        asyncio.run(main())
    finally:
        gw.pool.close()
    assert len(calls) >= 3 and probed == [b] and scraped == []


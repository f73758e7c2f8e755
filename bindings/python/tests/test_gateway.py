"""examples/gateway.py against two fake vLLM-like replicas."""
from __future__ import annotations

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

#!/usr/bin/env python3
"""An inference gateway in the standard library alone, inferlb deciding.

What seed 002's FastAPI MLLoadBalancer does, with inferlb making every
decision: "least-loaded" composite routing on local in-flight counts plus
the replicas' own telemetry (scraped /metrics: queue, KV cache, GPU, TTFT),
one timer loop driven by pool.next_due() (probes: GET /health ->
health_report; scrapes: GET /metrics -> Scrape -> report), POST
/v1/predict forwarded (body passed through, response returned, the ticket
completed with status and latency; a refused connection or timeout retried
on another replica with pool.retry()), 503 when no replica can take the
request (no panic routing: ILB_OPT_PANIC_THRESHOLD_PERCENT 0).

    INFERLB_LIBRARY=build/libinferlb.so.0 \
    python3 bindings/python/examples/gateway.py --listen 127.0.0.1:8080 \
        --replica http://model-0:8000@5 --replica http://model-2:8000@2

A replica is URL[@WEIGHT] (weight = relative capacity: A100 5, T4 2).
GET /health answers 200 while some replica is available (with the pool's
health counts); GET /replicas shows the pool. HTTP/1.1 with keep-alive towards clients; one connection
per forwarded request towards replicas. No streaming (responses are
buffered); no TLS.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import pathlib
import sys
import time
import urllib.parse
from dataclasses import asdict, dataclass, field

if importlib.util.find_spec("inferlb") is None:  # run from the source tree
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
import inferlb  # noqa: E402
from inferlb import DueKind, OutcomeStatus, ProbeResult  # noqa: E402

log = logging.getLogger("gateway")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate",
              "proxy-authorization", "te", "trailer", "trailers",
              "transfer-encoding", "upgrade", "host", "content-length"}
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found",
           405: "Method Not Allowed", 411: "Length Required",
           413: "Payload Too Large", 502: "Bad Gateway",
           503: "Service Unavailable", 504: "Gateway Timeout"}
MAX_BODY = 64 << 20


@dataclass
class Backend:
    """host_data of a replica: where it is and its scrape state."""
    url: str
    host: str
    port: int
    base: str
    scrape: inferlb.Scrape = field(default_factory=inferlb.Scrape)


class HttpError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


async def read_headers(reader: asyncio.StreamReader) -> list[tuple[str, str]]:
    headers = []
    while True:
        line = await reader.readline()
        if not line:
            raise asyncio.IncompleteReadError(b"", None)
        if line in (b"\r\n", b"\n"):
            return headers
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise HttpError(400, "malformed header")
        headers.append((name.strip(), value.strip()))


async def read_body(reader: asyncio.StreamReader,
                    headers: list[tuple[str, str]], until_eof: bool) -> bytes:
    h = {k.lower(): v for k, v in headers}
    if "chunked" in h.get("transfer-encoding", "").lower():
        out = bytearray()
        while True:
            size = int((await reader.readline()).split(b";")[0].strip(), 16)
            if size == 0:
                await read_headers(reader)  # trailers
                return bytes(out)
            out += await reader.readexactly(size)
            await reader.readline()
            if len(out) > MAX_BODY:
                raise HttpError(413, "body too large")
    if "content-length" in h:
        n = int(h["content-length"])
        if n > MAX_BODY:
            raise HttpError(413, "body too large")
        return await reader.readexactly(n)
    return await reader.read(MAX_BODY) if until_eof else b""


async def fetch(b: Backend, method: str, path: str, body: bytes = b"",
                headers: list[tuple[str, str]] | None = None
                ) -> tuple[int, list[tuple[str, str]], bytes]:
    """One HTTP/1.1 request to a replica (Connection: close)."""
    reader, writer = await asyncio.open_connection(b.host, b.port)
    try:
        lines = [f"{method} {b.base}{path} HTTP/1.1",
                 f"Host: {b.host}:{b.port}", "Connection: close",
                 f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in headers or []]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
                     + body)
        await writer.drain()
        status_line = await reader.readline()
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
            raise ConnectionError(f"bad status line {status_line!r}")
        rheaders = await read_headers(reader)
        rbody = await read_body(reader, rheaders, until_eof=True)
        return int(parts[1]), rheaders, rbody
    finally:
        writer.close()


class Gateway:
    def __init__(self, replicas: list[tuple[str, int]], policy: str =
                 "composite", health_interval: float = 10.0,
                 metrics_interval: float = 5.0, timeout: float = 120.0,
                 unhealthy_after: int = 3, health_path: str = "/health"
                 ) -> None:
        # Telemetry older than about three scrapes no longer counts. Probes
        # and scrapes are scheduled by the pool (next_due); unhealthy_after
        # failed probes, or refused / timed-out requests in a row, take a
        # replica out. No panic mode: with every replica out, answer 503.
        ms = lambda seconds: max(1, int(1000 * seconds))  # noqa: E731
        self.pool = inferlb.Pool(
            policy=policy, log=inferlb.log_to_logging,
            telemetry_max_age_ms=ms(3 * metrics_interval),
            probe_interval_ms=ms(health_interval),
            probe_unhealthy_interval_ms=ms(health_interval),
            scrape_interval_ms=ms(metrics_interval),
            health_fall=unhealthy_after,
            outlier_consecutive_gateway=unhealthy_after,
            panic_threshold_percent=0)
        for url, weight in replicas:
            u = urllib.parse.urlsplit(url)
            if u.scheme != "http" or not u.hostname:
                raise SystemExit(f"gateway: bad replica URL {url!r}")
            self.pool.add_replica(url, weight=weight, host_data=Backend(
                url, u.hostname, u.port or 80, u.path.rstrip("/")))
        self.timeout = timeout
        self.health_path = health_path

    # --- the pool's timer: probes and scrapes ----------------------------
    async def timers(self) -> None:
        """Run what next_due() lists; sleep until the time it returns (on
        the library's default clock, CLOCK_MONOTONIC: time.monotonic_ns)."""
        running: set[asyncio.Task] = set()
        while True:
            due, next_ns = self.pool.next_due(64)
            for d in due:
                job = self.probe if d.kind == DueKind.PROBE else self.scrape
                task = asyncio.create_task(job(d.host_data))
                running.add(task)
                task.add_done_callback(running.discard)
            wait = 1.0 if next_ns is None else \
                (next_ns - time.monotonic_ns()) / 1e9
            await asyncio.sleep(min(max(wait, 0.001), 1.0))

    async def probe(self, b: Backend) -> None:
        try:
            status, _, _ = await asyncio.wait_for(
                fetch(b, "GET", self.health_path), 3.0)
            # 503 is "loading the model": alive, not ready
            result = ProbeResult.PASS if status == 200 else \
                ProbeResult.NOT_READY if status == 503 else ProbeResult.FAIL
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                ValueError, HttpError):
            result = ProbeResult.FAIL
        self.pool.health_report(b.url, result)

    async def scrape(self, b: Backend) -> None:
        if not self.pool.replica(b.url).available:
            return
        try:
            status, _, body = await asyncio.wait_for(
                fetch(b, "GET", "/metrics"), 2.0)
            if status == 200:
                self.pool.report(b.url, b.scrape.parse(body))
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                ValueError, HttpError, inferlb.InferlbError) as e:
            log.debug("scrape %s: %s", b.url, e)  # non-fatal, as in seed 002

    # --- forwarding ----------------------------------------------------
    async def forward(self, method: str, path: str,
                      headers: list[tuple[str, str]], body: bytes,
                      peer: str) -> tuple[int, list[tuple[str, str]], bytes]:
        try:
            ticket = self.pool.pick()
        except (inferlb.NoReplicaError, inferlb.SaturatedError,
                inferlb.ShedError) as e:
            return json_response(503, {"detail": "No healthy replicas "
                                       "available", "error": e.name})
        fwd = [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP]
        fwd.append(("X-Forwarded-For", peer))
        state, backoff = self.pool.retry_state(), 0.0
        while True:  # one pass per attempt; pool.retry() decides on more
            b: Backend = ticket.host_data
            try:
                await asyncio.sleep(backoff)
                t0 = time.monotonic_ns()
                status, rh, rbody = await asyncio.wait_for(
                    fetch(b, method, path, body, fwd), self.timeout)
                break
            except asyncio.CancelledError:
                ticket.complete(OutcomeStatus.CANCELLED)
                raise
            except asyncio.TimeoutError:
                outcome = OutcomeStatus.TIMEOUT
                reply = 504, {"detail": "replica timed out"}
            except (OSError, asyncio.IncompleteReadError, ValueError) as e:
                outcome = OutcomeStatus.REFUSED if isinstance(
                    e, ConnectionRefusedError) else OutcomeStatus.CONNECT_ERROR
                reply = 502, {"detail": f"Replica error: {e}"}
            d = self.pool.retry(state, ticket, inferlb.Outcome(
                outcome, latency_ns=time.monotonic_ns() - t0))
            if not d:
                return json_response(*reply)
            ticket, backoff = d.ticket, d.backoff_s
        failed = status >= 500 or status == 429
        try:
            ticket.complete(OutcomeStatus.HTTP_ERROR if failed else
                            OutcomeStatus.OK, http_status=status
                            if 100 <= status <= 599 else 0,
                            latency_ns=time.monotonic_ns() - t0)
        except inferlb.ReplicaRemovedError:
            pass
        keep = [(k, v) for k, v in rh if k.lower() not in HOP_BY_HOP]
        keep.append(("X-Inferlb-Replica", b.url))
        return status, keep, rbody

    async def route(self, method: str, target: str,
                    headers: list[tuple[str, str]], body: bytes, peer: str
                    ) -> tuple[int, list[tuple[str, str]], bytes]:
        path = urllib.parse.urlsplit(target).path
        if path.startswith("/v1/"):
            if method != "POST":
                return json_response(405, {"detail": "use POST"})
            return await self.forward(method, target, headers, body, peer)
        if path == "/health":
            n = sum(1 for r in self.pool.replicas() if r.available)
            return json_response(200 if n else 503, {
                "available": n, **asdict(self.pool.health())})
        if path == "/replicas":
            return json_response(200, [
                {"id": r.id, "weight": r.weight, "available": r.available,
                 "health": inferlb.health_name(r.health),
                 "in_flight": r.in_flight, "completed": r.completed,
                 "failed": r.failed, "telemetry": dict(
                     self.pool.telemetry(r.id).fresh())}
                for r in self.pool.replicas()])
        return json_response(404, {"detail": "not found"})

    async def client(self, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        peer = str((writer.get_extra_info("peername") or ("?",))[0])
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                try:
                    method, target, version = line.decode(
                        "latin-1").split()
                    headers = await read_headers(reader)
                    body = await read_body(reader, headers, until_eof=False)
                    status, rh, rbody = await self.route(
                        method, target, headers, body, peer)
                except HttpError as e:
                    status, rh, rbody = json_response(e.status,
                                                      {"detail": str(e)})
                    version, headers = "HTTP/1.0", []
                except ValueError:
                    status, rh, rbody = json_response(400, {
                        "detail": "bad request line"})
                    version, headers = "HTTP/1.0", []
                conn = {k.lower(): v.lower() for k, v in headers}.get(
                    "connection", "")
                close = (version != "HTTP/1.1" and conn != "keep-alive") \
                    or conn == "close"
                head = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}",
                        f"Content-Length: {len(rbody)}",
                        f"Connection: {'close' if close else 'keep-alive'}"]
                head += [f"{k}: {v}" for k, v in rh]
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode(
                    "latin-1") + rbody)
                await writer.drain()
                if close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def serve(self, host: str, port: int) -> None:
        server = await asyncio.start_server(self.client, host, port)
        addr = server.sockets[0].getsockname()
        print(f"gateway listening on http://{addr[0]}:{addr[1]}", flush=True)
        timers = asyncio.create_task(self.timers())
        async with server:
            try:
                await server.serve_forever()
            finally:
                timers.cancel()


def json_response(status: int, obj: object
                  ) -> tuple[int, list[tuple[str, str]], bytes]:
    return status, [("Content-Type", "application/json")], \
        json.dumps(obj).encode()


def parse_replica(arg: str) -> tuple[str, int]:
    url, sep, weight = arg.rpartition("@")
    if sep and weight.isdigit():
        return url, int(weight)
    return arg, 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="inferlb asyncio gateway")
    ap.add_argument("--listen", default="127.0.0.1:8080",
                    help="HOST:PORT (port 0: any; the address is printed)")
    ap.add_argument("--replica", action="append", required=True,
                    type=parse_replica, help="URL[@WEIGHT], repeatable")
    ap.add_argument("--policy", default="composite")
    ap.add_argument("--health-interval", type=float, default=10.0)
    ap.add_argument("--metrics-interval", type=float, default=5.0)
    ap.add_argument("--health-path", default="/health")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--unhealthy-after", type=int, default=3,
                    help="failed probes, or refused / timed-out requests, "
                    "in a row before a replica is taken out")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else
                        logging.WARNING)
    host, _, port = args.listen.rpartition(":")
    gw = Gateway(args.replica, args.policy, args.health_interval,
                 args.metrics_interval, args.timeout, args.unhealthy_after,
                 args.health_path)
    try:
        asyncio.run(gw.serve(host or "127.0.0.1", int(port)))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

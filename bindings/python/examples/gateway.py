#!/usr/bin/env python3
"""An inference gateway in the standard library alone, inferlb deciding.

What seed 002's FastAPI MLLoadBalancer does, with inferlb making every
decision: "least-loaded" composite routing on local in-flight counts plus
the replicas' own telemetry (scraped /metrics: queue, KV cache, GPU, TTFT),
one timer loop driven by pool.next_due() (probes: GET /health ->
health_report; scrapes: GET /metrics -> Scrape -> report), POST
/v1/predict forwarded (body passed through, response returned, the ticket
completed with status and latency on every path), 503 when no replica can
take the request (no panic routing: ILB_OPT_PANIC_THRESHOLD_PERCENT 0).
With --policy prefix the request body is the prompt: bodies that start
alike (a shared system prompt, a conversation's history) go where their
KV cache is (prefix-cache-aware routing).

What is retried on another replica (pool.retry(), within its attempts and
budget): only an attempt whose request never reached the replica in full
-- the connection was refused (outcome REFUSED), could not be made, or
broke or timed out while the request was being written (CONNECT_ERROR,
TIMEOUT). Once the whole request was sent the replica may have run it, so
a POST is never sent again: a broken or malformed response, a reset or a
timeout (--timeout) while waiting for the answer complete the ticket
(CONNECT_ERROR, HTTP_ERROR, TIMEOUT) and the client gets 502 / 504. The
exception: a request the client marks idempotent (an Idempotency-Key or
X-Idempotency-Key header, as in Go's net/http) or a path given with
--idempotent-route is retried after such failures too.

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
from typing import Iterable

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
TIMER_BACKOFF_MIN, TIMER_BACKOFF_MAX = 0.05, 5.0  # next_due failing: s


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


class AttemptFailed(Exception):
    """One forwarding attempt failed. sent: the whole request may have
    reached the replica (which may have run it); outcome: the ticket's
    OutcomeStatus; reply: (status, body) for the client."""

    def __init__(self, outcome: OutcomeStatus, sent: bool, status: int,
                 detail: str) -> None:
        super().__init__(detail)
        self.outcome, self.sent = outcome, sent
        self.reply = status, {"detail": detail}


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


async def send_request(b: Backend, method: str, path: str, body: bytes = b"",
                       headers: list[tuple[str, str]] | None = None
                       ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to a replica and write one HTTP/1.1 request (Connection:
    close). Raises OSError when the connection fails or breaks before the
    whole request was handed to the kernel: the replica cannot have
    received all of it (the body is framed by Content-Length)."""
    reader, writer = await asyncio.open_connection(b.host, b.port)
    try:
        lines = [f"{method} {b.base}{path} HTTP/1.1",
                 f"Host: {b.host}:{b.port}", "Connection: close",
                 f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in headers or []]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
                     + body)
        await writer.drain()
    except BaseException:
        writer.close()
        raise
    return reader, writer


async def read_response(reader: asyncio.StreamReader
                        ) -> tuple[int, list[tuple[str, str]], bytes]:
    """The replica's answer: (status, headers, body). Raises HttpError or
    ValueError for a malformed one, OSError / IncompleteReadError when the
    stream breaks."""
    status_line = await reader.readline()
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        if not status_line:
            raise asyncio.IncompleteReadError(b"", None)
        raise HttpError(502, f"bad status line {status_line!r}")
    status = int(parts[1])
    rheaders = await read_headers(reader)
    rbody = await read_body(reader, rheaders, until_eof=True)
    return status, rheaders, rbody


async def fetch(b: Backend, method: str, path: str, body: bytes = b"",
                headers: list[tuple[str, str]] | None = None
                ) -> tuple[int, list[tuple[str, str]], bytes]:
    """One HTTP/1.1 request to a replica (Connection: close)."""
    reader, writer = await send_request(b, method, path, body, headers)
    try:
        return await read_response(reader)
    finally:
        writer.close()


class Gateway:
    def __init__(self, replicas: list[tuple[str, int]], policy: str =
                 "composite", health_interval: float = 10.0,
                 metrics_interval: float = 5.0, timeout: float = 120.0,
                 unhealthy_after: int = 3, health_path: str = "/health",
                 idempotent_routes: Iterable[str] = ()) -> None:
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
        # Paths whose requests may be sent again after a replica may have
        # run them (see the module docstring).
        self.idempotent_routes = frozenset(idempotent_routes)

    # --- the pool's timer: probes and scrapes ----------------------------
    async def timers(self) -> None:
        """Run what next_due() lists; sleep until the time it returns (on
        the library's default clock, CLOCK_MONOTONIC: time.monotonic_ns)."""
        running: set[asyncio.Task] = set()
        backoff = 0.0
        while True:
            try:
                due, next_ns = self.pool.next_due(64)
            except Exception:  # never let the timer die: log, back off
                backoff = min(max(2 * backoff, TIMER_BACKOFF_MIN),
                              TIMER_BACKOFF_MAX)
                log.exception("next_due failed; again in %.2f s", backoff)
                await asyncio.sleep(backoff)
                continue
            backoff = 0.0
            for d in due:
                if d.kind == DueKind.PROBE:
                    job = self.probe
                elif d.kind == DueKind.SCRAPE:
                    job = self.scrape
                else:  # a kind of a newer library: not ours to guess
                    log.debug("next_due: ignoring kind %r for %s", d.kind,
                              d.replica_id)
                    continue
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
        try:
            self.pool.health_report(b.url, result)
        except inferlb.NotFoundError:
            pass  # removed meanwhile

    async def scrape(self, b: Backend) -> None:
        try:
            if not self.pool.replica(b.url).available:
                return
            status, _, body = await asyncio.wait_for(
                fetch(b, "GET", "/metrics"), 2.0)
            if status == 200:
                self.pool.report(b.url, b.scrape.parse(body))
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                ValueError, HttpError, inferlb.InferlbError) as e:
            log.debug("scrape %s: %s", b.url, e)  # non-fatal, as in seed 002

    # --- forwarding ----------------------------------------------------
    def idempotent(self, method: str, path: str,
                   headers: list[tuple[str, str]]) -> bool:
        """May this request be sent again after a replica may have run it?
        Only when it is idempotent: by its method (GET, HEAD, OPTIONS,
        TRACE -- route() forwards POST only), because the client says so
        (an Idempotency-Key / X-Idempotency-Key header), or because its
        path is one of idempotent_routes."""
        if method in ("GET", "HEAD", "OPTIONS", "TRACE"):
            return True
        if urllib.parse.urlsplit(path).path in self.idempotent_routes:
            return True
        return any(k.lower() in ("idempotency-key", "x-idempotency-key")
                   for k, _ in headers)

    async def attempt(self, b: Backend, method: str, path: str, body: bytes,
                      headers: list[tuple[str, str]]
                      ) -> tuple[int, list[tuple[str, str]], bytes]:
        """One attempt on one replica within self.timeout. Raises
        AttemptFailed saying whether the request may have reached it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        try:  # phase 1: nothing, or not all of the request, reached it
            reader, writer = await asyncio.wait_for(
                send_request(b, method, path, body, headers), self.timeout)
        except asyncio.TimeoutError:
            raise AttemptFailed(OutcomeStatus.TIMEOUT, False, 504,
                                "replica timed out") from None
        except ConnectionRefusedError as e:
            raise AttemptFailed(OutcomeStatus.REFUSED, False, 502,
                                f"Replica error: {e}") from None
        except OSError as e:
            raise AttemptFailed(OutcomeStatus.CONNECT_ERROR, False, 502,
                                f"Replica error: {e}") from None
        try:  # phase 2: the replica has the request and may have run it
            return await asyncio.wait_for(read_response(reader),
                                          max(deadline - loop.time(), 0))
        except asyncio.TimeoutError:
            raise AttemptFailed(OutcomeStatus.TIMEOUT, True, 504,
                                "replica timed out") from None
        except (OSError, asyncio.IncompleteReadError) as e:
            raise AttemptFailed(OutcomeStatus.CONNECT_ERROR, True, 502,
                                f"Replica error: {e or type(e).__name__}"
                                ) from None
        except (HttpError, ValueError) as e:
            raise AttemptFailed(OutcomeStatus.HTTP_ERROR, True, 502,
                                f"bad response from replica: {e}") from None
        finally:
            writer.close()

    @staticmethod
    def finish(ticket: inferlb.Ticket, status: int, http_status: int = 0,
               latency_ns: int = 0) -> None:
        """Complete a ticket; never raises (a removed replica's ticket is
        released all the same)."""
        if ticket.done:
            return
        try:
            ticket.complete(status, http_status=http_status,
                            latency_ns=latency_ns)
        except inferlb.ReplicaRemovedError:
            pass
        except inferlb.InferlbError as e:
            log.warning("complete %s: %s", ticket.replica_id, e)

    async def forward(self, method: str, path: str,
                      headers: list[tuple[str, str]], body: bytes,
                      peer: str) -> tuple[int, list[tuple[str, str]], bytes]:
        # The body as the prompt: the prefix policy matches requests whose
        # bodies start alike (a shared system prompt, a conversation's
        # history) with what each replica was sent; others ignore it.
        req = inferlb.Request(prompt=body) if body else None
        try:
            ticket = self.pool.pick(request=req)
        except (inferlb.NoReplicaError, inferlb.SaturatedError,
                inferlb.ShedError) as e:
            return json_response(503, {"detail": "No healthy replicas "
                                       "available", "error": e.name})
        fwd = [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP]
        fwd.append(("X-Forwarded-For", peer))
        resend = self.idempotent(method, path, headers)
        state, backoff = self.pool.retry_state(), 0.0
        while True:  # one pass per attempt; pool.retry() decides on more
            b: Backend = ticket.host_data
            t0 = time.monotonic_ns()
            try:
                await asyncio.sleep(backoff)
                t0 = time.monotonic_ns()
                status, rh, rbody = await self.attempt(b, method, path, body,
                                                       fwd)
                break
            except asyncio.CancelledError:
                self.finish(ticket, OutcomeStatus.CANCELLED)
                raise
            except AttemptFailed as e:
                failure = e
            except BaseException:  # a bug: still never leak the ticket
                self.finish(ticket, OutcomeStatus.CONNECT_ERROR,
                            latency_ns=time.monotonic_ns() - t0)
                raise
            latency = time.monotonic_ns() - t0
            if failure.sent and not resend:
                # The replica may have run it: complete, do not send again.
                self.finish(ticket, failure.outcome, latency_ns=latency)
                return json_response(*failure.reply)
            try:
                d = self.pool.retry(state, ticket, inferlb.Outcome(
                    failure.outcome, latency_ns=latency), req)
            except inferlb.InferlbError as e:  # not expected; never leak
                log.warning("retry %s: %s", ticket.replica_id, e)
                self.finish(ticket, failure.outcome, latency_ns=latency)
                return json_response(*failure.reply)
            if not d:
                return json_response(*failure.reply)
            ticket, backoff = d.ticket, d.backoff_s
        failed = status >= 500 or status == 429
        self.finish(ticket, OutcomeStatus.HTTP_ERROR if failed else
                    OutcomeStatus.OK, http_status=status
                    if 100 <= status <= 599 else 0,
                    latency_ns=time.monotonic_ns() - t0)
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
    ap.add_argument("--policy", default="composite",
                    help="a policy name (prefix: the body is the prompt)")
    ap.add_argument("--health-interval", type=float, default=10.0)
    ap.add_argument("--metrics-interval", type=float, default=5.0)
    ap.add_argument("--health-path", default="/health")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--idempotent-route", action="append", default=[],
                    metavar="PATH", help="requests to PATH may be sent again "
                    "after a replica may have run them (repeatable)")
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
                 args.health_path, args.idempotent_route)
    try:
        asyncio.run(gw.serve(host or "127.0.0.1", int(port)))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A bounded HTTP/1.1 load generator: a fixed number of requests over a fixed number of
keep-alive connections, with a time limit as a safety net.

It speaks raw HTTP over asyncio (responses parsed by httptools, the parser uvicorn uses), so the
client costs a few tens of microseconds per request and the server, not the client, is what a
run measures, even at the 6,000+ req/s of the bare ceiling. Latency is timed per request from
write to the last byte of the response.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httptools

Request = bytes


def request(
    method: str,
    path: str,
    *,
    host: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> Request:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: keep-alive"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class Result:
    requests: int
    concurrency: int
    seconds: float
    latencies_ms: list[float]
    errors: int
    error_samples: list[str] = field(default_factory=list)
    timed_out: bool = False
    bytes_received: int = 0

    @property
    def completed(self) -> int:
        return len(self.latencies_ms)

    @property
    def rps(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
        return ordered[index]

    def summary(self) -> dict[str, float | int | bool]:
        return {
            "requests": self.requests,
            "completed": self.completed,
            "concurrency": self.concurrency,
            "seconds": round(self.seconds, 3),
            "rps": round(self.rps, 1),
            "p50_ms": round(self.percentile(50), 3),
            "p95_ms": round(self.percentile(95), 3),
            "p99_ms": round(self.percentile(99), 3),
            "mean_ms": round(statistics.fmean(self.latencies_ms), 3) if self.latencies_ms else 0,
            "errors": self.errors,
            "timed_out": self.timed_out,
            "bytes_per_response": (
                round(self.bytes_received / self.completed) if self.completed else 0
            ),
        }


class _Response:
    def __init__(self) -> None:
        self.done = False
        self.body_size = 0
        self.body_start = b""
        self.keep_alive = True

    def on_body(self, body: bytes) -> None:
        if self.body_size < 300:
            self.body_start += body[: 300 - self.body_size]
        self.body_size += len(body)

    def on_message_complete(self) -> None:
        self.done = True


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, _Response]] | None = None
        self.response = _Response()
        self.parser = httptools.HttpResponseParser(self.response)
        self.lost: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)
            return
        if self.response.done and self.waiter is not None and not self.waiter.done():
            self.response.keep_alive = self.parser.should_keep_alive()
            self.waiter.set_result((self.parser.get_status_code(), self.response))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("the server closed the connection"))

    def _fail(self, exc: Exception) -> None:
        self.lost = exc
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    async def send(self, data: bytes) -> tuple[int, _Response]:
        assert self.transport is not None
        self.response = _Response()
        self.parser = httptools.HttpResponseParser(self.response)
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def _connect(host: str, port: int) -> _Connection:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(_Connection, host, port)
    return protocol


Check = Callable[[int, bytes], str | None]


def expect_status(*ok: int) -> Check:
    def check(status: int, body: bytes) -> str | None:
        if status in ok:
            return None
        return f"HTTP {status}: {body[:200].decode(errors='replace')}"

    return check


async def run(
    host: str,
    port: int,
    requests: Sequence[Request],
    *,
    total: int,
    concurrency: int,
    warmup: int = 0,
    time_limit: float = 60.0,
    check: Check | None = None,
) -> Result:
    """Send `total` requests (cycling through `requests`) over `concurrency` connections after
    `warmup` untimed ones; stop early, marked timed out, once `time_limit` seconds have passed."""
    check = check or expect_status(200)
    conns = [await _connect(host, port) for _ in range(concurrency)]
    latencies: list[float] = []
    samples: list[str] = []
    errors = 0
    received = 0
    counter = 0
    deadline = 0.0
    timed_out = False

    async def worker(index: int, limit: int, record: bool) -> None:
        nonlocal counter, errors, received, timed_out
        conn = conns[index]
        while counter < limit:
            if time.perf_counter() > deadline:
                timed_out = timed_out or record
                return
            data = requests[counter % len(requests)]
            counter += 1
            started = time.perf_counter()
            try:
                status, response = await conn.send(data)
            except (OSError, httptools.HttpParserError) as exc:
                errors += 1
                if len(samples) < 5:
                    samples.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = conns[index] = await _connect(host, port)
                continue
            elapsed = time.perf_counter() - started
            problem = check(status, response.body_start)
            if problem is not None:
                errors += 1
                if len(samples) < 5:
                    samples.append(problem)
            elif record:
                latencies.append(elapsed * 1000)
                received += response.body_size
            if not response.keep_alive:
                conn.close()
                conn = conns[index] = await _connect(host, port)

    try:
        if warmup:
            deadline = time.perf_counter() + time_limit / 4
            await asyncio.gather(*(worker(i, warmup, False) for i in range(concurrency)))
        counter = 0
        errors = 0
        samples.clear()
        started = time.perf_counter()
        deadline = started + time_limit
        await asyncio.gather(*(worker(i, total, True) for i in range(concurrency)))
        seconds = time.perf_counter() - started
    finally:
        for conn in conns:
            conn.close()
    return Result(
        requests=total,
        concurrency=concurrency,
        seconds=seconds,
        latencies_ms=latencies,
        errors=errors,
        error_samples=samples,
        timed_out=timed_out,
        bytes_received=received,
    )

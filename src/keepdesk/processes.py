"""`keepdesk serve`: the uvicorn server of one process, or with `--processes N` a supervisor
and N serving processes on one listening socket.

Python runs one thread of Python code at a time, so one process serves at most one core's
worth of requests; on SQLite it is the only way past that (PostgreSQL can also take more
instances behind a load balancer). With N processes this one binds the port, starts N
processes with `multiprocessing`'s spawn (a fresh interpreter each: nothing of this process's
state is copied into them) that serve HTTP on that same socket (the kernel gives each new
connection to whichever of them accepts first), and starts again any that ends without being
asked. The first of them also runs the background tasks, unless `--no-workers`.

What the processes share goes through the database and the data directory: presence through
`presence.relay` (sockets on SQLite, LISTEN/NOTIFY on PostgreSQL), the background tasks' state
through `Runtime.tasks_file`, the request metrics through prometheus_client's files in
`<data_dir>/run/metrics/`. On SQLite their writers meet in SQLite's busy handler (each
process's own writers take turns, `db.Database`).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn

from keepdesk import __version__
from keepdesk.config import Settings
from keepdesk.console import fail, run
from keepdesk.logs import configure_logging
from keepdesk.ops.metrics import MULTIPROCESS_DIR

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger("keepdesk")

# A process that ends sooner than this after its start is restarted after a growing delay
# (1 s, 2 s, ... up to MAX_RESTART_DELAY), so a fault that kills every start cannot spin.
STEADY_AFTER = 10.0
MAX_RESTART_DELAY = 30.0
# How long the processes get to finish their requests and background work when asked to stop.
STOP_TIMEOUT = 30.0


def uvicorn_config(app: FastAPI, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.server_host,
        port=settings.server_port,
        log_config=None,
        # AC-23: forwarded headers count only from configured proxies.
        proxy_headers=bool(settings.server_trusted_proxies),
        forwarded_allow_ips=settings.server_trusted_proxies or None,
        server_header=False,
        access_log=False,
    )


def metrics_dir(settings: Settings) -> Path:
    return settings.data_dir / "run" / "metrics"


@dataclass
class _Child:
    index: int
    process: BaseProcess
    ready: Connection
    started_at: float
    is_ready: bool = False


@dataclass
class Supervisor:
    """Starts, watches and stops the serving processes; `run` returns the exit status."""

    settings: Settings
    processes: int
    start_workers: bool
    sock: socket.socket
    children: dict[int, _Child] = field(default_factory=dict)
    # Processes to start again: index -> when; and each one's pause after its last quick end.
    restarts: dict[int, float] = field(default_factory=dict)
    delays: dict[int, float] = field(default_factory=dict)
    stopping: bool = False

    def __post_init__(self) -> None:
        self._context = multiprocessing.get_context("spawn")
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        os.set_blocking(self._wake_read, False)

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _STOP_SIGNALS}
        old_wakeup = signal.set_wakeup_fd(self._wake_write)
        try:
            for index in range(self.processes):
                self._start(index)
            if not self._wait_until_ready():
                self._stop_all()
                return 0 if self.stopping else 1
            log.info(
                "keepdesk %s on http://%s:%d with %d processes (pid %d supervises)",
                __version__,
                self.settings.server_host,
                self.settings.server_port,
                self.processes,
                os.getpid(),
            )
            while not self.stopping:
                self._watch()
            self._stop_all()
            return 0
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(self._wake_read)
            os.close(self._wake_write)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.stopping:
            # Asked twice: stop now, as uvicorn does on a second Ctrl-C.
            for child in self.children.values():
                if child.process.is_alive():
                    _kill(child.process)
        self.stopping = True

    def _start(self, index: int) -> None:
        receive, send = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_serve_child,
            args=(self.settings, self.sock, index, self.start_workers and index == 0, send),
            name=f"keepdesk-serve-{index}",
        )
        process.start()
        send.close()
        self.children[index] = _Child(index, process, receive, time.monotonic())

    def _wait_until_ready(self) -> bool:
        """True once every process serves; False if one ended before it did (its own log says
        why: the database unreachable, say) or the supervisor was asked to stop."""
        while not self.stopping:
            waiting = [c for c in self.children.values() if not c.is_ready]
            if not waiting:
                return True
            self._wait_for([c.ready for c in waiting] + [c.process.sentinel for c in waiting])
            for child in waiting:
                if _poll_ready(child):
                    child.is_ready = True
                elif not child.process.is_alive():
                    log.error(
                        "serving process %d ended while starting (exit status %s); stopping",
                        child.index,
                        child.process.exitcode,
                    )
                    return False
        return False

    def _watch(self) -> None:
        now = time.monotonic()
        due = min(self.restarts.values(), default=None)
        self._wait_for(
            [c.process.sentinel for c in self.children.values()]
            + [c.ready for c in self.children.values() if not c.is_ready],
            timeout=None if due is None else max(0.0, due - now),
        )
        if self.stopping:
            return
        for child in list(self.children.values()):
            if not child.is_ready and _poll_ready(child):
                child.is_ready = True
                log.info("serving process %d is back (pid %d)", child.index, child.process.pid)
            if child.process.is_alive():
                continue
            if time.monotonic() - child.started_at >= STEADY_AFTER:
                self.delays.pop(child.index, None)
                delay = 0.5
            else:
                delay = self._next_delay(child.index)
            log.error(
                "serving process %d (pid %d) ended unasked (exit status %s); starting it again "
                "in %.1f s",
                child.index,
                child.process.pid,
                child.process.exitcode,
                delay,
            )
            child.ready.close()
            del self.children[child.index]
            self.restarts[child.index] = time.monotonic() + delay
        now = time.monotonic()
        for index in [i for i, at in self.restarts.items() if at <= now]:
            del self.restarts[index]
            self._start(index)

    def _next_delay(self, index: int) -> float:
        delay = self.delays[index] = min(MAX_RESTART_DELAY, self.delays.get(index, 0.5) * 2)
        return delay

    def _wait_for(self, objects: list[Any], timeout: float | None = None) -> None:
        wait([*objects, self._wake_read], timeout)
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_read, 512):
                pass

    def _stop_all(self) -> None:
        self.restarts.clear()
        alive = [c.process for c in self.children.values() if c.process.is_alive()]
        for process in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid or 0, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in alive:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("serving process pid %d did not stop in time; killing it", process.pid)
                _kill(process)
                process.join()
        for child in self.children.values():
            child.ready.close()
        log.info("all serving processes stopped")


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _kill(process: BaseProcess) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid or 0, signal.SIGKILL)


def _poll_ready(child: _Child) -> bool:
    try:
        return child.ready.poll() and child.ready.recv() == "ready"
    except (EOFError, OSError):
        return False


def supervise(settings: Settings, *, processes: int, start_workers: bool) -> int:
    """Bind the port and run `processes` serving processes until SIGTERM or SIGINT."""
    # Each process counts its requests in files here; a scrape adds them up. A new supervisor
    # starts from zero, as a restarted single process does.
    folder = metrics_dir(settings)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(mode=0o700, parents=True)
    os.environ[MULTIPROCESS_DIR] = str(folder.resolve())
    family = socket.AF_INET6 if ":" in settings.server_host else socket.AF_INET
    try:
        sock = socket.create_server(
            (settings.server_host, settings.server_port), family=family, backlog=2048
        )
    except OSError as exc:
        fail(
            f"cannot listen on {settings.server_host}:{settings.server_port}: {exc.strerror or exc}"
        )
    # The processes get these very settings (a config file edited meanwhile waits for the next
    # start), as a plain `Settings`: `config.load_settings` returns a class of its own.
    plain = Settings.model_construct(**dict(settings))
    try:
        return Supervisor(plain, processes, start_workers, sock).run()
    finally:
        sock.close()


class _ServingProcess(uvicorn.Server):
    """uvicorn's server that tells the supervisor once it serves, and stops if the supervisor
    is gone (killed outright: nobody would restart or stop this process any more)."""

    def __init__(self, config: uvicorn.Config, *, ready: Connection) -> None:
        super().__init__(config)
        self._ready = ready
        self._parent = os.getppid()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._ready.send("ready")

    async def on_tick(self, counter: int) -> bool:
        # uvicorn ticks every 0.1 s; the supervisor is checked once a second.
        if counter % 10 == 0 and os.getppid() != self._parent:
            log.error("the supervisor (pid %d) is gone; stopping", self._parent)
            return True
        return await super().on_tick(counter)


def _serve_child(
    settings: Settings, sock: socket.socket, index: int, start_workers: bool, ready: Connection
) -> None:
    """One serving process (spawned: this runs in a fresh interpreter)."""
    configure_logging(settings.log_level.value, settings.log_format.value, with_pid=True)
    # Imported here, after PROMETHEUS_MULTIPROC_DIR came in with the environment.
    from keepdesk.app import create_app

    async def main() -> None:
        web = create_app(settings, start_workers=start_workers)
        await _ServingProcess(uvicorn_config(web, settings), ready=ready).serve(sockets=[sock])

    log.debug("serving process %d starting", index)
    run(main, server=True)

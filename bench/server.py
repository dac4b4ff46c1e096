"""Server processes under test: a real `keepdesk serve`, or the ceiling app, on a loopback port.

Each runs in its own process group and is stopped by its own pid. Peak memory comes from
/proc/<pid>/status (VmHWM); writing 5 to /proc/<pid>/clear_refs resets that peak, so each
scenario reports its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import free_port, spawned_children

REPO = Path(__file__).resolve().parent.parent


def _memory_kib(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    host: str = "127.0.0.1"

    @property
    def pid(self) -> int:
        return self.process.pid

    def serving_pids(self) -> list[int]:
        """The processes that answer requests: under `serve --processes N` the supervisor's
        spawned children, else the process itself."""
        return spawned_children(self.pid) or [self.pid]

    def peak_rss_mib(self) -> float | None:
        """The serving processes' peaks added up: the memory the server needed."""
        peaks = [_memory_kib(pid, "VmHWM") for pid in self.serving_pids()]
        if any(kib is None for kib in peaks):
            return None
        return round(sum(kib or 0 for kib in peaks) / 1024, 1)

    def reset_peak(self) -> bool:
        """Start a new peak-RSS window (Linux 4.0+); False where the kernel does not allow it."""
        try:
            for pid in self.serving_pids():
                Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def wait_ready(self, path: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        probe = f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\nConnection: close\r\n\r\n".encode()
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=2) as s:
                    s.sendall(probe)
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        return
            except OSError:
                pass
            time.sleep(0.1)  # a start-up poll, bounded by the deadline
        raise RuntimeError(f"{self.name} did not answer {path} within {timeout} s")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def _spawn(name: str, args: list[str], env: dict[str, str], log_dir: Path, port: int) -> Server:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603
            args,
            env=env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(name=name, process=process, port=port, log_path=log_path)


def _keepdesk_binary() -> str:
    beside = Path(sys.executable).with_name("keepdesk")
    return str(beside) if beside.is_file() else "keepdesk"


def keepdesk_env(database_url: str, data_dir: Path) -> dict[str, str]:
    from bench import people

    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEPDESK_")}
    env.update(
        KEEPDESK_DATA_DIR=str(data_dir),
        KEEPDESK_DATABASE_URL=database_url,
        KEEPDESK_WORKERS_ENABLED="false",
        KEEPDESK_SECRET_KEY=people.SECRET_KEY,
        KEEPDESK_LOG_LEVEL="warning",
    )
    return env


def start_keepdesk(database_url: str, data_dir: Path, log_dir: Path, *, processes: int) -> Server:
    port = free_port()
    kind = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    server = _spawn(
        f"keepdesk-{kind}",
        [
            *(_keepdesk_binary(), "serve", "--host", "127.0.0.1", "--port", str(port)),
            *("--no-workers", "--processes", str(processes)),
        ],
        keepdesk_env(database_url, data_dir),
        log_dir,
        port,
    )
    try:
        server.wait_ready("/healthz")
    except BaseException:
        server.stop()
        raise
    return server


def start_ceiling(log_dir: Path) -> Server:
    """The ceiling app, on the event loop `keepdesk serve` uses (uvloop)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEPDESK_")}
    server = _spawn(
        "ceiling",
        [sys.executable, "-m", "bench.ceiling", "--port", str(port)],
        env,
        log_dir,
        port,
    )
    try:
        server.wait_ready("/json")
    except BaseException:
        server.stop()
        raise
    return server

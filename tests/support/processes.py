"""keepdesk as real processes: started with an environment of the test's own, waited for with a
deadline, and stopped the way a service manager stops them (SIGTERM, then SIGKILL)."""

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

import httpx

BIN = Path(sys.executable).parent
KEEPDESK = BIN / "keepdesk"


Result = subprocess.CompletedProcess[str]


def keepdesk(*args: str, env: dict[str, str], stdin: str | None = None) -> Result:
    """One `keepdesk` command, to its end; its output captured."""
    return subprocess.run(
        [str(KEEPDESK), *args],
        env=env,
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def ok(result: Result) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    return result.stdout


def spawned_children(pid: int) -> list[int]:
    """The processes `pid` started with multiprocessing's spawn (the serving processes of
    `serve --processes N`), not its resource tracker."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in cmdline:
            children.append(int(entry.name))
    return sorted(children)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def environment(**settings: str) -> dict[str, str]:
    """This process's environment without any KEEPDESK_* setting, plus `settings`; the venv's
    programs (keepdesk, python3) come first on PATH, as they do in the container image."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEPDESK_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    env.update(settings)
    return env


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)

    def stop(self, *, timeout: float = 40) -> int:
        """SIGTERM, and SIGKILL for the whole process group if it has not exited in time."""
        self.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        return self.process.returncode


def stop_all(running: list[Running], *, timeout: float = 40) -> list[int]:
    """Stop several at once: each may take a while to finish its background work."""
    for each in running:
        each.terminate()
    return [each.stop(timeout=timeout) for each in running]


def start(command: list[str | Path], *, env: dict[str, str], log_path: Path) -> Running:
    """Run `command` with stdout and stderr into `log_path` (a file: a full pipe would block it)."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(c) for c in command],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Running(process=process, log_path=log_path)


def wait_until_healthy(running: Running, url: str, *, seconds: float = 60) -> None:
    """Poll `url` until it answers 200; fail with the process's log if it exits or time is up."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if running.process.poll() is not None:
            raise AssertionError(
                f"the process exited ({running.process.returncode}):\n{running.log()}"
            )
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)  # polling, bounded by the deadline
    raise AssertionError(f"{url} did not answer within {seconds:.0f}s:\n{running.log()}")

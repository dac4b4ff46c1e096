"""`keepdesk serve --log-format json`, as a log collector reads it: one JSON object per line,
and one line per request with its request id, route and status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tests.support import processes


def test_serve_logs_one_json_object_per_line_with_each_request(tmp_path: Path) -> None:
    port = processes.free_port()
    base = f"http://127.0.0.1:{port}"
    server = processes.start(
        [processes.KEEPDESK, "serve", "--port", str(port), "--log-format", "json"],
        # The flag beats the setting.
        env=processes.environment(
            KEEPDESK_DATA_DIR=str(tmp_path / "data"),
            KEEPDESK_LOG_FORMAT="text",
            KEEPDESK_BACKUP_EVERY_HOURS="0",
        ),
        log_path=tmp_path / "serve.log",
    )
    try:
        processes.wait_until_healthy(server, f"{base}/healthz")
        answers = [
            httpx.get(f"{base}/healthz", headers={"X-Request-ID": "lb-7.health"}, timeout=5),
            httpx.get(f"{base}/api/v1/tickets/1042", timeout=5),
            httpx.get(f"{base}/api/v1/no-such-thing", timeout=5),
        ]
    finally:
        server.stop()

    lines = [line for line in server.log().splitlines() if line.strip()]
    entries: list[dict[str, Any]] = []
    for line in lines:
        entry = json.loads(line)  # every line, from keepdesk, uvicorn or a worker
        assert isinstance(entry, dict), line
        assert {"ts", "level", "logger", "message"} <= entry.keys(), line
        entries.append(entry)
    requests = {
        entry["request_id"]: entry for entry in entries if entry["logger"] == "keepdesk.requests"
    }
    for answer, route, status in zip(
        answers,
        ["/healthz", "/api/v1/tickets/{number}", "unmatched"],
        [200, 401, 404],
        strict=True,
    ):
        request_id = answer.headers["x-request-id"]
        entry = requests[request_id]
        assert (entry["route"], entry["status"], entry["method"]) == (route, status, "GET")
        assert entry["duration_ms"] >= 0
    assert answers[0].headers["x-request-id"] == "lb-7.health"
    assert any("keepdesk 0.1.0 on http://127.0.0.1" in e["message"] for e in entries)

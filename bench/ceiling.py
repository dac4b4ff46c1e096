"""The machine's ceiling: what the web stack alone costs, served exactly as `keepdesk serve`
serves (one process, uvicorn with its default HTTP parser, on uvloop as `keepdesk serve`
runs), so keepdesk's numbers can be read as a share of it.

    python -m bench.ceiling --port 8001 [--asyncio-loop]

`/json` answers a small JSON object; `/table` renders a 50-row Jinja2 table from memory, the
shape of a queue page without its database. `--asyncio-loop` runs the same app on the
standard library's loop, to show what uvloop changes.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from jinja2 import DictLoader, Environment, select_autoescape

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }} · keepdesk</title>
<link rel="stylesheet" href="/static/app.css"></head>
<body><header><nav><a href="/">Queues</a> <a href="/search">Search</a></nav>
<span class="me">{{ me }}</span></header>
<main><h1>{{ title }}</h1>
<table class="queue"><thead><tr><th>#</th><th>Subject</th><th>Requester</th><th>Status</th>
<th>Priority</th><th>Team</th><th>Assignee</th><th>Updated</th></tr></thead><tbody>
{% for t in tickets %}<tr id="t{{ t.number }}" class="status-{{ t.status }}">
<td><a href="/tickets/{{ t.number }}">#{{ t.number }}</a></td>
<td><a href="/tickets/{{ t.number }}">{{ t.subject }}</a></td>
<td>{{ t.requester }}</td><td><span class="badge {{ t.status }}">{{ t.status }}</span></td>
<td>{{ t.priority }}</td><td>{{ t.team }}</td><td>{{ t.assignee or "—" }}</td>
<td><time datetime="{{ t.updated.isoformat() }}">{{ t.updated.strftime("%d %b %H:%M") }}</time>
</td></tr>
{% endfor %}</tbody></table>
<button hx-get="/?cursor=abc" hx-target="tbody" hx-swap="beforeend">Load more</button>
</main></body></html>
"""


def _rows() -> list[dict[str, Any]]:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        {
            "number": 100_000 - i,
            "subject": f"Cannot log in since the update <{i}> & more",
            "requester": f"Customer Number{i} <customer{i}@example.com>",
            "status": ("open", "pending", "new")[i % 3],
            "priority": ("normal", "high")[i % 2],
            "team": "Support",
            "assignee": None if i % 4 == 0 else f"Agent {i % 7}",
            "updated": now - timedelta(minutes=17 * i),
        }
        for i in range(50)
    ]


def create_app() -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    env = Environment(loader=DictLoader({"queue.html": _PAGE}), autoescape=select_autoescape())
    template = env.get_template("queue.html")
    rows = _rows()

    @app.get("/json")
    async def small_json() -> dict[str, Any]:
        return {"status": "ok", "version": "0.1.0", "tickets": 3}

    @app.get("/table", response_class=HTMLResponse)
    async def table() -> HTMLResponse:
        return HTMLResponse(template.render(title="Open tickets", me="Agent 3", tickets=rows))

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--asyncio-loop", action="store_true")
    args = parser.parse_args()
    # The settings of `keepdesk serve` (src/keepdesk/cli.py), word for word.
    config = uvicorn.Config(
        create_app(),
        host="127.0.0.1",
        port=args.port,
        log_config=None,
        proxy_headers=False,
        server_header=False,
        access_log=False,
    )
    server = uvicorn.Server(config)
    if args.asyncio_loop:
        asyncio.run(server.serve())
    else:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(server.serve())


if __name__ == "__main__":
    main()

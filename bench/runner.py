"""One benchmark run: per database, the data set (cached), a real `keepdesk serve`, every
scenario at each concurrency between two measurements of the ceiling, then mail ingest.

Ratios use the mean of the ceiling measured just before and just after the scenarios of the
same concurrency, so a machine that got busier or quieter mid-run shows up as a wide ceiling
spread (reported) instead of a skewed ratio.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import os
import platform
import sqlite3
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import uvloop
from sqlalchemy import delete, func, select

from bench import load, mail, people, store
from bench.pg import PgServer, from_url, own_cluster
from bench.scenarios import HOST, Sample, Scenario, api_scenarios, deep_cursor, web_scenarios
from bench.server import Server, start_ceiling, start_keepdesk
from keepdesk.accounts.models import WebSession
from keepdesk.accounts.secrets import token_hash
from keepdesk.config import Settings, load_settings
from keepdesk.runtime import Runtime
from keepdesk.tickets.models import Ticket

log = logging.getLogger("bench")


@dataclass
class Options:
    tickets: int = 100_000
    databases: tuple[str, ...] = ("sqlite", "postgresql")
    pg_url: str | None = None
    rebuild: bool = False
    analyze: bool = False
    concurrency: tuple[int, ...] = (1, 16)
    # `keepdesk serve --processes`: one per core, as docs/operate.md advises.
    processes: int = field(default_factory=lambda: os.cpu_count() or 1)
    scale: float = 1.0
    time_limit: float = 10.0
    mails: int = 300
    only: frozenset[str] = frozenset()
    root: Path = store.DATA
    log_dir: Path = store.DATA / "logs"
    ceiling_requests: tuple[int, int] = (3000, 1000)  # JSON, table
    warmup: int = 50
    notes: list[str] = field(default_factory=list)


def settings_for(workspace: store.Workspace) -> Settings:
    return load_settings(
        None,
        data_dir=workspace.data_dir,
        database_url=workspace.database_url,
        secret_key=people.SECRET_KEY,
        workers_enabled=False,
        log_level="warning",
    )


def machine() -> dict[str, Any]:
    mem_kib = 0
    model = platform.processor() or "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


# --- preparing a working copy -----------------------------------------------------------------


def features(server: Server) -> tuple[set[str], str | None]:
    """Which page routes the running server has, and how to search tickets (None: not built
    yet). Asked of the server itself: the API's OpenAPI document, and a probe of each page."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        conn.request("GET", "/api/v1/openapi.json")
        spec = json.loads(conn.getresponse().read())
        paths = spec.get("paths", {})
        search: str | None = None
        if "/api/v1/search" in paths:
            search = "/api/v1/search?limit=25&q="
        else:
            params = paths.get("/api/v1/tickets", {}).get("get", {}).get("parameters", [])
            if any(p.get("name") == "q" for p in params):
                search = "/api/v1/tickets?limit=25&q="
        routes: set[str] = set()
        cookie = {"Cookie": f"keepdesk_session={people.AGENT.session_token}"}
        for probe, route in (
            ("/queue/mine", "/queue/{key}"),
            ("/queue/team/1", "/queue/team/{team_id}"),
            ("/tickets/1", "/tickets/{number}"),
        ):
            conn.request("GET", probe, headers=cookie)
            response = conn.getresponse()
            body = response.read()
            if not (response.status == 404 and b"no such endpoint" in body):
                routes.add(route)
    finally:
        conn.close()
    return routes, search


async def prepare(workspace: store.Workspace) -> Sample:
    """Sign the cast in (browser sessions made now, so they are fresh) and sample the data."""
    async with Runtime.from_settings(settings_for(workspace)) as runtime:
        now = runtime.clock.now()
        async with runtime.db.session(write=True) as session:
            hashes = [token_hash(w.session_token) for w in (people.ADMIN, people.AGENT)]
            await session.execute(delete(WebSession).where(WebSession.token_hash.in_(hashes)))
            for who in (people.ADMIN, people.AGENT):
                session.add(
                    WebSession(
                        agent_id=who.agent_id,
                        token_hash=token_hash(who.session_token),
                        created_at=now,
                        last_seen_at=now,
                        expires_at=now + timedelta(hours=12),
                        ip_address="127.0.0.1",
                        user_agent="keepdesk-bench",
                    )
                )
            await session.commit()
        teams = people.teams_of(people.AGENT_ID)
        visible = Ticket.team_id.in_(teams) | (Ticket.assignee_id == people.AGENT_ID)
        async with runtime.db.session() as session:
            numbers = list(
                (
                    await session.scalars(
                        select(Ticket.number).where(visible).order_by(func.random()).limit(2000)
                    )
                ).all()
            )
            longs = workspace.facts.long_tickets
            long_ticket = await session.scalar(
                select(Ticket.number)
                .where(Ticket.number.in_(longs), visible)
                .order_by(Ticket.number.desc())
                .limit(1)
            )
            count = await session.scalar(select(func.count()).select_from(Ticket).where(visible))
            row = (
                await session.execute(
                    select(Ticket.updated_at, Ticket.id)
                    .where(visible)
                    .order_by(Ticket.updated_at.desc(), Ticket.id.desc())
                    .offset(max(0, (count or 0) // 2))
                    .limit(1)
                )
            ).first()
            top = await session.scalar(select(func.max(Ticket.number)))
    cursor = deep_cursor(row[0].isoformat(), row[1]) if row else ""
    return Sample(
        visible_numbers=numbers,
        long_ticket=long_ticket,
        deep_cursor=cursor,
        next_number=(top or 0) + 1,
        search_term="invoice",
        open_team=workspace.facts.open_team,
    )


async def next_number(workspace: store.Workspace) -> int:
    async with (
        Runtime.from_settings(settings_for(workspace)) as runtime,
        runtime.db.session() as session,
    ):
        top = await session.scalar(select(func.max(Ticket.number)))
    return (top or 0) + 1


# --- measuring --------------------------------------------------------------------------------


async def measure(
    server: Server,
    requests: list[load.Request],
    *,
    total: int,
    concurrency: int,
    warmup: int,
    time_limit: float,
    check: load.Check | None = None,
) -> dict[str, Any]:
    server.reset_peak()
    result = await load.run(
        HOST,
        server.port,
        requests,
        total=total,
        concurrency=concurrency,
        warmup=warmup,
        time_limit=time_limit,
        check=check,
    )
    summary: dict[str, Any] = result.summary()
    summary["peak_rss_mib"] = server.peak_rss_mib()
    if result.error_samples:
        summary["error_samples"] = result.error_samples
    return summary


async def measure_ceiling(ceiling: Server, options: Options, concurrency: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, total in zip(("json", "table"), options.ceiling_requests, strict=True):
        requests = [load.request("GET", f"/{kind}", host=HOST)]
        out[kind] = await measure(
            ceiling,
            requests,
            total=max(20, int(total * options.scale)),
            concurrency=concurrency,
            warmup=options.warmup,
            time_limit=options.time_limit,
        )
    return out


def _mean_ceiling(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for kind in ("json", "table"):
        a, b = before[kind]["rps"], after[kind]["rps"]
        out[kind] = {
            "rps": round((a + b) / 2, 1),
            "before": before[kind],
            "after": after[kind],
            "spread": round(abs(a - b) / max(a, b), 3) if max(a, b) else 0.0,
        }
    return out


async def http_phase(
    workspace: store.Workspace,
    sample: Sample,
    ceiling: Server,
    options: Options,
) -> list[dict[str, Any]]:
    server = await asyncio.to_thread(
        start_keepdesk,
        workspace.database_url,
        workspace.data_dir,
        options.log_dir,
        processes=options.processes,
    )
    rounds = []
    try:
        routes, search_path = await asyncio.to_thread(features, server)
        for concurrency in options.concurrency:
            before = await measure_ceiling(ceiling, options, concurrency)
            sample = replace(sample, next_number=await next_number(workspace))
            scenarios: list[Scenario] = [
                *api_scenarios(sample, search_path=search_path),
                *web_scenarios(sample, routes=routes),
            ]
            results: dict[str, Any] = {}
            for scenario in scenarios:
                if options.only and scenario.name not in options.only:
                    continue
                entry: dict[str, Any] = {"label": scenario.label, "ceiling": scenario.ceiling}
                if scenario.missing:
                    entry["missing"] = scenario.missing
                    results[scenario.name] = entry
                    continue
                total = max(20, int(scenario.requests * options.scale))
                log.info(
                    "%s c=%d: %s (%d requests)", workspace.kind, concurrency, scenario.name, total
                )
                warmup = min(options.warmup, 10) if scenario.writes else options.warmup
                entry.update(
                    await measure(
                        server,
                        scenario.build(total + warmup),
                        total=total,
                        concurrency=concurrency,
                        warmup=warmup,
                        time_limit=options.time_limit,
                        check=scenario.check,
                    )
                )
                results[scenario.name] = entry
            after = await measure_ceiling(ceiling, options, concurrency)
            ceilings = _mean_ceiling(before, after)
            for entry in results.values():
                if "rps" in entry:
                    base = ceilings[entry["ceiling"]]["rps"]
                    entry["ratio"] = round(entry["rps"] / base, 4) if base else None
            rounds.append({"concurrency": concurrency, "ceiling": ceilings, "scenarios": results})
    finally:
        await asyncio.to_thread(server.stop)
    return rounds


async def mail_phase(workspace: store.Workspace, options: Options) -> dict[str, Any]:
    async with Runtime.from_settings(settings_for(workspace)) as runtime:
        threads = await mail.reply_targets(runtime, int(options.mails * 0.4) + 5)
        batch = mail.make_batch(options.mails, threads, seed=int(time.time()))
        ceiling = mail.parse_ceiling(batch)
        warmup = mail.make_batch(runtime.settings.mail_fetch_batch, threads, seed=1)
        in_process = await mail.ingest_in_process(runtime, batch, warmup=warmup)
        imap_batch = mail.make_batch(options.mails, threads, seed=int(time.time()) + 1)
        imap = await mail.ingest_over_imap(runtime, imap_batch)
    out: dict[str, Any] = {
        "parse_ceiling_mails_per_s": round(ceiling, 1),
        "in_process": in_process.summary(),
        "ratio": round(in_process.rate / ceiling, 4) if ceiling else None,
    }
    out["imap"] = imap.summary() if isinstance(imap, mail.IngestResult) else {"missing": imap}
    return out


# --- a whole run ------------------------------------------------------------------------------


def _dataset(kind: str, options: Options, pg: PgServer | None) -> store.Workspace:
    if kind == "sqlite":
        return store.sqlite_dataset(
            options.tickets, root=options.root, rebuild=options.rebuild, analyze=options.analyze
        )
    assert pg is not None
    return store.postgres_dataset(pg, options.tickets, root=options.root, rebuild=options.rebuild)


def _size(workspace: store.Workspace) -> int | None:
    if workspace.kind == "sqlite":
        return (workspace.data_dir / "keepdesk.sqlite3").stat().st_size
    return None


def run_database(
    kind: str, options: Options, ceiling: Server, pg: PgServer | None
) -> dict[str, Any]:
    started = time.monotonic()
    workspace = _dataset(kind, options, pg)
    ready = time.monotonic() - started
    log.info(
        "%s data set of %d tickets %s in %.1f s",
        kind,
        options.tickets,
        "reused" if workspace.reused else "built",
        ready,
    )
    sample = asyncio.run(prepare(workspace))
    rounds = uvloop.run(http_phase(workspace, sample, ceiling, options))
    mail_results = asyncio.run(mail_phase(workspace, options)) if options.mails else {}
    return {
        "database": kind,
        "version": sqlite3.sqlite_version if kind == "sqlite" else pg.version() if pg else "?",
        "server": None if pg is None or kind == "sqlite" else pg.label,
        "dataset": {
            "tickets": options.tickets,
            "reused": workspace.reused,
            "build_seconds": workspace.built_seconds,
            "ready_seconds": round(ready, 1),
            "size_bytes": _size(workspace),
        },
        "rounds": rounds,
        "mail": mail_results,
        "seconds": round(time.monotonic() - started, 1),
    }


def run(options: Options) -> dict[str, Any]:
    started = time.monotonic()
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "options": {
            "tickets": options.tickets,
            "concurrency": list(options.concurrency),
            "processes": options.processes,
            "scale": options.scale,
            "mails": options.mails,
        },
        "databases": {},
    }
    ceiling = start_ceiling(options.log_dir)
    pg: PgServer | None = None
    try:
        for kind in options.databases:
            if kind == "postgresql" and pg is None:
                url = options.pg_url or os.environ.get("KEEPDESK_BENCH_POSTGRES_URL")
                pg = from_url(url) if url else own_cluster(options.root / "postgres")
            results["databases"][kind] = run_database(kind, options, ceiling, pg)
    finally:
        ceiling.stop()
        if pg is not None:
            pg.stop()
    results["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    results["seconds"] = round(time.monotonic() - started, 1)
    return results

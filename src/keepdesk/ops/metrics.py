"""`/metrics` in the Prometheus text format, and the per-request timing and log line.

Request counts and latencies are counted as requests pass; the state of the outbox, the
quarantine, each mailbox's fetching and backups is read from the database at scrape time, so
every process reports the same truth (AC-27), and the background tasks' from the process that
runs them (`Runtime.task_states`).

Under `keepdesk serve --processes N` the processes share one port, so a scrape reaches any of
them: each keeps its numbers in files of its own (prometheus_client's multiprocess mode, set up
by `keepdesk.processes` through `PROMETHEUS_MULTIPROC_DIR`), and a scrape adds up every
process's counts; a gauge shows the value set last, by whichever process answered a scrape.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import MutableMapping
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Receive, Scope, Send

from keepdesk.accounts.dependencies import RuntimeDep
from keepdesk.backup import schedule as backup_schedule
from keepdesk.mail.models import Mailbox, QuarantinedMail, QuarantineStatus
from keepdesk.outbox.models import DeliveryStatus, OutboxMessage
from keepdesk.outbox.service import PENDING

log = logging.getLogger("keepdesk.requests")
# prometheus_client's own variable; it must be set before the package is first imported.
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
router = APIRouter(include_in_schema=False)


class Metrics:
    """One registry per app, so two apps in one process (tests) never mix their numbers."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "keepdesk_http_requests",
            "HTTP requests answered.",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "keepdesk_http_request_duration_seconds",
            "Time to answer a request.",
            ["route", "method"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.outbox = Gauge(
            "keepdesk_outbox_messages",
            "Outbound mail by delivery state.",
            ["status"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.outbox_age = Gauge(
            "keepdesk_outbox_oldest_pending_age_seconds",
            "Age of the oldest mail not yet delivered.",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.quarantine = Gauge(
            "keepdesk_quarantined_mail_held",
            "Quarantined mail waiting for an admin.",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.fetched = Gauge(
            "keepdesk_mailbox_fetched",
            "Mails fetched, per mailbox.",
            ["mailbox"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.quarantined = Gauge(
            "keepdesk_mailbox_quarantined",
            "Mails quarantined, per mailbox.",
            ["mailbox"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.fetch_age = Gauge(
            "keepdesk_mailbox_last_fetch_success_age_seconds",
            "Time since the last successful fetch.",
            ["mailbox"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.fetch_failing = Gauge(
            "keepdesk_mailbox_fetch_failing",
            "1 when the last fetch failed.",
            ["mailbox"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.rescan = Gauge(
            "keepdesk_mailbox_uidvalidity_rescan",
            "1 while a UIDVALIDITY change is being rescanned.",
            ["mailbox"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.backup_age = Gauge(
            "keepdesk_backup_last_success_age_seconds",
            "Time since the last verified backup.",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.drill_age = Gauge(
            "keepdesk_backup_last_drill_age_seconds",
            "Time since the last successful restore drill.",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.backup_problems = Gauge(
            "keepdesk_backup_problems",
            "Backup problems an admin must look at.",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.task_age = Gauge(
            "keepdesk_task_last_success_age_seconds",
            "Time since a background task last succeeded (job lag).",
            ["task"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.task_failures = Gauge(
            "keepdesk_task_failures_in_a_row",
            "Consecutive failures of a background task.",
            ["task"],
            registry=r,
            multiprocess_mode="mostrecent",
        )


def _age(now: datetime, then: datetime | None) -> float:
    return (now - then).total_seconds() if then else float("nan")


def route_template(scope: Scope) -> str:
    """The matched route's path template, prefixes included: `/api/v1/tickets/{number}`.

    FastAPI includes routers lazily, so `scope["route"]` is the route as its router declares it
    (`/tickets/{number}`), without the prefix it was included under; that prefix is the part of
    the request path before the route's own pattern matches.
    """
    route = scope.get("route")
    template = getattr(route, "path", None)
    if not isinstance(template, str):
        return "unmatched"
    pattern = getattr(route, "path_regex", None)
    path = str(scope.get("path", ""))
    if pattern is None or pattern.match(path):
        return template
    for i, char in enumerate(path):
        if char == "/" and i > 0 and pattern.match(path[i:]):
            return path[:i] + template
    return template


class RequestMetrics:
    """Times each request, counts it by route template, and logs one line for it."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            elapsed = time.perf_counter() - started
            route = route_template(scope)
            method = scope.get("method", "")
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route, method).observe(elapsed)
            log.info(
                "%s %s %d %.1fms",
                method,
                route,
                status,
                elapsed * 1000,
                extra={
                    "request_id": scope.get("state", {}).get("request_id"),
                    "route": route,
                    "method": method,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                },
            )


@router.get("/metrics")
async def metrics_endpoint(request: Request, runtime: RuntimeDep) -> Response:
    metrics: Metrics = request.app.state.metrics
    now = runtime.clock.now()
    async with runtime.db.session() as session:
        rows = await session.execute(
            select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)
        )
        by_status = {status: int(n) for status, n in rows}
        for status in DeliveryStatus:
            metrics.outbox.labels(status.value).set(by_status.get(status, 0))
        oldest = await session.scalar(
            select(func.min(OutboxMessage.created_at)).where(OutboxMessage.status.in_(PENDING))
        )
        metrics.outbox_age.set(_age(now, oldest) if oldest else 0)
        held = await session.scalar(
            select(func.count())
            .select_from(QuarantinedMail)
            .where(QuarantinedMail.status == QuarantineStatus.held)
        )
        metrics.quarantine.set(held or 0)
        for box in (await session.scalars(select(Mailbox))).all():
            metrics.fetched.labels(box.address).set(box.fetched_count)
            metrics.quarantined.labels(box.address).set(box.quarantined_count)
            metrics.fetch_age.labels(box.address).set(_age(now, box.last_success_at))
            failing = box.last_error_at is not None and (
                box.last_success_at is None or box.last_error_at > box.last_success_at
            )
            metrics.fetch_failing.labels(box.address).set(1 if failing else 0)
            metrics.rescan.labels(box.address).set(1 if box.rescan_required else 0)
        backups = await backup_schedule.status(session, runtime=runtime, now=now)
    metrics.backup_age.set(_age(now, backups.last_ok_at))
    metrics.drill_age.set(_age(now, backups.last_drill_at))
    metrics.backup_problems.set(len(backups.problems))
    for name, state in runtime.task_states().items():
        metrics.task_age.labels(name).set(_age(now, state.last_success_at))
        metrics.task_failures.labels(name).set(state.failures_in_a_row)
    return Response(generate_latest(_registry(metrics)), media_type=CONTENT_TYPE_LATEST)


def _registry(metrics: Metrics) -> CollectorRegistry:
    """This process's registry, or under `serve --processes N` every process's numbers."""
    if not os.environ.get(MULTIPROCESS_DIR):
        return metrics.registry
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry

"""The benchmark data set: years of a helpdesk's history, written straight into the schema.

The schema comes from the migrations (`keepdesk.schema.upgrade`); the rows then go in by bulk
load (see sinks.py), not through the API, which would take hours at a million tickets. The
shape follows a real team's history: 20 agents in 5 teams, 20,000 customers (a few of them
write a lot), tickets over five years with more of them recently, most closed, a small open
backlog, about four messages per ticket, tags, some attachments with real blobs, the event
history, and the mail headers that thread replies.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bench import people
from bench.sinks import Row, Sink
from bench.text import DOMAINS, TAGS, TEAMS, TextMaker
from keepdesk.accounts.secrets import token_hash
from keepdesk.blobs import BlobStore
from keepdesk.outbox import ids
from keepdesk.secretbox import seal

log = logging.getLogger("bench.dataset")

# Bump when the data set's shape changes: cached data sets of another version are rebuilt.
BUILDER_VERSION = 2
SEED = 20_061
YEARS = 5
# Every LONG_EVERY-th ticket has a long thread, for the ticket page scenario.
LONG_EVERY = 500
LONG_MESSAGES = (20, 30)
FLUSH_ROWS = 50_000

TABLES = (
    "teams",
    "agents",
    "team_memberships",
    "contacts",
    "api_tokens",
    "mailboxes",
    "tags",
    "tickets",
    "ticket_tags",
    "messages",
    "attachments",
    "ticket_events",
    "outbox",
    "mail_messages",
    "counters",
)

TICKET_COLUMNS = [
    "id",
    "number",
    "subject",
    "status",
    "priority",
    "channel",
    "requester_id",
    "team_id",
    "assignee_id",
    "mailbox_id",
    "follow_up_of_id",
    "created_at",
    "updated_at",
    "first_response_at",
    "resolved_at",
    "closed_at",
    "version",
]
MESSAGE_COLUMNS = [
    "id",
    "ticket_id",
    "kind",
    "author_agent_id",
    "author_contact_id",
    "body_text",
    "body_html",
    "created_at",
]
ATTACHMENT_COLUMNS = [
    "id",
    "message_id",
    "ticket_id",
    "blob_key",
    "filename",
    "content_type",
    "size",
    "content_id",
    "is_inline",
    "created_at",
]
EVENT_COLUMNS = [
    "id",
    "ticket_id",
    "created_at",
    "actor_agent_id",
    "actor_contact_id",
    "action",
    "field",
    "before",
    "after",
]
OUTBOX_COLUMNS = [
    "id",
    "kind",
    "mailbox_id",
    "ticket_id",
    "ticket_message_id",
    "message_id_header",
    "recipients",
    "blob_key",
    "envelope_from",
    "status",
    "attempts",
    "next_attempt_at",
    "last_error",
    "last_smtp_code",
    "claimed_by",
    "claimed_until",
    "rate_key",
    "created_at",
    "sent_at",
]
MAIL_COLUMNS = [
    "id",
    "message_id",
    "ticket_id",
    "mailbox_id",
    "direction",
    "header_message_id",
    "in_reply_to",
    "references",
    "from_address",
    "from_name",
    "sender_verified",
    "thread_reason",
    "automation",
    "raw_blob_key",
    "facts",
]

_STATUS_OLD = (("closed", 0.935), ("resolved", 0.03), ("pending", 0.015), ("open", 0.02))
_STATUS_RECENT = (
    ("new", 0.15),
    ("open", 0.35),
    ("pending", 0.2),
    ("resolved", 0.2),
    ("closed", 0.1),
)
_PRIORITIES = (("low", 0.2), ("normal", 0.6), ("high", 0.15), ("urgent", 0.05))
_CHANNELS = (("email", 0.75), ("web", 0.15), ("api", 0.07), ("chat", 0.03))
_TEAM_WEIGHTS = (0.35, 0.25, 0.2, 0.12, 0.08)
_ATTACHMENT_TYPES = (
    ("screenshot.png", "image/png", 40_000, 400_000),
    ("invoice.pdf", "application/pdf", 30_000, 250_000),
    ("export.csv", "text/csv", 2_000, 80_000),
    ("error-log.txt", "text/plain", 1_000, 30_000),
    (
        "contract.docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        20_000,
        120_000,
    ),
)


@dataclass(frozen=True)
class Facts:
    """What the scenarios need to know about a data set."""

    tickets: int
    anchor: str
    long_tickets: list[int]
    agent_teams: list[int]
    open_team: int

    def to_json(self) -> dict[str, Any]:
        return {
            "tickets": self.tickets,
            "anchor": self.anchor,
            "long_tickets": self.long_tickets,
            "agent_teams": self.agent_teams,
            "open_team": self.open_team,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Facts:
        return cls(
            tickets=int(data["tickets"]),
            anchor=str(data["anchor"]),
            long_tickets=[int(n) for n in data["long_tickets"]],
            agent_teams=[int(t) for t in data["agent_teams"]],
            open_team=int(data["open_team"]),
        )


def _picker(weighted: tuple[tuple[str, float], ...]) -> Callable[[float], str]:
    bounds: list[tuple[float, str]] = []
    total = 0.0
    for value, weight in weighted:
        total += weight
        bounds.append((total, value))

    def pick(u: float) -> str:
        u *= total
        for bound, value in bounds:
            if u < bound:
                return value
        return bounds[-1][1]

    return pick


class _Buffers:
    """Rows per table, written to the sink in big batches, in foreign-key order."""

    ORDER = (
        "tickets",
        "ticket_tags",
        "messages",
        "attachments",
        "ticket_events",
        "outbox",
        "mail_messages",
    )

    def __init__(self, sink: Sink, columns: dict[str, list[str]]) -> None:
        self.sink = sink
        self.columns = columns
        self.rows: dict[str, list[Row]] = {name: [] for name in self.ORDER}
        self.written = 0

    def pending(self) -> int:
        return sum(len(r) for r in self.rows.values())

    def flush(self) -> None:
        for name in self.ORDER:
            rows = self.rows[name]
            if rows:
                self.sink.insert(name, self.columns[name], rows)
                self.written += len(rows)
                rows.clear()


def _json(value: Any, dumps: Callable[[Any], str]) -> str | None:
    # Most event values are short strings, ints or pre-made JSON: skip json.dumps for those.
    if value is None:
        return None
    if isinstance(value, str):
        return value if value.startswith("{") else f'"{value}"'
    if isinstance(value, int):
        return str(value)
    return dumps(value)


def _list(values: list[str]) -> str:
    # Message-IDs and addresses we made ourselves: no quotes or backslashes to escape.
    return "[" + ",".join(f'"{v}"' for v in values) + "]"


def blob_pool(blobs: BlobStore, rng: random.Random) -> list[tuple[str, str, str, int]]:
    """A few dozen real files in the blob store: (key, filename, content type, size)."""
    pool = []
    for i in range(48):
        name, ctype, low, high = _ATTACHMENT_TYPES[i % len(_ATTACHMENT_TYPES)]
        size = rng.randint(low, high)
        data = f"keepdesk bench attachment {i}\n".encode() + rng.randbytes(size)
        pool.append((blobs.put(data), name, ctype, len(data)))
    return pool


def build(sink: Sink, *, tickets: int, blobs: BlobStore, anchor: datetime) -> Facts:
    """Write a data set of `tickets` tickets into an empty, migrated database."""
    rng = random.Random(SEED)  # noqa: S311 - made-up data, no secrets
    text = TextMaker(rng)
    secret = people.SECRET_KEY.encode()
    ts, flag, dumps = sink.ts, sink.flag, sink.json
    yes, no = flag(True), flag(False)
    started = time.monotonic()
    sink.start(TABLES)
    # Naive UTC from here on: the sinks write it without converting every value.
    anchor = anchor.astimezone(UTC).replace(tzinfo=None)

    # --- the small tables --------------------------------------------------------------------
    founded = anchor - timedelta(days=365 * YEARS + 30)
    sink.insert(
        "teams",
        ["id", "name", "created_at"],
        [(i, TEAMS[i - 1], ts(founded)) for i in range(1, people.TEAMS + 1)],
    )
    agents: list[Row] = []
    for a in range(1, people.AGENTS + 1):
        first, family = rng.choice(("Alex", "Sam", "Kim", "Robin", "Jo")), f"Agent{a:02d}"
        role = "admin" if a <= 2 else "agent"
        agents.append(
            (
                a,
                f"agent{a}@bench.keepdesk.test",
                f"{first} {family}",
                role,
                None,
                flag(True),
                ts(founded),
                None,
            )
        )
    sink.insert(
        "agents",
        [
            "id",
            "email",
            "name",
            "role",
            "password_hash",
            "is_active",
            "created_at",
            "password_changed_at",
        ],
        agents,
    )
    sink.insert(
        "team_memberships",
        ["team_id", "agent_id"],
        [(t, a) for a in range(1, people.AGENTS + 1) for t in people.teams_of(a)],
    )
    contacts: list[tuple[str, str]] = []
    contact_rows: list[Row] = []
    for c in range(1, people.CONTACTS + 1):
        email, name = text.person(c)
        contacts.append((email, name))
        contact_rows.append(
            (
                c,
                email,
                name,
                email.rpartition("@")[2].split(".")[0].title(),
                ts(founded + timedelta(days=rng.uniform(0, 365 * YEARS))),
            )
        )
    sink.insert("contacts", ["id", "email", "name", "organisation", "created_at"], contact_rows)
    sink.insert(
        "api_tokens",
        [
            "id",
            "agent_id",
            "name",
            "token_hash",
            "prefix",
            "created_at",
            "last_used_at",
            "revoked_at",
        ],
        [
            (
                i,
                who.agent_id,
                "bench",
                token_hash(who.api_token),
                who.api_token[:10],
                ts(anchor),
                None,
                None,
            )
            for i, who in enumerate((people.ADMIN, people.AGENT), start=1)
        ],
    )
    # Never fetched (the benchmark runs without workers); the IMAP scenario adds its own.
    sink.insert(
        "mailboxes",
        [
            "id",
            "address",
            "display_name",
            "team_id",
            "imap_url_sealed",
            "smtp_url_sealed",
            "processed_action",
            "processed_folder",
            "quarantine_folder",
            "allow_plaintext",
            "auto_ack",
            "is_active",
            "created_at",
            "uidvalidity",
            "last_uid",
            "rescan_required",
            "last_fetch_at",
            "last_success_at",
            "last_error",
            "last_error_at",
            "alert",
            "fetched_count",
            "quarantined_count",
        ],
        [
            (
                1,
                people.MAILBOX_ADDRESS,
                "Support",
                1,
                seal(secret, "imap://support:unused@127.0.0.1:9/INBOX"),
                seal(secret, "smtp://127.0.0.1:9"),
                "move",
                "keepdesk/processed",
                "keepdesk/quarantine",
                flag(False),
                flag(False),
                flag(True),
                ts(founded),
                None,
                0,
                flag(False),
                None,
                None,
                None,
                None,
                None,
                0,
                0,
            )
        ],
    )
    sink.insert("tags", ["id", "name"], [(i, name) for i, name in enumerate(TAGS, start=1)])

    # --- tickets and everything hanging off them --------------------------------------------
    pool = blob_pool(blobs, rng)
    customer_bodies, reply_bodies, note_bodies = text.pool(500), text.pool(450), text.pool(150)
    columns = {
        "tickets": TICKET_COLUMNS,
        "ticket_tags": ["ticket_id", "tag_id"],
        "messages": MESSAGE_COLUMNS,
        "attachments": ATTACHMENT_COLUMNS,
        "ticket_events": EVENT_COLUMNS,
        "outbox": OUTBOX_COLUMNS,
        "mail_messages": MAIL_COLUMNS,
    }
    buffers = _Buffers(sink, columns)
    out = buffers.rows
    t_rows, tag_rows, m_rows, a_rows = (
        out["tickets"],
        out["ticket_tags"],
        out["messages"],
        (out["attachments"]),
    )
    e_rows, o_rows, mm_rows = out["ticket_events"], out["outbox"], out["mail_messages"]
    members = {t: people.members_of(t) for t in range(1, people.TEAMS + 1)}
    all_agents = list(range(3, people.AGENTS + 1))
    status_old, status_recent = _picker(_STATUS_OLD), _picker(_STATUS_RECENT)
    pick_priority, pick_channel = _picker(_PRIORITIES), _picker(_CHANNELS)
    team_bounds = [sum(_TEAM_WEIGHTS[: i + 1]) for i in range(len(_TEAM_WEIGHTS))]
    span = timedelta(days=365 * YEARS).total_seconds()
    start = anchor - timedelta(days=365 * YEARS)
    recent = anchor - timedelta(days=30)
    tag_weights = [1 / (i + 1) for i in range(len(TAGS))]
    tag_ids = list(range(1, len(TAGS) + 1))
    message_id = event_id = attachment_id = outbox_id = mail_id = 0
    random_, randint, choice, expo = rng.random, rng.randint, rng.choice, rng.expovariate
    long_tickets: list[int] = []
    first_number = 1

    t_events: list[Row] = []

    def event(
        at_: datetime,
        agent: int | None,
        contact: int | None,
        action: str,
        field: str | None,
        before: Any,
        after: Any,
    ) -> None:
        """One history row of the ticket being built (`t`, rows in `t_events`)."""
        nonlocal event_id
        event_id += 1
        t_events.append(
            (
                event_id,
                t,
                ts(at_),
                agent,
                contact,
                action,
                field,
                _json(before, dumps),
                _json(after, dumps),
            )
        )

    for t in range(1, tickets + 1):
        number = first_number + t - 1
        # Density grows linearly over the years: a growing business.
        created = start + timedelta(seconds=span * math.sqrt((t - 0.5) / tickets))
        status = status_recent(random_()) if created > recent else status_old(random_())
        u = random_()
        team: int | None = next(i + 1 for i, b in enumerate(team_bounds) if u < b or i == 4)
        if random_() < 0.03:
            team = None
        channel = pick_channel(random_())
        requester = int(people.CONTACTS * random_() ** 2) + 1
        r_email, r_name = contacts[requester - 1]
        if t % LONG_EVERY == LONG_EVERY // 2:
            count = randint(*LONG_MESSAGES)
            long_tickets.append(number)
        elif status == "new":
            count = 1 + (random_() < 0.2)
        else:
            count = 1 + min(int(expo(1 / 3.5)), 40)
        assignee: int | None = None
        if status != "new" or random_() < 0.2:
            assignee = choice(members[team]) if team else choice(all_agents)
        # The conversation: customer first, then mostly alternating, some internal notes.
        room = (anchor - created).total_seconds()
        duration = min(rng.lognormvariate(math.log(20 * 3600), 1.2) * (count / 4), room * 0.9)
        step = duration / max(count, 1)
        at = created
        kinds: list[str] = []
        for k in range(count):
            if k == 0 or status == "new":
                kind = "customer"
            elif random_() < 0.15:
                kind = "note"
            else:
                previous = next((x for x in reversed(kinds) if x != "note"), "customer")
                kind = "reply" if previous == "customer" else "customer"
            kinds.append(kind)
        t_events.clear()

        ticket_tags = sorted(set(rng.choices(tag_ids, tag_weights, k=choice((0, 0, 1, 1, 2, 3)))))
        subject = text.subject()
        event(
            created,
            assignee if channel == "api" else None,
            None if channel == "api" else requester,
            "created",
            None,
            None,
            {
                "subject": subject,
                "status": "new",
                "priority": "normal",
                "channel": channel,
                "team_id": team,
                "tags": [TAGS[i - 1] for i in ticket_tags],
            },
        )
        first_response: datetime | None = None
        last_inbound: str | None = None
        references: list[str] = []
        status_now = "new"
        for k, kind in enumerate(kinds):
            message_id += 1
            if k:
                at = at + timedelta(seconds=step * rng.uniform(0.3, 1.7))
                if at > anchor:
                    at = anchor - timedelta(seconds=60 * (count - k))
            author_agent = author_contact = None
            if kind == "customer":
                author_contact = requester
                body, html_body = choice(customer_bodies)
                html = html_body if channel == "email" and random_() < 0.5 else None
            else:
                author_agent = assignee or choice(members[team] if team else all_agents)
                body = choice(reply_bodies if kind == "reply" else note_bodies)[0]
                html = None
            at_s = ts(at)
            m_rows.append((message_id, t, kind, author_agent, author_contact, body, html, at_s))
            event_id += 1
            t_events.append(
                (
                    event_id,
                    t,
                    at_s,
                    author_agent,
                    author_contact,
                    "message_added",
                    "message",
                    None,
                    f'{{"id":{message_id},"kind":"{kind}"}}',
                )
            )
            if kind == "reply":
                if first_response is None:
                    first_response = at
                if status_now == "new":
                    event(at, author_agent, None, "changed", "status", "new", "open")
                    status_now = "open"
            if (kind == "customer" and random_() < 0.04) or (kind == "reply" and random_() < 0.01):
                key, filename, ctype, size = choice(pool)
                attachment_id += 1
                a_rows.append(
                    (attachment_id, message_id, t, key, filename, ctype, size, None, no, at_s)
                )
            if kind == "reply":
                outbox_id += 1
                header = ids.issue(
                    secret, number=number, kind="reply", domain="bench.keepdesk.test"
                )
                o_rows.append(
                    (
                        outbox_id,
                        "reply",
                        1 if channel == "email" else None,
                        t,
                        message_id,
                        header,
                        f'["{r_email}"]',
                        None,
                        people.MAILBOX_ADDRESS,
                        "sent",
                        1,
                        at_s,
                        None,
                        250,
                        None,
                        None,
                        None,
                        at_s,
                        ts(at + timedelta(seconds=2)),
                    )
                )
                if channel == "email":
                    mail_id += 1
                    mm_rows.append(
                        (
                            mail_id,
                            message_id,
                            t,
                            1,
                            "outbound",
                            header,
                            last_inbound,
                            _list(references[-5:]),
                            people.MAILBOX_ADDRESS,
                            "Support",
                            yes,
                            "",
                            None,
                            None,
                            "{}",
                        )
                    )
                    references.append(header)
            elif kind == "customer" and channel == "email":
                mail_id += 1
                domain = r_email.rpartition("@")[2]
                header = f"<{hashlib.sha1(f'{t}.{k}'.encode()).hexdigest()[:24]}@{domain}>"  # noqa: S324
                mm_rows.append(
                    (
                        mail_id,
                        message_id,
                        t,
                        1,
                        "inbound",
                        header,
                        references[-1] if references else None,
                        _list(references[-5:]),
                        r_email,
                        r_name,
                        yes,
                        "it refers to no existing ticket, so it opened a new one" if k == 0 else "",
                        None,
                        None,
                        "{}",
                    )
                )
                references.append(header)
                last_inbound = header
        last = at
        resolved_at = closed_at = None
        if status != "new" and status_now == "new":
            event(last, assignee, None, "changed", "status", "new", "open")
        if assignee is not None and status != "new":
            event(
                created + (last - created) / 3,
                assignee,
                None,
                "changed",
                "assignee_id",
                None,
                assignee,
            )
        if status == "pending":
            event(last, assignee, None, "changed", "status", "open", "pending")
        if status in ("resolved", "closed"):
            resolved_at = min(last + timedelta(hours=rng.uniform(0.1, 30)), anchor)
            event(resolved_at, assignee, None, "changed", "status", "open", "resolved")
            last = resolved_at
        if status == "closed":
            closed_at = min(last + timedelta(days=4), anchor)
            event(closed_at, None, None, "changed", "status", "resolved", "closed")
            last = closed_at
        t_rows.append(
            (
                t,
                number,
                subject,
                status,
                pick_priority(random_()),
                channel,
                requester,
                team,
                assignee,
                1 if channel == "email" else None,
                None,
                ts(created),
                ts(last),
                None if first_response is None else ts(first_response),
                None if resolved_at is None else ts(resolved_at),
                None if closed_at is None else ts(closed_at),
                len(t_events),
            )
        )
        e_rows.extend(t_events)
        tag_rows.extend((t, tag) for tag in ticket_tags)
        if buffers.pending() >= FLUSH_ROWS:
            buffers.flush()
        if t % 100_000 == 0:
            log.info("%d tickets, %d rows, %.0f s", t, buffers.written, time.monotonic() - started)
    buffers.flush()
    sink.insert("counters", ["name", "value"], [("ticket", first_number + tickets - 1)])
    log.info("loaded %d rows in %.1f s; indexing", buffers.written, time.monotonic() - started)
    sink.finish()
    log.info("data set of %d tickets built in %.1f s", tickets, time.monotonic() - started)
    return Facts(
        tickets=tickets,
        anchor=anchor.replace(tzinfo=UTC).isoformat(),
        long_tickets=long_tickets,
        agent_teams=list(people.teams_of(people.AGENT_ID)),
        open_team=1,
    )


def anchor_now() -> datetime:
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


__all__ = ["DOMAINS", "Facts", "anchor_now", "build"]

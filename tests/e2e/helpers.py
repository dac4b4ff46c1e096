"""Making tickets for browser tests through the services, as mail or an agent would; and
waiting for htmx to finish a swap."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from playwright.sync_api import Page

from keepdesk.accounts import auth
from keepdesk.accounts import service as accounts
from keepdesk.runtime import Runtime
from keepdesk.tickets import service as tickets
from keepdesk.tickets.models import Channel, MessageKind, Priority
from keepdesk.tickets.policy import TicketPolicy


async def customer_ticket(
    rt: Runtime,
    *,
    subject: str,
    body: str,
    team_id: int | None,
    email: str = "carol@customer.test",
    name: str = "Carol Customer",
    body_html: str | None = None,
) -> int:
    """A request that arrived by itself (mail): new, unassigned, in the team's queue."""
    async with rt.db.session(write=True) as session:
        contact = await accounts.find_or_create_contact(
            session, email=email, name=name, now=rt.clock.now()
        )
        ticket, _ = await tickets.open_customer_ticket(
            session,
            requester=contact,
            subject=subject,
            body=body,
            body_html=body_html,
            now=rt.clock.now(),
            blobs=rt.blobs,
            policy=TicketPolicy.from_runtime(rt),
            channel=Channel.email,
            team_id=team_id,
        )
        number = ticket.number
        await session.commit()
    return number


async def agent_message(
    rt: Runtime, *, agent_id: int, number: int, body: str, kind: MessageKind
) -> None:
    async with rt.db.session(write=True) as session:
        actor = await auth.actor_for_agent(session, agent_id)
        await tickets.add_agent_message(
            session,
            actor=actor,
            number=number,
            kind=kind,
            body=body,
            now=rt.clock.now(),
            blobs=rt.blobs,
            policy=TicketPolicy.from_runtime(rt),
        )
        await session.commit()


async def change(
    rt: Runtime,
    *,
    agent_id: int,
    number: int,
    assignee_id: int | None = None,
    priority: Priority | None = None,
    tags: Sequence[str] | None = None,
) -> None:
    async with rt.db.session(write=True) as session:
        actor = await auth.actor_for_agent(session, agent_id)
        await tickets.update_ticket(
            session,
            actor=actor,
            number=number,
            changes=tickets.TicketChanges(
                assignee_id=assignee_id if assignee_id is not None else tickets.UNSET,
                priority=priority,
                tags=tags,
            ),
            now=rt.clock.now(),
        )
        await session.commit()


_AWAIT_SETTLE = """id => {
  window.__keepdeskSettled = new Promise(resolve => {
    document.addEventListener("htmx:afterSettle", function settled(event) {
      if (event.target instanceof Element && event.target.id === id) {
        document.removeEventListener("htmx:afterSettle", settled);
        resolve(true);
      }
    });
  });
}"""


@contextmanager
def htmx_swap(page: Page, target_id: str) -> Iterator[None]:
    """Wait, after the block, until htmx has swapped #`target_id` and settled it: only then are
    the new elements' own triggers bound. A test acts within milliseconds, and a change made
    on a select htmx had not bound yet was lost (one run in three); a person is never that
    quick."""
    page.evaluate(_AWAIT_SETTLE, target_id)
    yield
    page.evaluate("() => window.__keepdeskSettled")

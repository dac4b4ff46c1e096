"""Rendering pages and their HTMX fragments from one template per page.

A page template's `{% block %}`s are its fragments: the same URL answers a full page, or only the
named block when the request comes from HTMX (`HX-Request`), and says so with `Vary: HX-Request`.
Templates come from an explicit list of folders, each under its own prefix (`web/`, `tickets/`),
with autoescaping on everywhere. Data is only ever passed *into* templates: nothing a customer
wrote is compiled as one (RELIABILITY.md AC-18).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, PrefixLoader, StrictUndefined

from keepdesk.web import ui
from keepdesk.web.nav import SIGN_IN
from keepdesk.web.redirects import safe_next

WEB_DIR = Path(__file__).parent
STATIC_DIR = WEB_DIR / "static"
TEMPLATE_DIR = WEB_DIR / "templates"
STATIC_PREFIX = "/static"


def is_htmx(request: Request) -> bool:
    """An HTMX swap, as opposed to a page load (a history restore wants the whole page)."""
    headers = request.headers
    return headers.get("hx-request") == "true" and headers.get("hx-history-restore-request") != (
        "true"
    )


def filesize(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


class Pages:
    """The template environment of the app, built once by `create_app`."""

    def __init__(self, folders: Mapping[str, Path]) -> None:
        self.env = _environment(tuple(sorted(folders.items())))

    def render_block(self, name: str, block: str, context: Mapping[str, Any]) -> str:
        template = self.env.get_template(name)
        return "".join(template.blocks[block](template.new_context(dict(context))))

    def render(
        self,
        request: Request,
        name: str,
        context: Mapping[str, Any],
        *,
        fragment: str | Sequence[str] | None = None,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> HTMLResponse:
        """The whole page, or only `fragment` (a block of the page, or several one after the
        other: the swapped one, then out-of-band ones) for an HTMX request."""
        full = {**page_context(request), **context}
        if fragment is not None and is_htmx(request):
            blocks = [fragment] if isinstance(fragment, str) else fragment
            body = "".join(self.render_block(name, block, full) for block in blocks)
        else:
            body = self.env.get_template(name).render(full)
        response = HTMLResponse(body, status_code=status_code, headers=headers)
        response.headers["Vary"] = "HX-Request"
        # Pages carry customer data: keep them out of shared and disk caches.
        response.headers["Cache-Control"] = "no-store"
        return response


@functools.cache
def _static_version(name: str) -> str:
    path = (STATIC_DIR / name).resolve()
    if not path.is_relative_to(STATIC_DIR.resolve()) or not path.is_file():
        raise FileNotFoundError(f"no static file {name}")
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def static_url(name: str) -> str:
    """`/static/<name>?v=<hash>`: cacheable, and a changed file gets a new URL."""
    return f"{STATIC_PREFIX}/{name}?v={_static_version(name)}"


@functools.cache
def _environment(folders: tuple[tuple[str, Path], ...]) -> Environment:
    # One per set of folders, shared by every app built in this process (tests build many):
    # templates are compiled once. Nothing in it changes after it is built.
    env = Environment(
        loader=PrefixLoader({prefix: FileSystemLoader(path) for prefix, path in folders}),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(filesize=filesize, ago=ui.ago, timestamp=ui.timestamp)
    env.globals["static"] = static_url
    # Shared macros as a global module: a block rendered on its own cannot see a template-level
    # `{% import %}`, but it sees globals.
    env.globals["ui"] = ui.UI(env.get_template("web/_macros.html").module)
    return env


def page_context(request: Request) -> dict[str, Any]:
    """What every template may use: the request, and what the sign-in layer put in
    `request.state.page` (the agent, the CSRF token, the navigation)."""
    extra: dict[str, Any] = getattr(request.state, "page", None) or {}
    return {"request": request, "me": None, "csrf_token": "", "nav": None, **extra}


async def get_pages(request: Request) -> Pages:
    pages: Pages = request.app.state.pages
    return pages


PagesDep = Annotated[Pages, Depends(get_pages)]


_TITLES = {
    400: "Bad request",
    401: "Please sign in",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed",
    409: "Changed in the meantime",
    422: "Not accepted",
    429: "Too many attempts",
    500: "Something went wrong",
    503: "Unavailable for a moment",
}


def _sign_in_url(request: Request) -> str:
    if is_htmx(request):
        # The page the agent is on, not the fragment's URL.
        current = urlsplit(request.headers.get("hx-current-url", ""))
        here = current.path + (f"?{current.query}" if current.query else "")
    else:
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    here = safe_next(here, default="")
    return f"{SIGN_IN}?next={quote(here, safe='')}" if here and here != "/" else SIGN_IN


def error_response(
    request: Request,
    *,
    status: int,
    code: str,
    message: str,
    request_id: str,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """An error as the layout's page, as a notice into `#flash` for HTMX, or, for a missing
    sign-in, the way to the sign-in page (coming back here afterwards)."""
    if status == 401:
        url = _sign_in_url(request)
        if is_htmx(request):
            return Response(status_code=401, headers={"HX-Redirect": url})
        if request.method in ("GET", "HEAD"):
            return RedirectResponse(url, status_code=303)
    pages: Pages | None = getattr(request.app.state, "pages", None)
    context = {
        "status": status,
        "code": code,
        "title": _TITLES.get(status, "Error"),
        "message": message,
        "request_id": request_id,
    }
    if pages is None:
        return HTMLResponse(f"<h1>{status}</h1>", status_code=status, headers=headers)
    response = pages.render(
        request, "web/error.html", context, fragment="error", status_code=status, headers=headers
    )
    if is_htmx(request):
        response.headers["HX-Retarget"] = "#flash"
        response.headers["HX-Reswap"] = "innerHTML"
    return response

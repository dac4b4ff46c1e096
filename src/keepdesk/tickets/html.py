"""Sanitising HTML from outside (mail, API) with an allow-list before it is ever stored.

What survives is inert: no script, no event handlers, no forms, no frames, no `hx-*` or other
unknown attributes, and only http(s), mailto, cid and data URLs. Remote images are still in the
HTML; the ticket page blocks them with its CSP until an agent opts in.
"""

from __future__ import annotations

import nh3

_TAGS = {
    "a",
    "abbr",
    "b",
    "blockquote",
    "br",
    "caption",
    "center",
    "code",
    "col",
    "colgroup",
    "dd",
    "del",
    "div",
    "dl",
    "dt",
    "em",
    "font",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "i",
    "img",
    "ins",
    "kbd",
    "li",
    "ol",
    "p",
    "pre",
    "q",
    "s",
    "small",
    "span",
    "strike",
    "strong",
    "sub",
    "sup",
    "table",
    "tbody",
    "td",
    "tfoot",
    "th",
    "thead",
    "tr",
    "tt",
    "u",
    "ul",
}
_COMMON = {"align", "dir", "lang", "style", "title", "class"}
_ATTRIBUTES = {
    "*": _COMMON,
    "a": {"href", "name"},
    "img": {"src", "alt", "width", "height"},
    "td": {"colspan", "rowspan", "valign", "width", "height", "bgcolor"},
    "th": {"colspan", "rowspan", "valign", "width", "height", "bgcolor"},
    "table": {"border", "cellpadding", "cellspacing", "width", "bgcolor"},
    "font": {"color", "face", "size"},
    "col": {"span", "width"},
    "ol": {"start", "type"},
}
_STYLE_PROPERTIES = {
    "background-color",
    "border",
    "border-bottom",
    "border-collapse",
    "border-left",
    "border-right",
    "border-top",
    "color",
    "font-family",
    "font-size",
    "font-style",
    "font-weight",
    "height",
    "line-height",
    "margin",
    "margin-bottom",
    "margin-left",
    "margin-right",
    "margin-top",
    "padding",
    "padding-bottom",
    "padding-left",
    "padding-right",
    "padding-top",
    "text-align",
    "text-decoration",
    "vertical-align",
    "white-space",
    "width",
}


def _only_safe_urls(tag: str, attribute: str, value: str) -> str | None:
    # data: and cid: are for images shown in place; as a link target, data:text/html is a page
    # from nowhere (corpus 501).
    if attribute == "href" and value.strip().lower().startswith(("data:", "cid:")):
        return None
    return value


def sanitize_html(html: str) -> str:
    return nh3.clean(
        html,
        tags=_TAGS,
        clean_content_tags={"script", "style", "title", "noscript", "template"},
        attributes=_ATTRIBUTES,
        url_schemes={"http", "https", "mailto", "cid", "data"},
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
        filter_style_properties=_STYLE_PROPERTIES,
        attribute_filter=_only_safe_urls,
    )

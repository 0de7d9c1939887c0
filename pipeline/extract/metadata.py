"""Title, author and publication date of a parsed page (read only for documents the filters keep).

`page_metadata(page) -> {"title": str ("" if none), "date": "YYYY-MM-DD" | None, "author": str | None}`.
Title and author come from <meta> (property, name or itemprop; the most specific key first), then <h1>
and <title>, and rel=author; the date from htmldate on trafilatura's lxml tree (trafilatura's own
metadata pass would double its cost).
"""

from __future__ import annotations

from htmldate import find_date

from pipeline.extract.extractors import ParsedPage

# <meta> keys (property, name or itemprop, lowercased) that carry each field, most specific first.
TITLE_KEYS = ("og:title", "twitter:title", "headline")
AUTHOR_KEYS = ("author", "article:author", "dc.creator", "byl")


def page_metadata(page: ParsedPage) -> dict:
    """Title and author from <meta>, <h1>, <title> and rel=author; publication date (YYYY-MM-DD) by htmldate.

    htmldate gets trafilatura's lxml tree, not the markup: it would parse it again, and it takes a string
    that starts with "http" and has no space for a URL to download.
    """
    tree = page.tree
    meta: dict[str, str] = {}
    for element in tree.document.query_selector_all("meta[content]"):
        key = (element.getattr("property") or element.getattr("name") or element.getattr("itemprop") or "").lower()
        meta.setdefault(key, " ".join(element.getattr("content").split()))
    h1 = tree.body.query_selector("h1") if tree.body else None
    by_line = tree.document.query_selector("[rel=author]")
    title = next((meta[k] for k in TITLE_KEYS if meta.get(k)), "") or (h1 and " ".join(h1.text.split())) or tree.title
    author = next((meta[k] for k in AUTHOR_KEYS if meta.get(k)), "") or (by_line and " ".join(by_line.text.split()))
    try:
        date = find_date(page.dom, original_date=True, outputformat="%Y-%m-%d") if page.dom is not None else None
    except Exception:  # noqa: BLE001 - a page whose date cannot be parsed is still a document
        date = None
    return {"title": title or "", "date": date, "author": author or None}

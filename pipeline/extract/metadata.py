"""Title, author and publication date of a parsed page, and the title line a document's text starts with.

- `read_meta(page) -> {key: content}`: the page's <meta> tags, read once for the two below.
- `page_title(page, meta) -> str` ("" if none): <meta> og:title, twitter:title or headline, else the first <h1>,
  else <title>; the site's name is cut off (the longest part between " | ", " - ", " – ", " — ", " :: ",
  " » " or " · " separators is kept). Everything here reads trafilatura's lxml tree.
- `with_title(title, text) -> str`: the document text: the title on the first line, unless the text
  already opens with it (the headline is part of the article; bylines and dates are not added).
- `page_metadata(page, meta) -> {"date": "YYYY-MM-DD" | None, "author": str | None}`, read only for kept
  documents: author from <meta> (author, article:author, dc.creator, byl) or rel=author; date by htmldate
  on trafilatura's lxml tree, from markup, the URL and structured data (None when they have none).
"""

from __future__ import annotations

import re

from htmldate import find_date

from pipeline.extract.extractors import ParsedPage

# <meta> keys (property, name or itemprop, lowercased) that carry each field, most specific first.
TITLE_KEYS = ("og:title", "twitter:title", "headline")
AUTHOR_KEYS = ("author", "article:author", "dc.creator", "byl")
SITE_SEPARATOR = re.compile(r"\s+(?:\||-|–|—|::|»|·)\s+")
# How far into the text a title counts as already there (a kicker or a date line may come before it).
TITLE_SEARCH_CHARS = 200


def read_meta(page: ParsedPage) -> dict[str, str]:
    """<meta> content by key (property, name or itemprop, lowercased), the first of each key."""
    meta: dict[str, str] = {}
    if page.dom is None:
        return meta
    for element in page.dom.iter("meta"):
        content = element.get("content")
        if content is not None:
            key = (element.get("property") or element.get("name") or element.get("itemprop") or "").lower()
            meta.setdefault(key, " ".join(content.split()))
    return meta


def _text_of(element) -> str:
    return " ".join(element.text_content().split()) if element is not None else ""


def page_title(page: ParsedPage, meta: dict[str, str]) -> str:
    """The page's headline, without the site's name; `meta` is read_meta(page)."""
    if page.dom is None:
        return ""
    title = (next((meta[k] for k in TITLE_KEYS if meta.get(k)), "") or _text_of(page.dom.find(".//h1"))
             or _text_of(page.dom.find(".//title")))
    return max(SITE_SEPARATOR.split(title), key=len) if title else ""


def with_title(title: str, text: str) -> str:
    """`text` with `title` as its first line, unless the title is already at its start or there is no text."""
    if not title or not text or title in " ".join(text[: len(title) + TITLE_SEARCH_CHARS].split()):
        return text
    return f"{title}\n{text}"


def page_metadata(page: ParsedPage, meta: dict[str, str]) -> dict:
    """Author from <meta> or rel=author; publication date (YYYY-MM-DD) by htmldate; `meta` is read_meta(page).

    htmldate gets trafilatura's lxml tree, not the markup: it would parse it again, and it takes a string
    that starts with "http" and has no space for a URL to download.
    """
    if page.dom is None:
        return {"date": None, "author": None}
    author = next((meta[k] for k in AUTHOR_KEYS if meta.get(k)), "") or _text_of(page.dom.find(".//*[@rel='author']"))
    try:
        # Without extensive_search: dates from markup, URL and structured data only; the full-text search
        # guesses from any date-like string and costs more than the rest of a page's extraction.
        date = find_date(page.dom, original_date=True, outputformat="%Y-%m-%d", extensive_search=False)
    except Exception:  # noqa: BLE001 - a page whose date cannot be parsed is still a document
        date = None
    return {"date": date, "author": author or None}

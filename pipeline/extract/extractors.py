"""The three main-text extractors, each given a page parsed once per parser.

- `parse_page(html) -> ParsedPage`: resiliparse's tree and trafilatura's lxml tree (`load_dom`), each
  parsed once and shared by every step that reads it (extractors, metadata, the selector's features).
- `resiliparse_text(tree)`: resiliparse's main-content text (cheap, high recall, low precision).
- `trafilatura_text(dom, url)`: trafilatura in fast mode (no readability/jusText fallbacks) on the shared
  lxml tree; layout tables (trafilatura's "| cell |" lines) become one line per cell (`unpipe`).
- `newspaper_text(html)`: newspaper3k's content algorithm alone (its best-node search and cleanup; no
  images, videos, keywords or metadata), its cleaner's attribute-regex queries answered without lxml's
  per-element Python callbacks (`AttributeRegexParser`, the same elements found).

All three return "" when they find nothing. benchmarks/extract.py measures each against the bare library.
"""

from __future__ import annotations

import copy
import functools
import re
from typing import NamedTuple

import trafilatura
from lxml.etree import ElementDefaultClassLookup
from lxml.html import HtmlComment, HtmlElement, HtmlEntity, HTMLParser, HtmlProcessingInstruction
from lxml.html import fromstring as html_fromstring
from newspaper.cleaners import DocumentCleaner
from newspaper.configuration import Configuration
from newspaper.extractors import ContentExtractor
from newspaper.outputformatters import OutputFormatter
from newspaper.parsers import Parser
from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.html import HTMLTree
from trafilatura.settings import Extractor
from trafilatura.utils import is_dubious_html, repair_faulty_html


class ParsedPage(NamedTuple):
    """A decoded page parsed once per parser: resiliparse's tree (its main-content text, <meta> tags) and
    trafilatura's lxml tree (trafilatura and htmldate; None when lxml finds no document in the markup)."""

    html: str
    tree: HTMLTree
    dom: HtmlElement | None


# trafilatura's own parser (trafilatura.utils.HTML_PARSER) with one change: lxml.html's element class
# lookup is a Python method that runs for every element lxml hands to Python; this C-level one makes every
# element an HtmlElement, which is all trafilatura and htmldate use.
_DOM_PARSER = HTMLParser(collect_ids=False, default_doctype=False, encoding="utf-8", remove_comments=True, remove_pis=True)
_DOM_PARSER.set_element_class_lookup(ElementDefaultClassLookup(
    element=HtmlElement, comment=HtmlComment, pi=HtmlProcessingInstruction, entity=HtmlEntity
))


def load_dom(html: str) -> HtmlElement | None:
    """trafilatura.utils.load_html for a decoded page, parsed with _DOM_PARSER: the same repairs and
    fallbacks, and None where it gives None (no element at all, or a page not marked as HTML that
    parses to fewer than 2 elements)."""
    beginning = html[:50].lower()
    html = repair_faulty_html(html, beginning)
    try:
        tree = html_fromstring(html, parser=_DOM_PARSER)
    except Exception:  # noqa: BLE001 - as load_html (ValueError: a str with an XML encoding declaration)
        tree = None
    if tree is None or len(tree) < 1:
        try:
            tree = html_fromstring(html.encode("utf-8", "surrogatepass"), parser=_DOM_PARSER)
        except Exception:  # noqa: BLE001 - nothing parseable: trafilatura and htmldate get no tree
            tree = None
    if tree is not None and is_dubious_html(beginning) and len(tree) < 2:
        return None
    return tree


def parse_page(html: str) -> ParsedPage:
    return ParsedPage(html, HTMLTree.parse(html), load_dom(html))


def resiliparse_text(html: str | HTMLTree) -> str:
    return extract_plain_text(html, main_content=True, preserve_formatting=True, list_bullets=False)


@functools.cache
def _trafilatura_options() -> Extractor:
    # Building trafilatura's options reads its ConfigParser, a noticeable share of a fast extraction, so
    # bare_extraction gets a copy of one built once, with the page's url; it never changes the options.
    return Extractor(output_format="python", fast=True, comments=False)


def trafilatura_text(dom: HtmlElement | None, url: str) -> str:
    """Trafilatura's text of the lxml tree `dom`, which it copies before cleaning, so htmldate can share it."""
    if dom is None:
        return ""
    options = copy.copy(_trafilatura_options())
    options.url, options.source = url, url.encode("utf-8", "replace").decode("utf-8")  # as Extractor(url=url)
    doc = trafilatura.bare_extraction(dom, options=options)
    return unpipe(doc.text or "") if doc is not None else ""


def unpipe(text: str) -> str:
    """Trafilatura renders tables as "| cell | cell |" lines; layout tables then read as one line of
    navigation and article run together. Put each non-empty cell on its own line instead."""
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|") and stripped.endswith("|"):
            lines.extend(cell.strip() for cell in stripped.strip("|").split(" | ") if cell.strip())
        else:
            lines.append(line)
    return "\n".join(lines)


class AttributeRegexParser(Parser):
    """newspaper's Parser, answering its cleaner's `//*[re:test(@attr, 'pattern', 'i')]` queries by testing
    the attribute in Python on the elements that have it. lxml's EXSLT regex calls back into Python once
    per element of the page, and the cleaner asks 15 such queries a page."""

    _QUERY = re.compile(r"//\*\[re:test\(@(\w+), '(.*)', 'i'\)\]", re.DOTALL)

    @classmethod
    def xpath_re(cls, node, expression):
        query = cls._QUERY.fullmatch(expression)
        pattern = re.compile(query[2], re.IGNORECASE) if query else None
        if pattern is None or pattern.search(""):  # then elements without the attribute match too
            return super().xpath_re(node, expression)
        attribute = query[1]
        return [element for element in node.xpath(f"//*[@{attribute}]") if pattern.search(element.get(attribute))]


class NewspaperCleaner(DocumentCleaner):
    def __init__(self, config: Configuration):
        super().__init__(config)
        self.parser = AttributeRegexParser


def newspaper_text(html: str) -> str:
    """newspaper3k's content algorithm alone (Article.parse minus images, videos, keywords and metadata)."""
    config = Configuration()
    config.fetch_images = False
    dom = Parser.fromstring(html)
    if dom is None:
        return ""
    extractor = ContentExtractor(config)
    top = extractor.calculate_best_node(NewspaperCleaner(config).clean(dom))
    if top is None:
        return ""
    text, _ = OutputFormatter(config).get_formatted(extractor.post_cleanup(top))
    return text

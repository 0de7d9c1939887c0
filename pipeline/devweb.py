"""The dry-run web: a small web with known truth, served on loopback, so the whole pipeline runs offline.

    webtext devweb --run-dir runs/dry     # build runs/dry/devweb/ and serve it until Ctrl-C

`build` writes into `out_dir`:

- `RS_devweb.zst`: a Pushshift-style submission dump linking to the pages (plus self posts, low scores,
  NSFW, blocked domains, tracking parameters, a malformed line, a deleted post), for the reddit stage;
- `pages/` and `routes.json`: what the server answers for each (host, path);
- `truth.jsonl`: one row per linked URL: url (normalized, as the urls stage writes it), kind, title,
  text (the article's true text: its headline, then its paragraphs; "" for pages without one), language,
  dup_group (pages sharing a group are exact or near duplicates of each other), expected (the
  crawl/extract outcome a correct pipeline gives: "doc", or the reason it is not a document);
- `archive/`: the dry-run web archive, `devweb.warc.gz` and its CDX rows `index.jsonl`: captures of the
  "archived" pages (dead live: the server answers 404), each taken ARCHIVE_LEAD_DAYS before its
  submission. `serving` serves it Common-Crawl-style (pipeline/devarchive.py: /cdx and /warcs/<file> with
  byte ranges) on ARCHIVE_HOST at the same port, so `crawl.source = "live_then_archive"` (the dry-run
  config) fetches those dead links from it.
- `eval/`: small eval sets in their published formats (`lambada_test.jsonl`, `hellaswag_val.jsonl` with
  ctx_a/ctx_b, `hellaswag_train.jsonl` for few-shot demonstrations, a WikiText-style `wiki.test.tokens`),
  half of their items made from paragraphs the article pages carry (so decontamination must find them)
  and half from paragraphs no page carries (`write_eval_sets`); the dry-run config points [eval] there.

Hosts are 127.0.0.2 .. 127.0.0.(1 + hosts), all on one port, so the crawl sees many distinct hosts and
its per-host politeness is exercised. Article prose is the standard library's own documentation
(paragraphs of docstrings); non-English pages carry short passages written for this module, served in
their legacy charsets (windows-1251, Shift_JIS, ISO-8859-1) to exercise charset handling.

Page kinds: article (one of three page templates: nav, sidebar, cookie banner, related links, comments,
footer around the article), near_dup (an article with a few words changed, in another template, on
another host), exact_dup (the same article text, another template), redirect (301 to an article),
non_english, junk (link farms, keyword lists, too-short stubs), robots_disallowed, slow (answers after
`slow_seconds`), error_500, not_found, reset (connection closed mid-body), huge (a body past the dry
run's size cap), pdf (a non-HTML content type), archived (an article only the archive holds).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import importlib
import inspect
import json
import random
import re
import socket
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import zstandard

from pipeline.config import DevwebConfig, RedditConfig
from pipeline.urls import normalize_url

PROSE_MODULES = [
    "argparse", "asyncio", "collections", "concurrent.futures", "configparser", "csv", "dataclasses",
    "datetime", "decimal", "difflib", "email.message", "fractions", "functools", "heapq", "http.client",
    "http.server", "imaplib", "inspect", "ipaddress", "itertools", "json", "logging", "mailbox",
    "multiprocessing", "numbers", "os", "pathlib", "pickle", "pydoc", "random", "re", "shutil", "smtplib",
    "socket", "sqlite3", "statistics", "string", "subprocess", "tarfile", "tempfile", "textwrap",
    "threading", "typing", "unittest", "urllib.parse", "urllib.request", "uuid", "warnings", "weakref",
    "zipfile", "abc", "ast", "bisect", "calendar", "codecs", "contextlib", "copy", "enum", "ftplib",
    "getopt", "gettext", "glob", "hashlib", "hmac", "locale", "optparse", "pprint", "queue", "sched",
    "secrets", "selectors", "shelve", "signal", "ssl", "struct", "symtable", "tokenize", "trace",
    "traceback", "wave", "xmlrpc.client",
]

FOREIGN = {
    "de": ("iso-8859-1", [
        "Die Stadtbibliothek öffnet am Montag wieder ihre Türen, nachdem die Renovierung des alten Lesesaals "
        "länger gedauert hat als geplant.",
        "Viele Besucher hatten sich über die langen Wartezeiten beschwert, und die Verwaltung versprach, die "
        "Ausleihe künftig schneller und einfacher zu gestalten.",
        "Im Erdgeschoss gibt es jetzt eine große Abteilung für Kinderbücher, in der jeden Nachmittag vorgelesen "
        "wird.",
        "Die Leiterin der Bibliothek erklärte, dass man auch ältere Menschen mit Kursen zur Nutzung der neuen "
        "Geräte unterstützen wolle.",
        "Wer ein Buch länger als vier Wochen behalten möchte, kann die Frist bequem über die Webseite verlängern.",
        "Außerdem werden im Herbst regelmäßig Lesungen mit Autorinnen und Autoren aus der Region stattfinden.",
    ]),
    "fr": ("iso-8859-1", [
        "Le marché couvert du quartier a fêté ses cent ans samedi dernier en présence de nombreux habitants.",
        "Les commerçants ont proposé des dégustations de fromages, de pain et de fruits venus des fermes voisines.",
        "Le maire a rappelé que le bâtiment avait failli être démoli il y a trente ans, avant d'être sauvé par "
        "une association.",
        "Depuis, les étals attirent aussi bien les familles du quartier que les touristes de passage.",
        "Une exposition de photographies anciennes raconte l'histoire du lieu et de ceux qui y ont travaillé.",
        "Les organisateurs espèrent renouveler la fête chaque année au début de l'été.",
    ]),
    "es": ("utf-8", [
        "El nuevo tren entre las dos ciudades reducirá el viaje a menos de una hora a partir del próximo mes.",
        "Las obras comenzaron hace cuatro años y han dado trabajo a cientos de personas de la comarca.",
        "Los vecinos esperan que la conexión atraiga a más visitantes durante los fines de semana.",
        "La empresa ferroviaria ha anunciado precios reducidos para estudiantes y personas mayores.",
        "Algunos agricultores, sin embargo, se quejan de que la vía ha dividido sus terrenos en dos.",
        "El ayuntamiento ha prometido construir pasos seguros para el ganado y la maquinaria agrícola.",
    ]),
    "ru": ("windows-1251", [
        "В городском парке открылась новая летняя сцена, где каждый вечер выступают местные музыканты.",
        "Жители давно просили сделать в парке больше скамеек и фонарей, и теперь их желание исполнено.",
        "По выходным на главной аллее работает ярмарка, где можно купить мёд, овощи и свежий хлеб.",
        "Администрация обещает, что к осени в парке появится и небольшая библиотека под открытым небом.",
        "Дети особенно рады новой площадке с качелями, горкой и песочницей у самого пруда.",
        "Вход в парк остаётся бесплатным, а концерты начинаются в семь часов вечера.",
    ]),
    "ja": ("shift_jis", [
        "駅前の古い商店街では、今年も夏祭りの準備が始まりました。",
        "地元の子どもたちは、毎日放課後に集まって太鼓の練習をしています。",
        "祭りの当日には、たくさんの屋台が並び、遠くからも見物客が訪れます。",
        "商店街の人々は、祭りが町を元気にする大切な行事だと話しています。",
        "夜には花火が打ち上げられ、川沿いの道は多くの人でにぎわいます。",
        "主催者は、ごみを持ち帰るよう来場者に協力を呼びかけています。",
    ]),
}

TEMPLATES = ("magazine", "blog", "portal")
ARCHIVED_PAGES = 3  # dead links the dry-run archive holds
ARCHIVE_LEAD_DAYS = 5  # an archived page was captured this long before its submission
ARCHIVE_HOST = "127.0.2.1"  # where the dry-run archive listens (devweb.port), outside 127.0.0.2-251
SITE_NAMES = ["Daily Ledger", "Tech Review", "City Herald", "Open Notes", "The Courier", "Field Report"]


@dataclass
class Page:
    """One route of the dry-run web and its truth."""

    host: str
    path: str
    kind: str
    status: int = 200
    content_type: str = "text/html; charset=utf-8"
    body: bytes = b""
    location: str = ""
    title: str = ""
    text: str = ""
    language: str = "en"
    dup_group: str | None = None
    expected: str = "doc"
    score: int = 10


def prose_paragraphs() -> list[str]:
    """Paragraphs of plain English prose from the standard library's docstrings, in a stable order."""
    found: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in PROSE_MODULES:
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            docs = [module.__doc__]
            for _, obj in sorted(vars(module).items()):
                if inspect.isclass(obj) or inspect.isfunction(obj):
                    docs.append(obj.__doc__)
                    if inspect.isclass(obj):
                        docs.extend(f.__doc__ for _, f in sorted(vars(obj).items()) if inspect.isfunction(f))
            for doc in docs:
                if isinstance(doc, str):
                    found.update(_prose_in(doc))
    return sorted(found)


def _prose_in(doc: str) -> list[str]:
    out = []
    for block in re.split(r"\n\s*\n", inspect.cleandoc(doc)):
        if ">>>" in block or "::" in block or re.search(r"^\s{2,}", block, re.M):
            continue
        text = " ".join(block.split())
        letters = sum(c.isalpha() or c.isspace() for c in text)
        if len(text.split()) >= 30 and text.endswith(".") and letters / len(text) >= 0.9:
            out.append(text)
    return out


def _boilerplate(rng: random.Random, site: str, template: str) -> tuple[str, str]:
    """(before, after) HTML around an article: the parts an extractor must leave out."""
    nav = "".join(f'<li><a href="/section/{w.lower()}">{w}</a></li>' for w in
                  rng.sample(["World", "Politics", "Business", "Science", "Sports", "Culture", "Opinion",
                              "Technology", "Travel", "Health"], 6))
    related = "".join(f'<li><a href="/story/{rng.randrange(10**6)}">{t}</a></li>' for t in
                      rng.sample(["Ten things you missed this week", "Why the market moved on Friday",
                                  "Readers respond to our survey", "The best photos of the month",
                                  "Subscribe to our newsletter for daily updates", "Podcast: the week in review",
                                  "Letters to the editor", "Weather for the weekend"], 4))
    cookie = ('<div class="cookie-banner">We use cookies to improve your experience. By continuing to browse '
              'you agree to our use of cookies. <button>Accept all</button></div>')
    comments = "".join(
        f'<div class="comment"><b>user{rng.randrange(1000)}</b><p>{c}</p></div>'
        for c in rng.sample(["Great read, thanks!", "I disagree with the second point.", "First!",
                             "Does anyone have a link to the source?", "Shared this with my team."], 2)
    )
    footer = (f'<footer><p>&copy; 2024 {site}. All rights reserved.</p><a href="/privacy">Privacy policy</a> '
              '<a href="/terms">Terms of use</a> <a href="/contact">Contact us</a></footer>')
    if template == "magazine":
        before = (f'<header><div class="logo">{site}</div><nav><ul>{nav}</ul></nav></header>{cookie}'
                  '<main><article>')
        after = (f'</article><aside class="related"><h3>Related stories</h3><ul>{related}</ul></aside>'
                 f'<section class="comments"><h3>Comments</h3>{comments}</section></main>{footer}')
    elif template == "blog":
        before = (f'<div id="top"><span>{site}</span> | <a href="/">Home</a> <a href="/archive">Archive</a> '
                  f'<a href="/about">About</a></div><div id="wrap"><div id="sidebar"><h4>Categories</h4>'
                  f'<ul>{nav}</ul><h4>Popular</h4><ul>{related}</ul></div><div id="content"><div class="post">')
        after = (f'<div class="share">Share this post: Twitter Facebook Email</div></div>'
                 f'<div id="comments">{comments}</div></div></div>{footer}{cookie}')
    else:
        before = (f'<table width="100%"><tr><td colspan="2"><h2>{site} Portal</h2><ul class="menu">{nav}</ul>'
                  f'</td></tr><tr><td valign="top" width="20%"><b>Most read</b><ul>{related}</ul></td>'
                  '<td valign="top"><div class="story-body">')
        after = ('<p class="advert">Advertisement: Save 20% on your subscription today.</p></div></td></tr>'
                 f'</table>{footer}')
    return before, after


def article_html(rng: random.Random, title: str, paragraphs: list[str], site: str, template: str,
                 lang: str = "en", charset: str = "utf-8") -> bytes:
    before, after = _boilerplate(rng, site, template)
    body = "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
    page = (f'<!DOCTYPE html><html lang="{lang}"><head><meta charset="{charset}"><title>{html.escape(title)} - '
            f'{site}</title></head><body>{before}<h1>{html.escape(title)}</h1>'
            f'<p class="byline">By Staff Writer, March {rng.randrange(1, 28)}, 2024</p>{body}{after}</body></html>')
    return page.encode(charset, errors="xmlcharrefreplace")


def _title(paragraphs: list[str]) -> str:
    words = re.sub(r"[^\w\s]", "", paragraphs[0]).split()[:7]
    return " ".join(words).capitalize()


def _edit_words(rng: random.Random, paragraphs: list[str], fraction: float) -> list[str]:
    """A near-duplicate: replace about `fraction` of the words with other words of the text."""
    words = " ".join(paragraphs).split()
    lengths = [len(p.split()) for p in paragraphs]
    for i in rng.sample(range(len(words)), max(1, int(len(words) * fraction))):
        words[i] = rng.choice(words)
    out, start = [], 0
    for n in lengths:
        out.append(" ".join(words[start:start + n]))
        start += n
    return out


def plan_pages(config: DevwebConfig) -> list[Page]:
    """Every page of the dry-run web, with its truth; deterministic for a given config."""
    rng = random.Random(config.seed)
    hosts = [f"127.0.0.{2 + i}" for i in range(config.hosts)]
    pool = shuffled_prose(rng)
    pages: list[Page] = []

    def add_article(index: int, paragraphs: list[str], kind: str, group: str | None, host: str, template: str):
        title = _title(paragraphs)
        site = SITE_NAMES[hosts.index(host) % len(SITE_NAMES)]
        body = article_html(rng, title, paragraphs, site, template)
        pages.append(Page(host=host, path=f"/{template}/{index:04d}-{kind}.html", kind=kind, body=body,
                          title=title, text="\n".join([title, *paragraphs]), dup_group=group, score=rng.randrange(3, 400)))

    articles = []
    for i in range(min(config.num_articles, len(pool) // 5)):
        paragraphs = pool[i * 5:(i + 1) * 5]
        articles.append(paragraphs)
        add_article(i, paragraphs, "article", None, hosts[i % len(hosts)], TEMPLATES[i % 3])
    for g in range(config.dup_groups):
        source = pages[g]
        source.dup_group = f"group-{g:03d}"
        for copy in range(1 + g % 3):
            host = hosts[(g + copy + 1) % len(hosts)]
            template = TEMPLATES[(g + copy + 1) % 3]
            if copy == 0 and g % 2 == 0:
                add_article(1000 + g * 10 + copy, articles[g], "exact_dup", source.dup_group, host, template)
            else:
                add_article(1000 + g * 10 + copy, _edit_words(rng, articles[g], 0.015), "near_dup",
                            source.dup_group, host, template)
    for i, (lang, (charset, sentences)) in enumerate(sorted(FOREIGN.items())):
        for j in range(2):
            order = rng.sample(sentences, len(sentences))
            paragraphs = [" ".join(order[:3]), " ".join(order[3:])] * 3
            host = hosts[(i * 2 + j) % len(hosts)]
            body = article_html(rng, order[0][:40], paragraphs, SITE_NAMES[0], TEMPLATES[j], lang, charset)
            pages.append(Page(host=host, path=f"/intl/{lang}-{j}.html", kind="non_english", body=body,
                              content_type=f"text/html; charset={charset}", title=order[0][:40],
                              text="\n".join([order[0][:40], *paragraphs]), language=lang, expected="language"))
    pages.extend(_junk_pages(rng, hosts))
    pages.extend(_broken_pages(rng, hosts, pages, config))
    return pages


def shuffled_prose(rng: random.Random) -> list[str]:
    """The prose paragraphs in the order plan_pages deals them to articles (5 each, from the start)."""
    pool = prose_paragraphs()
    rng.shuffle(pool)
    return pool


def write_eval_sets(out_dir: Path, config: DevwebConfig) -> None:
    """Small LAMBADA, HellaSwag and WikiText files in their published formats: items made from article
    paragraphs (in the corpus) and from the paragraphs left over (not in it), alternately (WikiText:
    articles of three paragraphs, all from one side)."""
    pool = shuffled_prose(random.Random(config.seed))
    used = 5 * min(config.num_articles, len(pool) // 5)
    seen, unseen = pool[:used:4], pool[used + 5 * ARCHIVED_PAGES:]  # the archived pages carry the next ones
    mixed = [p for pair in zip(seen, unseen) for p in pair]
    rng = random.Random(config.seed + 2)
    out_dir.mkdir(parents=True, exist_ok=True)
    lambada = [{"text": p.rstrip(".")} for p in mixed[:24]]
    (out_dir / "lambada_test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lambada))
    long_enough = [p for p in mixed[24:] if len(p.split()) >= 40]  # a context of 28 words, endings of 10
    val, train = long_enough[:24], [p for p in unseen[40:] if len(p.split()) >= 40][:12]
    for name, paragraphs in (("hellaswag_val.jsonl", val), ("hellaswag_train.jsonl", train)):
        rows = [_hellaswag_item(rng, i, p, [q for q in paragraphs if q != p]) for i, p in enumerate(paragraphs)]
        (out_dir / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    seen_rest, unseen_rest = ([p for p in group if p not in val and p not in train and p not in mixed[:24]]
                              for group in (seen, unseen[:40]))
    articles = [seen_rest[:3], unseen_rest[:3], seen_rest[3:6], unseen_rest[3:6]]
    (out_dir / "wiki.test.tokens").write_text("".join(
        f" = {_title(a)} = \n \n" + "".join(f" {_wikitext_tokens(p)} \n" for p in a) + " \n" for a in articles if a))


def _hellaswag_item(rng: random.Random, index: int, paragraph: str, others: list[str]) -> dict:
    """A HellaSwag-format item: 25 words, 3 more (ctx_b), then the true 10 and 3 other paragraphs' 10."""
    def span(text: str) -> str:
        return " ".join(text.split()[28:38])

    label = rng.randrange(4)
    endings = [span(p) for p in rng.sample(others, 3)]
    endings.insert(label, span(paragraph))
    words = paragraph.split()
    return {"ind": index, "activity_label": "Reading the manual", "ctx_a": " ".join(words[:25]),
            "ctx_b": " ".join(words[25:28]).lower(), "endings": endings, "label": label, "split": "val",
            "split_type": "indomain", "source_id": f"devweb~{index}"}


def _wikitext_tokens(paragraph: str) -> str:
    """A paragraph as WikiText writes it: punctuation split off by spaces, hyphens as " @-@ "."""
    text = re.sub(r"(?<=\w)-(?=\w)", " @-@ ", paragraph)
    return " ".join(re.sub(r"([.,;:!?()\"])", r" \1 ", text).split())


def _junk_pages(rng: random.Random, hosts: list[str]) -> list[Page]:
    links = "".join(f'<a href="/p/{rng.randrange(10**6)}">Cheap deals {i}</a><br>' for i in range(80))
    keywords = " ".join(rng.choice(["buy", "cheap", "best", "deal", "casino", "free", "win", "now"])
                        for _ in range(400))
    stub = "<p>Page moved. Please update your bookmarks.</p>"
    out = []
    for i, (name, body) in enumerate([("links", links), ("keywords", f"<p>{keywords}</p>"), ("stub", stub)]):
        page = f"<html><head><title>{name}</title></head><body>{body}</body></html>".encode()
        out.append(Page(host=hosts[i % len(hosts)], path=f"/junk/{name}.html", kind="junk", body=page,
                        title=name, expected="junk"))
    return out


def _broken_pages(rng: random.Random, hosts: list[str], pages: list[Page], config: DevwebConfig) -> list[Page]:
    target = pages[1]
    filler = "".join(f"<p>{'Filler paragraph of a page far too large to keep. ' * 20}</p>" for _ in range(3000))
    private_host = hosts[-1]
    return [
        Page(host=target.host, path="/old/moved.html", kind="redirect", status=301, location=target.path,
             title=target.title, text=target.text, dup_group=target.dup_group, expected="redirect_to_duplicate"),
        Page(host=private_host, path="/private/secret.html", kind="robots_disallowed",
             body=b"<html><body><p>members only</p></body></html>", expected="robots_disallowed"),
        Page(host=hosts[0], path="/slow.html", kind="slow", body=pages[2].body, expected="fetch_timeout"),
        Page(host=hosts[1], path="/error.html", kind="error_500", status=500, body=b"oops",
             expected="http_5xx"),
        Page(host=hosts[2], path="/gone.html", kind="not_found", status=404, body=b"not found",
             expected="http_4xx"),
        Page(host=hosts[3], path="/reset.html", kind="reset", body=pages[3].body, expected="fetch_error"),
        Page(host=hosts[4], path="/huge.html", kind="huge", body=f"<html><body>{filler}</body></html>".encode(),
             expected="too_large"),
        Page(host=hosts[5], path="/report.html", kind="pdf", content_type="application/pdf",
             body=b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", expected="content_type"),
    ]


def archived_pages(config: DevwebConfig) -> list[Page]:
    """Articles that are dead live (the server answers 404) but held by the dry-run archive, from the prose
    the live articles left unused."""
    hosts = [f"127.0.0.{2 + i}" for i in range(config.hosts)]
    pool = shuffled_prose(random.Random(config.seed))  # the live articles take the first paragraphs
    unused = pool[min(config.num_articles, len(pool) // 5) * 5:]
    rng = random.Random(config.seed + 2)
    pages = []
    for i in range(min(ARCHIVED_PAGES, len(unused) // 5)):
        paragraphs = unused[i * 5:(i + 1) * 5]
        title, template = _title(paragraphs), TEMPLATES[i % 3]
        body = article_html(rng, title, paragraphs, SITE_NAMES[i % len(SITE_NAMES)], template)
        pages.append(Page(host=hosts[i % len(hosts)], path=f"/{template}/archived-{i:02d}.html", kind="archived",
                          body=body, title=title, text="\n".join([title, *paragraphs]), score=rng.randrange(3, 400)))
    return pages


def _submission(rng: random.Random, i: int, url: str, score: int, **extra) -> dict:
    record = {"id": f"dw{i:05d}", "subreddit": rng.choice(["news", "technology", "science", "worldnews"]),
              "title": f"Submission {i}", "url": url, "score": score, "is_self": False, "over_18": False,
              "created_utc": 1700000000 + i * 37, "author": f"user{i % 50}", "num_comments": i % 17}
    record.update(extra)
    return record


def dump_lines(rng: random.Random, pages: list[Page], port: int, archived: list[Page] = ()) -> list[bytes]:
    """The Reddit dump: one submission per page, plus records every reddit-stage rule must drop, then one per
    archived page."""
    records = [_submission(rng, i, f"http://{p.host}:{port}{p.path}", p.score) for i, p in enumerate(pages)]
    n = len(records)
    first = f"http://{pages[0].host}:{port}{pages[0].path}"
    records += [
        _submission(rng, n, first + "?utm_source=reddit&fbclid=abc", 5),
        _submission(rng, n + 1, f"http://{pages[5].host}:{port}{pages[5].path}", 1),
        _submission(rng, n + 2, "https://en.wikipedia.org/wiki/Web_crawler", 50),
        _submission(rng, n + 3, "https://i.imgur.com/abc.jpg", 90),
        _submission(rng, n + 4, "https://www.reddit.com/r/news/comments/abc/x/", 12, is_self=True),
        _submission(rng, n + 5, f"http://{pages[6].host}:{port}/nsfw.html", 40, over_18=True),
        _submission(rng, n + 6, "ftp://files.example.org/a.txt", 9),
        _submission(rng, n + 7, f"http://{pages[7].host}:{port}/deleted.html", 30, removed_by_category="deleted"),
    ]
    records += [_submission(rng, n + 8 + i, f"http://{p.host}:{port}{p.path}", p.score) for i, p in enumerate(archived)]
    lines = [json.dumps(r, sort_keys=True).encode() for r in records]
    lines.insert(len(lines) // 2, b'{"id": "broken", "url": ')
    return lines


def build(out_dir: str | Path, port: int, config: DevwebConfig, reddit: RedditConfig | None = None) -> Path:
    """Write the dry-run web (dump, pages, routes, truth) into out_dir for a server on `port`."""
    out_dir = Path(out_dir)
    (out_dir / "pages").mkdir(parents=True, exist_ok=True)
    rng = random.Random(config.seed + 1)
    pages = plan_pages(config)
    hosts = sorted({p.host for p in pages}, key=lambda h: int(h.rsplit(".", 1)[1]))
    routes = {}
    for i, page in enumerate(pages):
        name = f"{i:05d}.bin"
        (out_dir / "pages" / name).write_bytes(page.body)
        routes[f"{page.host}{page.path}"] = {"kind": page.kind, "status": page.status, "file": name,
                                              "content_type": page.content_type, "location": page.location}
    robots = {h: "User-agent: *\nDisallow: /private/\n" for h in hosts}
    (out_dir / "routes.json").write_text(json.dumps(
        {"port": port, "hosts": hosts, "slow_seconds": config.slow_seconds, "routes": routes, "robots": robots},
        indent=1, sort_keys=True))
    tracking = tuple((reddit or RedditConfig()).tracking_params)
    with open(out_dir / "truth.jsonl", "w") as f:
        for page in pages:
            url, _ = normalize_url(f"http://{page.host}:{port}{page.path}", tracking)
            f.write(json.dumps({"url": url, "kind": page.kind, "title": page.title, "text": page.text,
                                "language": page.language, "dup_group": page.dup_group,
                                "expected": page.expected}, sort_keys=True) + "\n")
    archived = archived_pages(config)
    lines = dump_lines(rng, pages, port, archived)
    data = b"\n".join(lines) + b"\n"
    (out_dir / "RS_devweb.zst").write_bytes(zstandard.ZstdCompressor(level=3).compress(data))
    write_archive(out_dir / "archive", archived, lines, port)
    with open(out_dir / "truth.jsonl", "a") as f:
        for page in archived:
            url, _ = normalize_url(f"http://{page.host}:{port}{page.path}", tracking)
            f.write(json.dumps({"url": url, "kind": page.kind, "title": page.title, "text": page.text,
                                "language": page.language, "dup_group": None, "expected": "doc"}, sort_keys=True) + "\n")
    write_eval_sets(out_dir / "eval", config)
    return out_dir


def write_archive(archive_dir: Path, archived: list[Page], lines: list[bytes], port: int) -> None:
    """The dry-run archive: each archived page captured ARCHIVE_LEAD_DAYS before its submission, as WARC and a
    CDX index (pipeline/devarchive.py serves them Common-Crawl-style on ARCHIVE_HOST)."""
    from datetime import datetime, timedelta, timezone

    from pipeline import devarchive

    archive_dir.mkdir(parents=True, exist_ok=True)
    submitted = {}
    for line in lines:
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            submitted[record["url"]] = record["created_utc"]
    captures = []
    for page in archived:
        url = f"http://{page.host}:{port}{page.path}"
        when = datetime.fromtimestamp(submitted[url], timezone.utc) - timedelta(days=ARCHIVE_LEAD_DAYS)
        captures.append(devarchive.Capture(url, when, page.body))
    devarchive.write_index(archive_dir, devarchive.write_warc(archive_dir / "devweb.warc.gz", captures))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_truth(out_dir: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(out_dir, "truth.jsonl").read_text().splitlines()]


def _make_app(out_dir: Path, site: dict):
    from aiohttp import web

    async def handle(request: web.Request) -> web.StreamResponse:
        host = request.transport.get_extra_info("sockname")[0]
        if request.path == "/robots.txt":
            return web.Response(text=site["robots"].get(host, ""), content_type="text/plain")
        route = site["routes"].get(f"{host}{request.path}")
        if route is None:
            return web.Response(status=404, text="no such page")
        body = (out_dir / "pages" / route["file"]).read_bytes()
        if route["kind"] == "slow":
            await asyncio.sleep(site["slow_seconds"])
        if route["status"] in (301, 302):
            return web.Response(status=route["status"], headers={"Location": route["location"]})
        if route["kind"] == "reset":
            response = web.StreamResponse(headers={"Content-Type": route["content_type"],
                                                   "Content-Length": str(len(body))})
            await response.prepare(request)
            await response.write(body[: len(body) // 3])
            request.transport.abort()
            return response
        return web.Response(status=route["status"], body=body, headers={"Content-Type": route["content_type"]})

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handle)
    return app


@contextlib.contextmanager
def serving(out_dir: str | Path):
    """Serve a built dry-run web from a background thread; yields the routes.json dict."""
    from aiohttp import web

    out_dir = Path(out_dir)
    site = json.loads((out_dir / "routes.json").read_text())
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(_make_app(out_dir, site), access_log=None)

    archive = None
    if (out_dir / "archive" / "index.jsonl").exists():
        from pipeline import devarchive

        archive = web.AppRunner(devarchive.archive_app(out_dir / "archive"), access_log=None)

    async def start():
        await runner.setup()
        for host in site["hosts"]:
            await web.TCPSite(runner, host, site["port"]).start()
        if archive is not None:
            await archive.setup()
            await web.TCPSite(archive, ARCHIVE_HOST, site["port"]).start()

    thread = threading.Thread(target=loop.run_forever, name="devweb", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
    try:
        yield site
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
        if archive is not None:
            asyncio.run_coroutine_threadsafe(archive.cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


def build_for_run(ctx) -> Path:
    """Build the dry-run web into `<run>/devweb/` once; a rebuild keeps the port already written."""
    out_dir = ctx.path("devweb")
    routes = out_dir / "routes.json"
    port = json.loads(routes.read_text())["port"] if routes.exists() else (ctx.config.devweb.port or free_port())
    return build(out_dir, port, ctx.config.devweb, ctx.config.reddit)


def serve_forever(out_dir: Path) -> None:
    """Serve a built dry-run web until Ctrl-C."""
    with serving(out_dir) as site:
        print(f"dry-run web: {len(site['routes'])} pages on {len(site['hosts'])} hosts "
              f"(127.0.0.2-{site['hosts'][-1]}) port {site['port']}; dump {out_dir / 'RS_devweb.zst'}; "
              "Ctrl-C to stop", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


def was_used(run_dir: Path) -> bool:
    """Whether this run crawled the dry-run web (its truth file is in the run directory)."""
    return (Path(run_dir) / "devweb" / "truth.jsonl").exists()


def score_run(run_dir: Path, plots: Path):
    """A report scorer: extraction F1 and dedup pair recall of the run against the dry-run web's truth.

    Token F1 of each extracted document against its page's true article text (mean over pages), the
    expected documents found, and the share of same-group page pairs that dedup put in one cluster.
    """
    from itertools import combinations

    from pipeline.extract.score import mean_f1
    from pipeline.report import Section, read_rows

    if not was_used(run_dir):
        return None
    truth = {row["url"]: row for row in load_truth(Path(run_dir) / "devweb")}
    section = Section("devweb truth")
    docs = read_rows(run_dir, "docs/part-*.parquet", ["doc_id", "url", "text"])
    if docs is not None:
        pairs = [(d["text"], truth[d["url"]]["text"]) for d in docs if truth.get(d["url"], {}).get("text")]
        precision, recall, f1 = mean_f1(pairs)
        expected = {u for u, t in truth.items() if t["expected"] in ("doc", "redirect_to_duplicate")}
        found = len(expected & {d["url"] for d in docs})
        section.data["extract"] = {"pages_scored": len(pairs), "precision": precision, "recall": recall, "f1": f1,
                                   "expected_docs_found": found, "expected_docs": len(expected)}
        section.lines.append(f"extraction vs truth: F1 {f1:.3f} (precision {precision:.3f}, recall {recall:.3f}) "
                             f"over {len(pairs)} pages; {found}/{len(expected)} expected documents kept")
    archived = {u for u, t in truth.items() if t["kind"] == "archived"}
    if docs is not None and archived:
        served = len(archived & {d["url"] for d in docs})
        section.data["archive"] = {"dead_links": len(archived), "served_from_archive": served}
        section.lines.append(f"dead links served from the archive: {served}/{len(archived)} kept as documents")
    clusters = read_rows(run_dir, "dedup/clusters.parquet", ["doc_id", "cluster_id"])
    if docs is not None and clusters is not None:
        cluster_of = {c["doc_id"]: c["cluster_id"] for c in clusters}
        groups: dict[str, list[str]] = {}
        for d in docs:
            group = truth.get(d["url"], {}).get("dup_group")
            if group:
                groups.setdefault(group, []).append(d["doc_id"])
        pairs = [(a, b) for ids in groups.values() for a, b in combinations(sorted(ids), 2)]
        found = sum(cluster_of.get(a) is not None and cluster_of.get(a) == cluster_of.get(b) for a, b in pairs)
        section.data["dedup"] = {"groups": len(groups), "pairs": len(pairs), "pairs_found": found}
        if pairs:
            section.lines.append(f"dedup vs truth: {found}/{len(pairs)} duplicate pairs clustered "
                                 f"(recall {found / len(pairs):.3f}) across {len(groups)} groups")
    return section

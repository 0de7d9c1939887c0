"""Extraction benchmark: token F1 against known article text, and documents per CPU second, on two sets.

    python -m benchmarks.extract --pages ../shared/extraction/dragnet_test [--limit 0] [--rounds 3]
    python -m benchmarks.extract [--generated 160] [--seed 0] [--rounds 3] [--chunk 64]
    (-m: benchmarks/tokenize.py would shadow the stdlib; a quick look: --limit 80 --generated 40 --rounds 1)

Sets. Real pages (`--pages DIR`: `html/<id>.html` raw bytes and `ground_truth.jsonl` {id, url, text}, for
example Dragnet's test split): each body gets the charset the crawl would log for it (pipeline/charsets.py,
no header), as the stage would. The dry-run set (always): the dry-run web's article pages
(pipeline/devweb.py) plus `--generated` pages made here from four other templates (semantic HTML5,
obfuscated div soup, an old table layout with <br>-separated paragraphs, a blog with a comment thread),
each with ads, "read more" boxes, figures, lists and subheadings inside the article and nav, cookie
banner, related links, newsletter box, comments and footer around it. An article's true text is its
headline and its body.

Rows, all measured in this run, on the same pages:
- trafilatura.extract(html) as its users call it (defaults: fallbacks on, comments kept): the baseline of
  the `x traf` column; then with include_comments=False and in the fast, fast + favor_precision and
  favor_recall modes; bare newspaper3k (Article(...).download(input_html=...).parse()); resiliparse's
  main-content extraction;
- our stage's per-document path as extract_partition runs it (pipeline.extract.extract_documents: the
  crawled bytes and charset go to the isolated worker, which decodes, extracts, selects, identifies the
  language, filters and reads the metadata), 8 pages a message as the stage sends them. A page our
  filters drop scores 0; on real pages the stage runs twice, with the default config and with
  min_tokens = 0 (the pages whose true text is under 128 tokens are short by nature, not by extraction),
  and the dropped pages are listed with their reasons;
- our rule alone (parse_page, main_text, page_title + with_title, page_metadata: no decoding, language
  or filters), and the previous rule alone (trafilatura fast + precision, newspaper when its F1 against
  resiliparse is under 0.7, no title line).

How to read the table. P, R, F1: token precision, recall and F1 (pipeline/extract/score.py) per page,
averaged over all pages. docs/s: documents per CPU second: CPU seconds (user + system) of this process
plus every child process, live (psutil) or ended (RUSAGE_CHILDREN). Every row runs in a worker process
of its own (the stage's IsolatedWorker, 8 pages a message, for the others too), started afresh each
round, so that each sees every page once, as a crawl does: the extractors' caches (trafilatura's and
htmldate's lru_caches, keyed by text) would otherwise let a row reuse what another row, or an earlier
round, computed on the same page, which flatters whatever runs in one process with the others. CPU
time, not wall time, because the machine is shared; the load average is printed. `x traf` is docs/s
over the first row's. The rows take turns on chunks of `--chunk` pages, in an order that rotates every
chunk, for `--rounds` rounds, each row's CPU seconds summed: a busy spell on the machine then falls on
all rows alike. On a loaded machine the same code reads up to ~0.2x apart from run to run.

On real pages, then: the pages each stage row dropped, with the reason; the selector's held-out
comparison, what the pages lose by kind of line and the junk heuristics' distributions
(benchmarks/extract_rules.py says how to read those three); which extractor's text the stage kept and
which text scores best per page.

Last run (Dragnet's 415 test pages, 2-core machine at load 3-4; the key rows on all pages, the rest on
the first 200): trafilatura.extract(html) 0.798 F1 at 40 docs/s; our rule alone 0.905 at 1.14x, the stage
at 1.08x (F1 0.842 with min_tokens 128, which drops the 35 pages whose text is that short; 0.897 with
min_tokens 0); the previous rule 0.879 at 1.06x. Held-out: our rule 0.905, trafilatura fast alone 0.900,
the previous rule 0.888 (each with the title line), the best of three per page 0.937. On the dry-run set
the stage is at 0.89x: its pages are 3 KB, so the per-document costs (the worker's round trip, language,
metadata) weigh more than on real pages.
"""

from __future__ import annotations

import argparse
import html as htmlmod
import json
import logging
import os
import random
import resource
import time
from collections import Counter
from pathlib import Path

import psutil

from benchmarks import extract_rows, extract_rules
from pipeline import devweb
from pipeline.charsets import detect_charset
from pipeline.config import DevwebConfig, ExtractConfig
from pipeline.extract import (
    BATCH_PAGES, IsolatedWorker, extract_documents, main_text, newspaper_text, parse_page,
    process_document, resiliparse_text, trafilatura_text, warm_up,
)
from pipeline.extract.decode import decode_body
from pipeline.extract.language import identify_language
from pipeline.extract.metadata import page_title, read_meta, with_title
from pipeline.extract.score import token_f1
from pipeline.extract.selector import SelectionRule, reads_as_english
from pipeline.text import scrub
from pipeline.tokenizer import get_encoding

URL = extract_rows.URL
WORKER_TIMEOUT_S = 120.0  # per page, for the rows that have no timeout of their own


SECTIONS = ["Home", "World", "Politics", "Business", "Technology", "Science", "Health", "Sports", "Culture",
            "Opinion", "Travel", "Books", "Video", "Podcasts", "Newsletters", "About us", "Contact"]
NAMES = ["Ada Byron", "Grace Hopper", "Alan Turing", "Edsger Dijkstra", "Barbara Liskov", "Ken Thompson"]
COOKIE = ("We use cookies and similar technologies to improve your experience, measure audiences and show you "
          "personalised content. By clicking Accept you agree to our use of cookies.")
NEWSLETTER = "Sign up for our daily newsletter and get the best stories delivered straight to your inbox every morning."
FOOTER = ("Copyright 2019 The Daily Example Media Group. All rights reserved. Terms of service. Privacy policy. "
          "Cookie settings. Advertise with us. Careers.")
TEMPLATES = ["semantic", "divsoup", "table", "blog"]


def esc(text: str) -> str:
    return htmlmod.escape(text, quote=False)


def first_sentence(text: str) -> str:
    return text.split(". ")[0].rstrip(".") + "."


def title_of(text: str, rng: random.Random) -> str:
    return " ".join(text.split()[: rng.randint(5, 10)]).rstrip(".,:;").capitalize()


def article_blocks(rng: random.Random, body: list[str], others: list[str], pool: list[str]) -> list[tuple[str, object]]:
    """(kind, content) blocks of one article: p, h2, ul (list of items) and box (not article text)."""
    blocks = []
    for i, paragraph in enumerate(body):
        if i > 0 and rng.random() < 0.3:
            blocks.append(("p", first_sentence(others[(i + 6) % 12])))
        if i in (2, 5) and rng.random() < 0.6:
            blocks.append(("box", others[i]))
        if i > 1 and rng.random() < 0.25:
            blocks.append(("h2", title_of(others[i % 12], rng)))
        if rng.random() < 0.12:
            blocks.append(("ul", [first_sentence(s) for s in rng.sample(pool, rng.randint(3, 5))]))
        blocks.append(("p", paragraph))
    return blocks


def blocks_html(rng: random.Random, blocks: list, breaks: bool) -> str:
    out = []
    for kind, content in blocks:
        if kind == "box":
            out.append(rng.choice([
                '<div class="ad-slot"><span>Advertisement</span></div>',
                f'<div class="inline-related"><strong>Read more:</strong> <a href="/r">{esc(title_of(content, rng))}</a></div>',
                f'<figure><img src="/i.jpg"><figcaption>{esc(first_sentence(content))} Photo: Agency</figcaption></figure>',
            ]))
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{esc(item)}</li>" for item in content) + "</ul>")
        elif kind == "h2":
            out.append(f"<h2>{esc(content)}</h2>")
        elif breaks:
            out.append(f"{esc(content)}<br><br>")
        else:
            words = esc(content).split(" ")
            k = rng.randrange(len(words))
            words[k] = f'<a href="/w/{k}">{words[k]}</a>'  # an inline link, as articles have
            out.append(f"<p>{' '.join(words)}</p>")
    return "\n".join(out)


def generated_page(rng: random.Random, pool: list[str], template: str) -> dict:
    body, others = rng.sample(pool, rng.randint(3, 10)), rng.sample(pool, 12)
    title, author = title_of(body[0], rng), rng.choice(NAMES)
    date = f"2019-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    blocks = article_blocks(rng, body, others, pool)
    truth = [title] + [line for kind, c in blocks if kind != "box" for line in (c if kind == "ul" else [c])]
    article = blocks_html(rng, blocks, breaks=template == "table")
    nav = "".join(f'<li><a href="/{s.lower()}/">{s}</a></li>' for s in rng.sample(SECTIONS, rng.randint(6, 12)))
    related = "".join(f'<li><a href="/story/{rng.randint(1000, 9999)}">{esc(title_of(o, rng))}</a>'
                      f'<p>{esc(first_sentence(o))}</p></li>' for o in others[:5])
    comments = "".join(
        f'<div class="comment"><span class="author">{rng.choice(NAMES)}</span> <span class="date">2 days ago</span>'
        f'<p>{esc(first_sentence(o) if rng.random() < 0.6 else o)}</p><a href="#">Reply</a></div>'
        for o in others[5:5 + rng.randint(0, 5)])
    head = (f"<head><meta charset='utf-8'><title>{esc(title)} | The Daily Example</title>"
            f"<meta name='author' content='{author}'><meta property='article:published_time' content='{date}T08:00:00Z'></head>")
    cookie = f'<div id="cookie-banner" class="consent"><p>{COOKIE}</p><button>Accept</button><button>Manage</button></div>'
    if template == "semantic":
        page = (f"<html>{head}<body>{cookie}<header><div class='logo'>The Daily Example</div><nav><ul>{nav}</ul></nav></header>"
                f"<main><article><h1>{esc(title)}</h1><p class='byline'>By <a rel='author' href='/a'>{author}</a> "
                f"<time datetime='{date}'>{date}</time></p>{article}</article><aside><h3>Most read</h3><ul>{related}</ul>"
                f"<p>{NEWSLETTER}</p></aside></main><section id='comments'><h3>Comments</h3>{comments}</section>"
                f"<footer><p>{FOOTER}</p><ul>{nav}</ul></footer></body></html>")
    elif template == "divsoup":
        def c():
            return "c" + "".join(rng.choice("abcdef0123456789") for _ in range(5))
        page = (f"<html>{head}<body><div class='{c()}'>{cookie}<div class='{c()}'><div class='{c()}'>The Daily Example</div>"
                f"<div class='{c()}'><ul>{nav}</ul></div></div><div class='{c()}'><div class='{c()}'><div class='{c()}'>"
                f"<h1>{esc(title)}</h1><div class='{c()}'>{author} · {date}</div><div class='{c()}'>{article}</div>"
                f"<div class='{c()}'>Share on Facebook · Share on Twitter · Email</div></div><div class='{c()}'>"
                f"<div>Related stories</div><ul>{related}</ul></div></div><div class='{c()}'><div>{NEWSLETTER}</div></div></div>"
                f"<div class='{c()}'>{comments}</div><div class='{c()}'>{FOOTER}</div></div></body></html>")
    elif template == "table":
        page = (f"<html>{head}<body bgcolor='#ffffff'><table width='100%'><tr><td colspan=2><font size=5>The Daily Example"
                f"</font></td></tr><tr><td width='20%' valign='top'><ul>{nav}</ul><p>{NEWSLETTER}</p></td><td valign='top'>"
                f"<font face='Verdana'><b>{esc(title)}</b><br>by {author}, {date}<br><br>\n{article}</font></td></tr>"
                f"<tr><td colspan=2><small>{FOOTER}</small></td></tr></table></body></html>")
    else:
        page = (f"<html>{head}<body>{cookie}<div id='wrapper'><div id='sidebar' class='widget-area'><h3>Recent posts</h3>"
                f"<ul>{related}</ul><h3>Archives</h3><ul>{nav}</ul></div><div id='content' class='site-content'>"
                f"<div class='post'><h1 class='entry-title'>{esc(title)}</h1><div class='entry-meta'>Posted on {date} by "
                f"{author}</div><div class='entry-content'>{article}</div><div class='tags'>Tags: python, notes</div></div>"
                f"<div id='comments' class='comments-area'><h3>Thoughts on “{esc(title)}”</h3>{comments}<form><textarea>"
                f"</textarea><button>Post comment</button></form></div></div><div id='footer'>{FOOTER}</div></div></body></html>")
    return {"set": f"gen-{template}", "body": page.encode(), "charset": "utf-8", "text": "\n".join(truth)}


def dryrun_pages(generated: int, seed: int) -> list[dict]:
    """The dry-run web's article pages plus `generated` pages from this file's templates, with truth."""
    pages = [
        {"set": "devweb", "body": p.body, "charset": p.content_type.partition("charset=")[2] or None, "text": p.text}
        for p in devweb.plan_pages(DevwebConfig(seed=seed)) if p.kind in ("article", "near_dup", "exact_dup")
    ]
    rng, pool = random.Random(seed), devweb.prose_paragraphs()
    return pages + [generated_page(rng, pool, TEMPLATES[i % len(TEMPLATES)]) for i in range(generated)]




def real_pages(folder: Path, limit: int) -> list[dict]:
    """`folder`'s pages with their true text; each body with the charset the crawl would log for it."""
    truth = folder / "ground_truth.jsonl"
    if not truth.exists():
        raise SystemExit(f"--pages {folder}: no ground_truth.jsonl there (expected html/<id>.html and "
                         "ground_truth.jsonl with {id, url, text} rows)")
    rows = [json.loads(line) for line in truth.read_text(encoding="utf-8").split("\n") if line.strip()]
    pages = []
    for row in rows[:limit or None]:
        body = (folder / "html" / f"{row['id']}.html").read_bytes()
        pages.append({"set": "real", "id": row["id"], "url": row["url"] or URL, "body": body,
                      "charset": detect_charset(None, body), "text": row["text"]})
    return pages


# ---------------------------------------------------------------- the methods

def html_row(name: str):
    """(make its worker, run it on pages -> texts) for an ON_HTML row, BATCH_PAGES pages a message."""
    def run(worker, pages):
        texts = []
        for start in range(0, len(pages), BATCH_PAGES):
            batch = [(name, p["html"], p.get("url", URL)) for p in pages[start:start + BATCH_PAGES]]
            texts += [result if status == "ok" else "" for status, result in worker.map(batch)]
        return texts
    return lambda: IsolatedWorker(extract_rows.on_html, WORKER_TIMEOUT_S, warm_up), run


def stage_row(config: ExtractConfig, outcomes: dict):
    """(make its worker, run it) for the stage's per-document path; each page's outcome goes to
    outcomes[id(page)]."""
    def run(worker, pages):
        texts = []
        for start in range(0, len(pages), BATCH_PAGES):
            batch = pages[start:start + BATCH_PAGES]
            results = extract_documents([(p["body"], p["charset"], p.get("url", URL)) for p in batch], worker, config)
            for p, out in zip(batch, results):
                outcomes[id(p)] = out
                texts.append(out.get("text", ""))
        return texts
    return lambda: IsolatedWorker(process_document, config.timeout_s, warm_up), run


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and of all its child processes, live or ended."""
    ended = resource.getrusage(resource.RUSAGE_CHILDREN)
    live = [child.cpu_times() for child in psutil.Process().children(recursive=True)]
    return time.process_time() + ended.ru_utime + ended.ru_stime + sum(t.user + t.system for t in live)


def measure(rows: list[tuple], pages: list[dict], rounds: int, chunk: int) -> list[dict]:
    """Outputs of each (name, (make_worker, run)) row over all pages, and pages per CPU second.

    Each row runs in a worker process of its own, started afresh every round (so no row reads caches
    another row, or an earlier round, filled), warmed up before the clock starts. CPU seconds of every
    process involved (cpu_seconds), not wall seconds. The rows take turns on each chunk of `chunk` pages,
    in an order rotated per chunk, and each row's CPU seconds are summed over all rounds: on a shared
    machine, other work then falls on all rows alike instead of on whichever ran during a busy spell.
    """
    seconds = {name: 0.0 for name, _ in rows}
    turn = 0
    for _ in range(rounds):
        workers = {name: make() for name, (make, _) in rows}
        try:
            for name, (_, run) in rows:
                run(workers[name], pages[:1])  # start, warm_up, first call
            outputs = {name: [] for name, _ in rows}
            for start in range(0, len(pages), chunk):
                turn = (turn + 1) % len(rows)
                for name, (_, run) in rows[turn:] + rows[:turn]:
                    started = cpu_seconds()
                    outputs[name] += run(workers[name], pages[start:start + chunk])
                    seconds[name] += cpu_seconds() - started
        finally:
            for worker in workers.values():
                worker.stop()
    return [{"name": name, "outputs": outputs[name], "docs_per_s": rounds * len(pages) / seconds[name]}
            for name, _ in rows]


def table_rows(stage_names: list[str], outcomes: dict) -> list[tuple]:
    names = list(extract_rows.ON_HTML)
    rows = [(name, html_row(name)) for name in names[:-2]]
    for name in stage_names:
        config = ExtractConfig(min_tokens=0) if "min_tokens 0" in name else ExtractConfig()
        rows.append((name, stage_row(config, outcomes.setdefault(name, {}))))
    return rows + [(name, html_row(name)) for name in names[-2:]]


# ---------------------------------------------------------------- tables

def report(rows: list[dict], pages: list[dict]) -> None:
    baseline = rows[0]["docs_per_s"]
    sets = sorted({p["set"] for p in pages})
    print(f"{'method':40s} {'P':>6s} {'R':>6s} {'F1':>6s} {'docs/s':>7s} {'x traf':>6s}" +
          ("  " + " ".join(f"{s:>11s}" for s in sets) if len(sets) > 1 else ""))
    for row in rows:
        scores = [token_f1(o, p["text"]) for o, p in zip(row["outputs"], pages)]
        mean = [sum(s[i] for s in scores) / len(scores) for i in range(3)]
        per_set = [sum(s[2] for s, p in zip(scores, pages) if p["set"] == name) / sum(p["set"] == name for p in pages)
                   for name in sets]
        by_set = "  " + " ".join(f"{v:11.3f}" for v in per_set) if len(sets) > 1 else ""
        print(f"{row['name']:40s} {mean[0]:6.3f} {mean[1]:6.3f} {mean[2]:6.3f} {row['docs_per_s']:7.1f} "
              f"{row['docs_per_s'] / baseline:6.2f}{by_set}")


def drops_table(pages: list[dict], outcomes: dict[str, dict]) -> None:
    encoding = get_encoding()
    for name, by_page in outcomes.items():
        dropped = [(p, by_page[id(p)]) for p in pages if by_page[id(p)]["reason"]]
        print(f"\n{name}: {len(dropped)} of {len(pages)} pages dropped (each scores 0): "
              + ", ".join(f"{k} {v}" for k, v in Counter(o["reason"] for _, o in dropped).most_common()))
        for p, out in dropped:
            print(f"  {p['id']:6s} {out['reason']:18s} true text {len(encoding.encode_ordinary(p['text'])):5d} tokens  "
                  f"{out['detail'][:70]}")


def winners_table(pages: list[dict], outcomes: dict) -> None:
    kept = Counter(o["extractor"] for o in outcomes.values() if not o["reason"])
    print("\nWhich extractor's text the stage kept: " + ", ".join(f"{k} {v}" for k, v in kept.most_common()))
    best = Counter()
    for p in pages:
        scores = {e: p["f1"][e] for e in extract_rules.EXTRACTORS}
        top = max(scores.values())
        winners = [e for e, v in scores.items() if v >= top - 0.005]
        best[" = ".join(winners) if len(winners) < 3 else "all three within 0.005"] += 1
    print("Which text scores best per page (within 0.005 F1): " + ", ".join(f"{k} {v}" for k, v in best.most_common()))


# ---------------------------------------------------------------- the real pages' analysis

def candidates(pages: list[dict]) -> None:
    """The texts the rules choose from, per page (untimed): trafilatura fast, resiliparse, newspaper's
    core, trafilatura fast + precision (the previous rule's), the title, whether the page reads as
    English, the words of its links."""
    logging.disable(logging.WARNING)
    for p in pages:
        page = parse_page(p["html"])
        p["traf"], p["res"] = trafilatura_text(page.dom, p["url"]).strip(), resiliparse_text(page.tree).strip()
        p["news"] = newspaper_text(page.html).strip()
        p["traf_precision"] = extract_rows.trafilatura_precision_text(page, p["url"])
        p["title"] = page_title(page, read_meta(page))
        p["english"] = reads_as_english(p["traf"] or p["res"])
        p["anchor_words"] = Counter(w for a in page.dom.iter("a") for w in a.text_content().split()) \
            if page.dom is not None else Counter()


def dryrun_junk() -> dict[str, str]:
    """The dry-run web's junk pages, as our text of them (the path the stage takes)."""
    out = {}
    for p in devweb.plan_pages(DevwebConfig()):
        if p.kind == "junk":
            page = parse_page(scrub(decode_body(p.body, "utf-8")))
            out[p.path.rsplit("/", 1)[1].removesuffix(".html")] = with_title(
                page_title(page, read_meta(page)), main_text(page, URL, SelectionRule())["text"])
    return out


def real_page_analysis(pages: list[dict]) -> None:
    candidates(pages)
    rule = extract_rules.selector_table(pages)
    ours = [with_title(p["title"], {"trafilatura": p["traf"], "resiliparse": p["res"], "newspaper": p["news"]}[
        extract_rules.rule_choice(p, rule)[0]]) for p in pages]
    extract_rules.loss_table(pages, {"trafilatura fast": [p["traf"] for p in pages], "ours": ours})
    encoding = get_encoding()
    articles = [(p, text) for p, text in zip(pages, ours)
                if len(encoding.encode_ordinary(p["text"])) >= 128 and identify_language(p["text"], 0.5)[0] == "en"]
    extract_rules.heuristics_table([p for p, _ in articles], [t for _, t in articles], dryrun_junk())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=Path, help="a folder of html/<id>.html and ground_truth.jsonl")
    parser.add_argument("--limit", type=int, default=0, help="only the first N real pages (0: all)")
    parser.add_argument("--generated", type=int, default=160, help="pages from this file's templates")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds, summed")
    parser.add_argument("--chunk", type=int, default=64, help="pages a method runs on before the next one's turn")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    sets = [("dry-run set", dryrun_pages(args.generated, args.seed), [f"our stage ({BATCH_PAGES} pages/message)"])]
    if args.pages:
        stage_rows = [f"our stage ({BATCH_PAGES} pages/message)", f"our stage, min_tokens 0 ({BATCH_PAGES} pages/msg)"]
        sets.insert(0, (f"real pages ({args.pages})", real_pages(args.pages, args.limit), stage_rows))
    for title, pages, stage_rows in sets:
        for p in pages:
            p["html"] = scrub(decode_body(p["body"], p["charset"]))
        print(f"\n== {title}: {len(pages)} pages, one core, load average {os.getloadavg()[0]:.1f} before the run\n")
        outcomes: dict = {}
        rows = measure(table_rows(stage_rows, outcomes), pages, args.rounds, args.chunk)
        report(rows, pages)
        print(f"load average after: {os.getloadavg()[0]:.1f}")
        if pages[0]["set"] == "real":
            drops_table(pages, outcomes)
            real_page_analysis(pages)
            winners_table(pages, outcomes[stage_rows[1]])


if __name__ == "__main__":
    main()

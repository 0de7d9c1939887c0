"""Extract stage: decoding, isolation, filters, the selector, quality on the dry-run web and on real pages
(../shared/extraction/dragnet_test, skipped when absent), and one run through Ray."""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
import random
import shutil
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from pipeline import devweb, extract
from pipeline.charsets import detect_charset
from pipeline.config import Config, ConfigError, DevwebConfig, ExtractConfig, load_config
from pipeline.extract.heuristics import HEURISTICS, junk_reason
from pipeline.extract.score import mean_f1, token_f1
from pipeline.extract.selector import SelectionRule
from pipeline.text import scrub
from pipeline.runner import RunContext
from upstream import commit_as_upstream

URL = "http://127.0.0.2/story/1"


@functools.cache
def devweb_pages() -> list[devweb.Page]:
    return devweb.plan_pages(DevwebConfig())


def pages_of(kind: str, language: str | None = None) -> list[devweb.Page]:
    return [p for p in devweb_pages() if p.kind == kind and (language is None or p.language == language)]


def charset_of(page: devweb.Page) -> str | None:
    return page.content_type.partition("charset=")[2] or None


@pytest.fixture(scope="module")
def worker():
    with extract.IsolatedWorker(extract.process_document, timeout_s=60.0, warm_up=extract.warm_up) as w:
        yield w


def run_doc(body: bytes, worker, charset: str | None = "utf-8", **overrides) -> dict:
    [out] = extract.extract_documents([(body, charset, URL)], worker, dataclasses.replace(ExtractConfig(), **overrides))
    return out


# ---------------------------------------------------------------- scorer

def test_token_f1_counts_bag_of_tokens():
    assert token_f1("a b c", "a b c") == (1.0, 1.0, 1.0)
    precision, recall, f1 = token_f1("a a b x", "a b c d")
    assert (precision, recall) == (0.5, 0.5) and f1 == pytest.approx(0.5)
    assert token_f1("", "a") == (0.0, 0.0, 0.0) and token_f1("", "") == (1.0, 1.0, 1.0)
    assert mean_f1([("a", "a"), ("b", "c")])[2] == pytest.approx(0.5)


# ---------------------------------------------------------------- decoding and hostile bodies

def test_nul_bytes_and_lone_surrogates_are_scrubbed(worker):
    article = pages_of("article")[0]
    # UTF-7 decodes "+2AA-" to a lone surrogate (U+D800); NULs are sprinkled through the markup.
    body = article.body.replace(b"<p>", b"<p>\x00+2AA-\x00", 3)
    html = extract.decode_body(body, "utf-7")
    assert "\ud800" in html and "\x00" in html  # the hostile input really is hostile
    clean = scrub(html)
    assert "\ud800" not in clean and "\x00" not in clean
    out = run_doc(body, worker, charset="utf-7")
    assert out["reason"] is None, out
    out["text"].encode("utf-8")  # would raise on a lone surrogate
    assert "\x00" not in out["text"] and token_f1(out["text"], article.text)[2] > 0.9


def test_deep_nesting_that_trafilatura_cannot_parse_still_yields_text(worker):
    article = pages_of("article")[1]
    deep = b"<html><body>" + b"<div>" * 5000 + article.body + b"</div>" * 5000 + b"</body></html>"
    assert extract.trafilatura_text(extract.parse_page(deep.decode()).dom, URL) == ""  # the premise: it gives up
    out = run_doc(deep, worker)
    assert out["reason"] is None and out["extractor"] != "trafilatura"
    assert token_f1(out["text"], article.text)[1] > 0.9


def test_multi_megabyte_page_is_cut_before_extraction(worker):
    article = pages_of("article")[2]
    padding = b"<div class='footer-links'><a href='/x'>more links here</a></div>" * 80_000
    body = article.body.replace(b"</body>", padding + b"</body>")
    assert len(body) > 5_000_000
    out = run_doc(body, worker, max_html_bytes=len(article.body) + 50_000)
    assert out["reason"] is None, out
    assert token_f1(out["text"], article.text)[2] > 0.9


def test_binary_and_empty_bodies_get_their_reasons(worker):
    noise = random.Random(0).randbytes(50_000)
    assert run_doc(noise, worker)["reason"] == "binary"
    assert run_doc(noise, worker, charset=None)["reason"] == "binary"
    assert run_doc(b"", worker)["reason"] == "extract_empty"
    assert run_doc(b"<html><head><title>t</title></head><body><img src='/a.png'></body></html>", worker)["reason"] == "extract_empty"


@pytest.mark.parametrize("language", ["ru", "ja"])
def test_legacy_charsets_decode_from_log_or_sniffed(worker, language):
    page = pages_of("non_english", language)[0]
    assert charset_of(page) in ("windows-1251", "shift_jis")
    for charset in (charset_of(page), None):  # None: no charset in the log, so it is sniffed
        # The dry-run web repeats its few foreign paragraphs, so the repeated-lines heuristic is off here.
        out = run_doc(page.body, worker, charset=charset, languages=[], min_tokens=16, heuristics=[])
        assert out["reason"] is None, out
        assert out["language"] == language and out["language_score"] > 0.9
        assert token_f1(out["text"], page.text)[1] > 0.9, out["text"][:300]
    assert run_doc(page.body, worker, charset=charset_of(page), min_tokens=16)["reason"] == "language"


@pytest.mark.parametrize("markup", [
    pages_of("article")[0].body.decode(),
    "<!DOCTYPE html>\n<html><head><title>t</title></head><body><p>One.</p><p>Two.</p></body></html>",
    "<?xml version='1.0' encoding='utf-8'?><html><body><p>Declared.</p><div>Body.</div></body></html>",
    "<html lang='en' />\n<body><p>Self-closing html.</p><p>Second.</p></body>",
    "<p>A lone fragment.</p>",
    "<div><p>Two</p></div><p>blocks, no html tag.</p>",
    "", "   ",
])
def test_our_parse_gives_trafilatura_the_tree_its_own_loader_gives(markup):
    from lxml import etree
    from lxml.html import HtmlElement
    from trafilatura.utils import load_html

    ours, theirs = extract.load_dom(markup), load_html(markup)
    assert (ours is None) == (theirs is None)
    if ours is not None:
        assert etree.tostring(ours) == etree.tostring(theirs)
        assert all(isinstance(e, HtmlElement) for e in ours.iter(etree.Element))
        assert extract.trafilatura_text(ours, URL) == extract.trafilatura_text(theirs, URL)


def test_newspaper_cleaner_queries_find_what_lxml_exslt_finds():
    from newspaper.cleaners import DocumentCleaner
    from newspaper.configuration import Configuration
    from newspaper.parsers import Parser

    cleaner = DocumentCleaner(Configuration())
    queries = [cleaner.nauthy_ids_re, cleaner.nauthy_classes_re, cleaner.nauthy_names_re] + [
        f"//*[re:test(@{attribute}, '{pattern}', 'i')]"
        for pattern in (cleaner.caption_re, cleaner.google_re, cleaner.entries_re, cleaner.facebook_re,
                        cleaner.twitter_re, "^$")  # "^$" matches elements without the attribute too
        for attribute in ("id", "class")
    ]
    markup = pages_of("article")[3].body.decode().replace("<p>", (
        "<div id='SideBar-Comments' class='x'><p class='Caption'>c</p></div><span name='Footer'>f</span>"
        "<i class='a facebook b'>x</i><b id='twitter'>y</b><u class=' google '>g</u><em id=''>e</em><p>"
    ), 2)
    doc = Parser.fromstring(markup)
    for query in queries:
        found = extract.AttributeRegexParser.xpath_re(doc, query)
        assert found == Parser.xpath_re(doc, query), query
    assert extract.AttributeRegexParser.xpath_re(doc, cleaner.nauthy_ids_re)  # the page has matches


def test_an_unsure_language_gets_a_second_look_at_more_text():
    places = "Zürich, München, Kraków, Göteborg, Łódź, Besançon, Århus, Škoda, Citroën, Peugeot, Renault. " * 6
    text = places[: extract.LANGID_CHARS] + " " + PROSE
    first = extract.classify_language(text[: extract.LANGID_CHARS])
    assert first[0] != "en" or first[1] < 0.5  # the premise: the first 500 characters are not clearly English
    assert extract.identify_language(text, 0.5)[0] == "en" and extract.identify_language(text, 0.5)[1] >= 0.5
    assert extract.identify_language(text, 0.0) == first  # sure enough: no second look
    assert extract.filter_document(text, ExtractConfig())["reason"] is None


# ---------------------------------------------------------------- isolation

def test_hanging_call_is_killed_and_the_worker_restarts():
    with extract.IsolatedWorker(time.sleep, timeout_s=0.5) as w:
        assert w.map([(0,)]) == [("ok", None)]
        first_pid = w.process.pid
        started = time.monotonic()
        [(status, detail)] = w.map([(3600,)])
        assert status == "timeout" and time.monotonic() - started < 30
        assert w.process is None  # killed
        assert w.map([(0,)]) == [("ok", None)] and w.process.pid != first_pid and w.starts == 2


@pytest.mark.slow
def test_a_hanging_call_in_a_batch_is_found_and_the_others_are_kept():
    with extract.IsolatedWorker(time.sleep, timeout_s=1.0) as w:
        # A call over its 1 s is a timeout even when it finishes within the batch's 3 x 1 s.
        outcomes = w.map([(0.2,), (1.3,), (0,)])
        assert [status for status, _ in outcomes] == ["ok", "timeout", "ok"] and w.starts == 1
        # The hanging call times the batch out; the calls run again one by one, in a fresh worker after
        # the batch's kill and another after the hanging call's.
        outcomes = w.map([(0.2,), (3600,), (0.2,)])
        assert [status for status, _ in outcomes] == ["ok", "timeout", "ok"] and w.starts == 3


def test_crash_and_exception_are_reported_for_their_call_and_the_worker_restarts():
    with extract.IsolatedWorker(os.abort, timeout_s=30) as w:
        [(status, detail)] = w.map([()])
        assert status == "crash" and "exit code" in detail
    with extract.IsolatedWorker(eval, timeout_s=30) as w:
        outcomes = w.map([("1 + 1",), ("__import__('os').abort()",), ("int('x')",), ("3",)])
        assert outcomes[0] == ("ok", 2) and outcomes[1][0] == "crash" and outcomes[3] == ("ok", 3)
        assert outcomes[2][0] == "error" and "ValueError" in outcomes[2][1] and w.starts == 3


@pytest.mark.slow
def test_slow_extraction_is_counted_as_timeout_and_the_next_document_goes_on():
    article = pages_of("article")[3]
    # ~2.3 s of extraction for 60,000 of these divs here, well past the batch's 3 x 0.4 s, so the batch is
    # killed and rerun page by page (3 worker starts); an article takes ~10 ms.
    slow = article.body.replace(b"</body>", b"<div><a href='/x'>link</a></div>" * 60_000 + b"</body>")
    config = dataclasses.replace(ExtractConfig(), timeout_s=0.4)
    with extract.IsolatedWorker(extract.process_document, config.timeout_s, extract.warm_up) as w:
        pages = [(article.body, "utf-8", URL), (slow, "utf-8", URL), (article.body, "utf-8", URL)]
        outcomes = extract.extract_documents(pages, w, config)
        assert [out["reason"] for out in outcomes] == [None, "extract_timeout", None], outcomes
        assert outcomes[0] == outcomes[2] and w.starts == 3


# ---------------------------------------------------------------- filters

PROSE = " ".join(p.text for p in pages_of("article")[:3])


@pytest.mark.parametrize(
    "text, overrides, reason",
    [
        ("", {}, "extract_empty"),
        ("A short note that ends here.", {}, "too_short"),
        (PROSE, {"max_chars": 1000}, "too_long"),
        (PROSE, {"languages": ["de"]}, "language"),
        (PROSE + " ### ... #" * 400, {}, "junk_symbols"),
        (PROSE + " 12 34 56 78" * 400, {}, "junk_alpha_words"),
        (PROSE + "\nHome | News | Sport | Weather" * 400, {"heuristics": ["junk_repeated_lines"]}, "junk_repeated_lines"),
        ("\n".join(PROSE.replace(".", "").split(", ")), {}, "junk_no_punct"),
        (" ".join(["a b c de."] * 300), {"languages": []}, "junk_short_words"),
        (" ".join(["internationalization-and-localization."] * 300), {"languages": []}, "junk_long_words"),
    ],
)
def test_each_filter_has_its_reason(text, overrides, reason):
    config = dataclasses.replace(ExtractConfig(), **overrides)
    got = extract.filter_document(text, config)
    assert got["reason"] == reason, got
    if reason.startswith("junk_"):  # and each heuristic is off-able
        off = dataclasses.replace(config, heuristics=[h for h in config.heuristics if h != reason])
        assert junk_reason(text, off) is None or junk_reason(text, off)[0] != reason
    assert extract.filter_document(PROSE, ExtractConfig())["reason"] is None


def test_every_heuristic_is_in_the_default_config_and_unknown_ones_are_refused():
    assert sorted(ExtractConfig().heuristics) == sorted(HEURISTICS)
    with pytest.raises(ConfigError, match="junk_nope"):
        load_config(None, ['extract.heuristics=["junk_nope"]'])


def test_true_articles_pass_every_heuristic():
    config = ExtractConfig()
    for page in pages_of("article") + pages_of("near_dup"):
        assert junk_reason(page.text, config) is None, page.path


@pytest.mark.parametrize("kind, reasons", [("links", {"junk_no_punct"}), ("keywords", {"junk_no_punct"}),
                                            ("stub", {"too_short"})])
def test_the_dry_run_webs_junk_pages_are_dropped(worker, kind, reasons):
    [page] = [p for p in pages_of("junk") if p.path.endswith(f"/{kind}.html")]
    assert run_doc(page.body, worker)["reason"] in reasons


# ---------------------------------------------------------------- the selector

def test_newspaper_does_not_decide_cyrillic_or_cjk_pages():
    always = SelectionRule(consult_below=1.0)  # consult whenever the pages' agreement alone would
    english = extract.parse_page(pages_of("article")[0].body.decode())
    assert extract.main_text(english, URL, always)["consulted_newspaper"]  # the premise: the rule would ask
    for language in ("ru", "ja"):
        for page in pages_of("non_english", language):
            main = extract.main_text(extract.parse_page(page.body.decode(charset_of(page))), URL, always)
            assert not main["consulted_newspaper"] and main["extractor"] != "newspaper", page.path


def test_the_benchmark_computes_the_selectors_features_and_choice_as_the_stage_does():
    from benchmarks.extract import candidates
    from benchmarks.extract_rules import prepare, rule_choice

    pages = [{"html": p.body.decode(charset_of(p)), "url": URL, "text": p.text}
             for p in pages_of("article")[:2] + pages_of("non_english", "ru")[:1]]
    pages += [dict(real_page(page_id), url=URL) for page_id in ("R165", "153") if DRAGNET.exists()]
    candidates(pages)
    prepare(pages)
    for rule in (SelectionRule(), SelectionRule(consult_below=1.0)):
        for p in pages:
            main = extract.main_text(extract.parse_page(p["html"]), URL, rule)
            features = p["all_features"] if main["consulted_newspaper"] else p["features"]
            assert main["features"] == features
            assert (main["extractor"], main["consulted_newspaper"]) == rule_choice(p, rule)


# Dragnet's test split (AGPLv3, read from ../shared at test time, never copied into the project).
DRAGNET = Path(__file__).resolve().parents[2] / "shared" / "extraction" / "dragnet_test"


@functools.cache
def dragnet_truth() -> dict[str, dict]:
    rows = (json.loads(line) for line in (DRAGNET / "ground_truth.jsonl").read_text("utf-8").split("\n") if line)
    return {row["id"]: row for row in rows}


def real_page(page_id: str) -> dict:
    """A Dragnet test page decoded as the stage would (the charset the crawl would log), with its true text."""
    if not (DRAGNET / "ground_truth.jsonl").exists():
        pytest.skip(f"{DRAGNET / 'ground_truth.jsonl'} is absent (the real-page set, see ../shared/extraction)")
    body = (DRAGNET / "html" / f"{page_id}.html").read_bytes()
    html = scrub(extract.decode_body(body, detect_charset(None, body)))
    return {"html": html, "text": dragnet_truth()[page_id]["text"]}


@pytest.mark.parametrize("page_id, extractor, consulted", [
    ("R610", "trafilatura", False),  # trafilatura covers resiliparse's text: newspaper is not asked
    ("R165", "newspaper", True),     # trafilatura kept one block; newspaper has the article, inside resiliparse's text
    ("R170", "newspaper", True),
    ("153", "trafilatura", True),    # asked, but newspaper's text is no longer than trafilatura's
    ("R434", "trafilatura", True),   # asked, but most of newspaper's text is not in resiliparse's
    ("176", "trafilatura", False),   # Portuguese: agreement alone would ask newspaper; the language gate does not
])
def test_the_selectors_choice_on_real_pages_is_pinned(page_id, extractor, consulted):
    main = extract.main_text(extract.parse_page(real_page(page_id)["html"]), URL, SelectionRule())
    assert (main["extractor"], main["consulted_newspaper"]) == (extractor, consulted), main["features"]


# Real articles full of lists, tables or repeated lines (the previous bounds dropped each of them).
LIST_AND_TABLE_ARTICLES = ["T51", "R743", "R535", "R794", "161", "R395", "R735", "332", "R266", "R203", "T12",
                           "R757", "R38", "T50"]


@pytest.mark.parametrize("page_id", LIST_AND_TABLE_ARTICLES)
def test_the_heuristics_keep_real_list_and_table_heavy_articles(page_id):
    assert junk_reason(real_page(page_id)["text"], ExtractConfig()) is None


# ---------------------------------------------------------------- quality on the dry-run web

def test_f1_on_the_dry_run_web_beats_the_floor_and_trafilatura_as_its_users_call_it(worker):
    import trafilatura

    pages = pages_of("article") + pages_of("near_dup") + pages_of("exact_dup")
    ours, bare, bare_without_comments = [], [], []
    for page in pages:
        out = run_doc(page.body, worker, charset=charset_of(page))
        assert out["reason"] is None, (page.path, out)
        ours.append((out["text"], page.text))
        bare.append((trafilatura.extract(page.body.decode()) or "", page.text))
        bare_without_comments.append((trafilatura.extract(page.body.decode(), include_comments=False) or "", page.text))
    f1, bare_f1, without_comments_f1 = mean_f1(ours)[2], mean_f1(bare)[2], mean_f1(bare_without_comments)[2]
    # trafilatura.extract(html) keeps the comment threads; with them off it finds what we find on this web.
    assert f1 >= 0.95 and f1 > bare_f1 + 0.005 and f1 >= without_comments_f1, (f1, bare_f1, without_comments_f1)


# ---------------------------------------------------------------- the stage, end to end through Ray

def write_partition(run_dir, pages: list[tuple[str, bytes, str | None]]) -> None:
    """urls/, crawl/warc/ and crawl/log/ partition 0 for (url, body, charset) pages, plus two non-ok rows."""
    import pyarrow as pa

    (run_dir / "crawl" / "warc").mkdir(parents=True)
    (run_dir / "crawl" / "log").mkdir(parents=True)
    (run_dir / "urls").mkdir(parents=True)
    warc_rel = "crawl/warc/part-00000.warc.gz"
    log, urls = [], []
    with open(run_dir / warc_rel, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        for i, (url, body, charset) in enumerate(pages):
            request = writer.create_warc_record(url, "request", http_headers=StatusAndHeaders(
                "GET / HTTP/1.1", [("Host", "127.0.0.2")], is_http_request=True))
            writer.write_record(request)
            offset = f.tell()
            response = writer.create_warc_record(
                url, "response", payload=io.BytesIO(body),
                http_headers=StatusAndHeaders("200 OK", [("Content-Type", "text/html")], protocol="HTTP/1.1"),
                warc_headers_dict={"WARC-Webtext-Source-URI": url},
            )
            writer.write_record(response)
            log.append({"url": url, "final_url": url, "status": 200, "reason": "ok", "content_type": "text/html",
                        "charset": charset, "bytes": len(body), "elapsed_ms": 5, "retries": 0,
                        "warc_file": warc_rel, "warc_offset": offset, "fetched_at": "2024-01-01T00:00:00Z"})
    log.append({**log[0], "url": "http://127.0.0.3/gone", "final_url": None, "status": 404, "reason": "http_4xx",
                "warc_file": None, "warc_offset": None})
    log.append({**log[0], "url": "http://127.0.0.3/damaged", "warc_offset": 3})  # not a record boundary
    for i, row in enumerate(log):
        urls.append({"url": row["url"], "host": row["url"].split("/")[2], "domain": "127.0.0.2", "score_sum": 10 + i,
                     "score_max": 5 + i, "num_submissions": 2, "reddit_ids": [f"t3_{i}"], "subreddits": ["python"],
                     "titles": ["a title"], "created_utc": 1_700_000_000 + i, "over_18": False})
    urls.sort(key=lambda r: r["url"])
    pq.write_table(pa.Table.from_pylist(log), run_dir / "crawl" / "log" / "part-00000.parquet")
    pq.write_table(pa.Table.from_pylist(urls), run_dir / "urls" / "part-00000.parquet")
    commit_as_upstream(run_dir, "urls", [["urls/part-00000.parquet"]])
    commit_as_upstream(run_dir, "crawl", [[warc_rel, "crawl/log/part-00000.parquet"]])


def test_stage_end_to_end_through_ray_is_deterministic(tmp_path, ray_session):
    articles = pages_of("article")[:4]
    russian = pages_of("non_english", "ru")[0]
    pages = [(f"http://127.0.0.2/a/{i}", p.body, "utf-8") for i, p in enumerate(articles)]
    pages += [("http://127.0.0.2/ru", russian.body, None), ("http://127.0.0.2/short", b"<p>Too short.</p>", "utf-8"),
              ("http://127.0.0.2/bin", random.Random(1).randbytes(4000), None)]
    run_dir, again = tmp_path / "run", tmp_path / "again"
    write_partition(run_dir, pages)
    shutil.copytree(run_dir, again)  # the same input bytes (WARC records carry random ids and dates)
    ctx = RunContext(run_dir=run_dir, config=Config())

    stats = extract.run(ctx)

    assert stats["records_in"] == 8 and stats["records_out"] == 4
    assert stats["dropped"] == {"binary": 1, "language": 1, "too_short": 1, "warc_unreadable": 1}
    docs = pq.read_table(run_dir / "docs" / "part-00000.parquet")
    assert docs.schema.equals(extract.DOC_SCHEMA)
    rows = docs.to_pylist()
    assert [r["doc_id"] for r in rows] == sorted(r["doc_id"] for r in rows)
    truth = {url: p.text for (url, _, _), p in zip(pages, articles)}
    for row in rows:
        assert row["doc_id"] == extract.doc_id(row["url"]) and len(row["doc_id"]) == 40
        assert token_f1(row["text"], truth[row["url"]])[2] > 0.9
        assert row["language"] == "en" and row["title"] and row["date"] == "2024-03-" + row["date"][-2:]
        assert row["subreddits"] == ["python"] and row["warc_file"] == "crawl/warc/part-00000.warc.gz"
    rejects = pq.read_table(run_dir / "docs" / "rejects" / "part-00000.parquet").to_pylist()
    assert {r["url"]: r["reason"] for r in rejects} == {
        "http://127.0.0.2/ru": "language", "http://127.0.0.2/short": "too_short",
        "http://127.0.0.2/bin": "binary", "http://127.0.0.3/damaged": "warc_unreadable"}
    assert json.loads((run_dir / "docs" / "stats.json").read_text())["records_out"] == 4

    # Determinism: the same partition made again, outside Ray, in a copy of the run directory.
    extract.extract_partition(extract.partition_specs(RunContext(again, Config()))[0], RunContext(again, Config()))
    for rel in ("docs/part-00000.parquet", "docs/rejects/part-00000.parquet"):
        assert (run_dir / rel).read_bytes() == (again / rel).read_bytes(), rel

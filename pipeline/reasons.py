"""The one vocabulary of reasons: why a record left a stage, each with the stage that counts it.

Every stage counts a partition's records as `in`, `out` and one drop reason per record that did not come
out (in == out + drops, checked by pipeline/runner.py, which refuses a name that is not listed here). A
reason means the same thing wherever it is counted (`url_invalid` is one rule in reddit and in crawl).
Numbers that are not drops (bytes, retries, documents without a near-duplicate candidate) go to a
partition's `info`, never to its drops. `http_NNN` stands for every final HTTP status that is not 200.

The README's table of reasons is this dictionary.
"""

from __future__ import annotations

import re

# reason -> (stages that count it, what it means)
REASONS: dict[str, tuple[str, str]] = {
    # reddit: submission lines -> URLs
    "blank_line": ("reddit", "an empty line"),
    "malformed_json": ("reddit", "a line that is not a JSON object (after removing raw NUL bytes)"),
    "self_post": ("reddit", "`is_self` true: a text post, no link"),
    "score_missing": ("reddit", "no integer `score` (or one beyond 64 bits)"),
    "below_min_score": ("reddit", "`score` < `reddit.min_score` (3: GPT-2's karma rule)"),
    "reddit_post_link": ("reddit", "a link back to a post on reddit itself"),
    "deleted_removed": ("reddit", "removed by moderators or deleted by its author"),
    "nsfw": ("reddit", "`over_18` true while `reddit.nsfw = \"drop\"`"),
    "url_missing": ("reddit", "no `url` string"),
    "url_scheme": ("reddit, crawl", "a scheme other than http/https (input URL or redirect target)"),
    "url_invalid": ("reddit, crawl", "unparseable, no or bad host, bad port, whitespace"),
    "url_too_long": ("reddit, crawl", "longer than `max_url_length` (input URL or redirect target)"),
    "blocked_domain": ("reddit", "host is, or is under, a `reddit.blocked_domains` entry"),
    "blocked_extension": ("reddit", "path ends in a `reddit.blocked_extensions` entry (images, video, ...)"),
    "duplicate_url": ("reddit", "a submission merged into another submission's URL row"),
    "duplicate_submission": ("reddit", "a reddit id seen again (the same month in two dump files)"),
    # crawl: URLs -> fetched HTML pages
    "robots_disallowed": ("crawl", "robots.txt disallows the URL for our user agent"),
    "robots_unavailable": ("crawl", "robots.txt answered 5xx or could not be fetched: the host is skipped"),
    "dns_error": ("crawl", "the host name does not resolve"),
    "blocked_address": ("crawl", "the host resolves or redirects to a loopback/private/reserved address"),
    "connect_error": ("crawl", "no connection (after retries)"),
    "connect_timeout": ("crawl", "no connection within `crawl.connect_timeout_s` (after retries)"),
    "tls_error": ("crawl", "the TLS handshake failed"),
    "fetch_timeout": ("crawl", "the wall-clock deadline per request passed"),
    "truncated_body": ("crawl", "the connection broke mid-body or delivered less than Content-Length"),
    "too_large": ("crawl", "decoded body (or Content-Length) over `crawl.max_body_bytes`"),
    "decode_error": ("crawl", "a Content-Encoding that does not decode or was not asked for"),
    "bad_response": ("crawl", "a response that cannot be parsed as HTTP"),
    "redirect_loop": ("crawl", "a redirect leads back to a URL already visited"),
    "too_many_redirects": ("crawl", "more than `crawl.max_redirects` hops"),
    "http_NNN": ("crawl", "the final status was NNN, not 200 (after retries where they apply)"),
    "unsupported_type": ("crawl", "not HTML/XHTML after sniffing (PDF, images, binary, plain text)"),
    "empty_body": ("crawl", "200 with no bytes"),
    "host_given_up": ("crawl", "the host failed `crawl.host_max_failures` URLs in a row"),
    "internal_error": ("crawl", "a bug: the URL and traceback are printed on stderr"),
    "submission_time_missing": ("crawl", "an archive fetch needs the URL's `created_utc`, and it has none"),
    "archive_no_capture": ("crawl", "the archive has no capture within `crawl.archive.max_distance_days` of the "
                                    "submission"),
    "archive_bad_capture": ("crawl", "the archive's captures in that window are none a 200 HTML page"),
    "archive_unavailable": ("crawl", "the archive's CDX or replay failed or could not be reached (after retries)"),
    "archive_truncated": ("crawl", "the archived record fetched is shorter than its index or headers say"),
    "archive_record_invalid": ("crawl", "the index's filename, offset and length do not give one WARC response "
                                        "record"),
    # extract: pages -> documents
    "warc_unreadable": ("extract", "the crawl log points at no readable WARC response record"),
    "binary": ("extract", "the body is not text in any charset"),
    "extract_empty": ("extract", "no main text found"),
    "extract_timeout": ("extract", "extraction ran past `extract.timeout_s`; its worker was killed"),
    "extract_crash": ("extract", "extraction crashed its worker process"),
    "too_long": ("extract", "more than `extract.max_chars` characters"),
    "too_short": ("extract", "fewer than `extract.min_tokens` GPT-2 tokens"),
    "language": ("extract", "not in `extract.languages`, or identified below `extract.min_language_score`"),
    "junk_symbols": ("extract", "too many '#' and '...' symbols per word (Gopher)"),
    "junk_alpha_words": ("extract", "too few words with a letter (Gopher)"),
    "junk_repeated_lines": ("extract", "too many repeated lines (Gopher)"),
    "junk_no_punct": ("extract", "too few words end a sentence (after C4): menus, link and keyword lists"),
    "junk_short_words": ("extract", "mean word length too short (Gopher)"),
    "junk_long_words": ("extract", "mean word length too long (Gopher)"),
    # dedup: documents -> unique documents
    "duplicate_exact": ("dedup", "same normalized text as the cluster's survivor"),
    "duplicate_fuzzy": ("dedup", "a near-duplicate (MinHash LSH, verified Jaccard) of the cluster's survivor"),
    # decontaminate: documents -> documents without eval passages
    "contaminated": ("decontaminate", "split more than `decontaminate.max_splits` times by eval n-gram removals"),
    "contaminated_fragments": ("decontaminate", "every piece left after removing eval passages is under "
                                                "`decontaminate.min_piece_chars` characters"),
    # tokenize: documents -> token shards
    "empty_text": ("tokenize", "a document with no text"),
    "missing_doc_id": ("tokenize", "a document with no doc_id"),
    # finetune: task records -> token sequences (training/tasks.py)
    "answer_too_long": ("finetune", "the part never cut (a hypothesis, an answer) and the special tokens exceed "
                                    "`finetune.max_len`"),
}

_HTTP_STATUS = re.compile(r"http_[1-5]\d\d")


def is_reason(name: str) -> bool:
    """Whether `name` is in the vocabulary (an http_NNN status counts as http_NNN)."""
    return name in REASONS or bool(_HTTP_STATUS.fullmatch(name))

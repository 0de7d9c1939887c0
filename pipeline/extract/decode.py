"""Crawled bytes -> text the extractors can parse.

`decode_body(body, charset)` decodes with the crawl log's charset when Python knows it as a text
encoding (pipeline/charsets.py, shared with the crawl), else with the one resiliparse sniffs (HTML meta,
then byte statistics), else UTF-8, always with errors="replace". `binary_share(html)` is the share of
U+FFFD and control characters in the first 8 KB: above BINARY_MAX_SHARE the page is `binary`. The stage
then scrubs the text (pipeline/text.py) so no extractor or Parquet writer sees a NUL or a lone surrogate.
"""

from __future__ import annotations

from resiliparse.parse.encoding import detect_encoding

from pipeline.charsets import codec_name
from pipeline.text import CONTROL_CHARS

BINARY_PROBE_CHARS = 8_192
BINARY_MAX_SHARE = 0.1


def sniff_codec(body: bytes) -> str:
    return codec_name(detect_encoding(body, from_html_meta=True)) or "utf-8"


def decode_body(body: bytes, charset: str | None) -> str:
    """Bytes -> str with the given charset, else a sniffed one; undecodable bytes become U+FFFD."""
    codec = codec_name(charset) or sniff_codec(body)
    try:
        return body.decode(codec, errors="replace")
    except UnicodeError:  # codecs such as idna fail even with errors="replace"
        return body.decode("utf-8", errors="replace")


def binary_share(html: str) -> float:
    """Share of U+FFFD and control characters at the start of a decoded page (high for images, PDFs)."""
    probe = html[:BINARY_PROBE_CHARS]
    bad = probe.count("\ufffd") + len(CONTROL_CHARS.findall(probe))
    return bad / max(1, len(probe))

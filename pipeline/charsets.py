"""Charset labels and HTML charsets: the one place where crawl and extract agree on what a label means.

- `codec_name(label)`: a charset label from a header, a `<meta>` or a crawl log -> the Python codec name
  that reads it, or None. Labels are matched case-insensitively with quotes and spaces stripped; the WHATWG
  Encoding Standard's aliases apply (latin-1 and ASCII labels mean windows-1252 in every browser); codecs
  that are not text encodings (base64, rot13, zlib, ...) are refused.
- `detect_charset(declared, body)`: the charset of an HTML body in browser order: byte order mark, the
  declared (Content-Type) charset, `<meta>` in the first 4 KB, then charset-normalizer on the first 64 KB,
  else UTF-8.
"""

from __future__ import annotations

import codecs
import re

import charset_normalizer

META_SCAN_BYTES = 4096
DETECT_BYTES = 65536
BOMS = [(codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")]
META_CHARSET = re.compile(rb"""<meta[^>]*?charset\s*=\s*["']?\s*([a-zA-Z0-9_.:-]+)""", re.IGNORECASE)
# WHATWG Encoding Standard: these labels mean windows-1252 (and x-sjis Shift_JIS) in every browser.
WHATWG_ALIASES = {"iso-8859-1": "cp1252", "iso8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252",
                  "l1": "cp1252", "ascii": "cp1252", "us-ascii": "cp1252", "x-sjis": "shift_jis"}


def codec_name(label: str | None) -> str | None:
    """A charset label as a Python text codec name, with the WHATWG aliases; None when Python has no such
    text codec."""
    if not label:
        return None
    label = label.strip().strip("\"'").strip().lower()
    try:
        info = codecs.lookup(WHATWG_ALIASES.get(label, label))
    except (LookupError, ValueError):
        return None
    return info.name if getattr(info, "_is_text_encoding", True) else None


def detect_charset(declared: str | None, body: bytes) -> str:
    """Charset of an HTML body: BOM, then the declared one, then <meta>, then detection, else UTF-8."""
    for bom, encoding in BOMS:
        if body.startswith(bom):
            return encoding
    name = codec_name(declared)
    if name:
        return name
    match = META_CHARSET.search(body[:META_SCAN_BYTES])
    name = codec_name(match.group(1).decode("ascii")) if match else None
    if name:
        # A <meta> that could be read as ASCII cannot be UTF-16 (WHATWG); such pages are really UTF-8.
        return "utf-8" if name.startswith("utf-16") else name
    best = charset_normalizer.from_bytes(body[:DETECT_BYTES]).best()
    if best is None or best.encoding == "ascii":  # pure ASCII reads the same as UTF-8
        return "utf-8"
    return codec_name(best.encoding) or "utf-8"

"""Content types: what a response's header declares and what its first bytes show (pure functions).

The declared type decides unless it is missing, generic (application/octet-stream, text/plain, ...) or HTML
whose first bytes are binary or a known file signature; then the bytes decide, by a subset of the WHATWG MIME
sniffing rules (file signatures, HTML and XHTML markup starts, binary bytes).
"""

from __future__ import annotations

import codecs
import re

SNIFF_BYTES = 1024

# Declared types that say nothing about the bytes; the body decides instead.
GENERIC_TYPES = frozenset({"", "application/octet-stream", "text/plain", "unknown/unknown", "application/unknown",
                           "*/*", "binary/octet-stream"})
# File signatures (WHATWG MIME sniffing plus a few common formats): bytes at offset 0 -> type.
SIGNATURES = [
    (b"%PDF-", "application/pdf"), (b"\x89PNG\r\n\x1a\n", "image/png"), (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"), (b"\xff\xd8\xff", "image/jpeg"), (b"PK\x03\x04", "application/zip"),
    (b"\x1f\x8b\x08", "application/gzip"), (b"OggS\x00", "application/ogg"), (b"ID3", "audio/mpeg"),
    (b"\x1aE\xdf\xa3", "video/webm"), (b"%!PS-Adobe-", "application/postscript"), (b"wOFF", "font/woff"),
    (b"wOF2", "font/woff2"), (b"\x00\x00\x01\x00", "image/x-icon"), (b"Rar!\x1a\x07", "application/x-rar"),
    (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"), (b"\x7fELF", "application/x-executable"),
]
# A document starting (after whitespace) with one of these, followed by space or ">", is HTML (WHATWG, plus
# <meta> and <link>, which real pages put first often enough).
HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<script", b"<iframe", b"<h1", b"<div", b"<font",
               b"<table", b"<a", b"<style", b"<title", b"<b", b"<body", b"<br", b"<p", b"<meta", b"<link")
BINARY_BYTE = re.compile(rb"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f]")
BOMS = [(codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")]


def parse_content_type(value: str | None) -> tuple[str, str | None]:
    """'text/html; charset="UTF-8"' -> ("text/html", "UTF-8"); missing -> ("", None)."""
    if not value:
        return "", None
    media, *params = value.split(";")
    charset = None
    for param in params:
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset":
            charset = val.strip().strip("\"'") or None
    return media.strip().lower(), charset


def sniff_type(body: bytes) -> str:
    """The type the first bytes show: a file signature, HTML/XHTML markup, binary bytes, else text/plain."""
    head = body[:SNIFF_BYTES]
    for signature, media in SIGNATURES:
        if head.startswith(signature):
            return media
    if head[4:8] == b"ftyp":
        return "video/mp4"
    text, had_bom = head, False
    for bom, encoding in BOMS:
        if head.startswith(bom):
            text = head[len(bom):].decode(encoding, "ignore").encode("ascii", "ignore")
            had_bom = True
            break
    start = text.lstrip(b"\t\n\x0c\r ").lower()
    if start.startswith(b"<!--"):
        return "text/html"
    for tag in HTML_STARTS:
        if start.startswith(tag) and start[len(tag):len(tag) + 1] in (b" ", b">", b"\t", b"\n", b"\r", b"/"):
            return "text/html"
    if start.startswith(b"<?xml"):
        return "application/xhtml+xml" if b"<html" in start else "text/xml"
    if not had_bom and BINARY_BYTE.search(head):
        return "application/octet-stream"
    return "text/plain"


def effective_type(declared: str, body: bytes, allowed: list[str]) -> str:
    """The content type we believe: the declared one unless it is generic or claims HTML over binary bytes."""
    if declared in GENERIC_TYPES:
        return sniff_type(body)
    if declared in allowed:
        sniffed = sniff_type(body)
        if sniffed not in ("text/html", "application/xhtml+xml", "text/xml", "text/plain"):
            return sniffed  # the header lies: a PDF, an image or binary bytes labelled as HTML
    return declared

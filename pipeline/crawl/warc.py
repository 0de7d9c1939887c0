"""The crawl's WARC file: gzip-per-record WARC/1.1, written by one task into one open binary file.

A warcinfo record first, then per fetched page a response record and its request record. The response's
WARC-Target-URI is the URL the page was fetched from (after redirects), `WARC-Webtext-Source-URI` the input
URL. The payload is the decoded body: as Common Crawl does, the transfer headers that no longer describe it
are renamed (`Content-Encoding` -> `X-Crawler-Content-Encoding`, same for Transfer-Encoding and
Content-Length) and Content-Length is the decoded length, so any WARC reader gets the page bytes back
unchanged. Records are assembled here (the HTTP header blocks as warcio's StatusAndHeaders writes them) and
each is compressed as one gzip member in one call with ISA-L, so any gzip reader (warcio, zlib) reads them;
`write_page` returns the offset of the response record's gzip member, which the crawl log keeps.

Pages from a web archive: a replayed page is written the same way, with the URL and time it was captured as
WARC-Target-URI and WARC-Date and the replay URL as `WARC-Webtext-Archive-URI`; a record fetched by byte
range from a WARC file (Common Crawl) is copied as it came, its own gzip member, headers and dates.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from datetime import datetime, timezone
from typing import BinaryIO

from isal import isal_zlib
from warcio.statusandheaders import StatusAndHeaders

from pipeline.config import CrawlConfig

WARC_GZIP_LEVEL = 2  # ISA-L levels are 0-3; 0-2 cost the same, output as small as zlib level 1's
# HTTP transfer headers that no longer describe the stored (decoded) payload: renamed, as Common Crawl does.
TRANSFER_HEADERS = frozenset({"content-encoding", "transfer-encoding", "content-length"})


def sha1_digest(*parts: bytes) -> str:
    """A WARC digest label as warcio writes it ("sha1:" + base32), of the concatenated parts."""
    digest = hashlib.sha1()
    for part in parts:
        digest.update(part)
    return "sha1:" + base64.b32encode(digest.digest()).decode("ascii")


EMPTY_DIGEST = sha1_digest()


def http_head(statusline: str, headers: list[tuple[str, str]], *, protocol: str = "",
              request: bool = False) -> bytes:
    """An HTTP header block as warcio's StatusAndHeaders writes it (non-ASCII values %-encoded, RFC 8187)."""
    block = StatusAndHeaders(statusline, headers, protocol=protocol, is_http_request=request)
    block.compute_headers_buffer()
    return block.headers_buff


def record_id() -> str:
    return f"<urn:uuid:{uuid.uuid4()}>"


def warc_record(fields: list[tuple[str, str]], block: list[bytes], date: str = "") -> bytes:
    """One WARC/1.1 record, uncompressed: `fields`, then WARC-Date (now unless given) and Content-Length, then
    the block."""
    date = date or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # microseconds, as warcio does
    head = "".join(f"{name}: {value}\r\n" for name, value in fields)
    length = sum(len(part) for part in block)
    return b"".join([f"WARC/1.1\r\n{head}WARC-Date: {date}\r\nContent-Length: {length}\r\n\r\n".encode(),
                     *block, b"\r\n\r\n"])


class WarcFile:
    """Appends gzip-per-record WARC records to an open binary file and returns response-record offsets."""

    def __init__(self, out: BinaryIO, config: CrawlConfig):
        self.out = out
        info = (f"software: webtext crawl (pipeline/crawl)\r\nhttp-header-user-agent: {config.user_agent}\r\n"
                f"format: WARC File Format 1.1\r\nrobots: obey\r\n").encode()
        self._append(warc_record([("WARC-Type", "warcinfo"), ("WARC-Record-ID", record_id()),
                                  ("Content-Type", "application/warc-fields"),
                                  ("WARC-Block-Digest", sha1_digest(info))], [info]))

    def _append(self, record: bytes) -> int:
        offset = self.out.tell()
        self.out.write(isal_zlib.compress(record, WARC_GZIP_LEVEL, 16 + isal_zlib.MAX_WBITS))
        return offset

    def write_page(self, source_url: str, response, target_uri: str = "", date: str = "",
                   archive_uri: str = "") -> int:
        """Write the response and request records of a fetched page (a fetcher Response); return the response
        record's offset. A page replayed from an archive gives the URL and time it was captured
        (`target_uri`, `date`) and the replay URL it was fetched from (`archive_uri`)."""
        headers = []
        for name, value in response.raw_headers:
            name = name.decode("latin-1")
            if name.lower() in TRANSFER_HEADERS:
                name = "X-Crawler-" + name
            headers.append((name, value.decode("latin-1")))
        headers.append(("Content-Length", str(len(response.body))))
        head = http_head(f"{response.status} {response.status_text}", headers, protocol=response.protocol)
        response_id, target_uri = record_id(), target_uri or response.url
        provenance = [("WARC-Webtext-Archive-URI", archive_uri)] if archive_uri else []
        offset = self._append(warc_record([
            ("WARC-Type", "response"), ("WARC-Record-ID", response_id), ("WARC-Target-URI", target_uri),
            ("WARC-Webtext-Source-URI", source_url), *provenance,
            ("Content-Type", "application/http; msgtype=response"),
            ("WARC-Payload-Digest", sha1_digest(response.body)),
            ("WARC-Block-Digest", sha1_digest(head, response.body))], [head, response.body], date))
        request = http_head(f"GET {response.request_target} HTTP/1.1", list(response.request_headers.items()),
                            request=True)
        self._append(warc_record([
            ("WARC-Type", "request"), ("WARC-Record-ID", record_id()), ("WARC-Target-URI", target_uri),
            ("WARC-Concurrent-To", response_id),
            ("Content-Type", "application/http; msgtype=request"), ("WARC-Payload-Digest", EMPTY_DIGEST),
            ("WARC-Block-Digest", sha1_digest(request))], [request], date))
        return offset

    def copy_record(self, member: bytes) -> int:
        """Append a gzip member holding one WARC record (from a Common Crawl file) unchanged; return its offset."""
        offset = self.out.tell()
        self.out.write(member)
        return offset

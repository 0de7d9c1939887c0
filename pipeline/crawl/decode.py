"""Content-Encoding decoding with bounded output, so a compression bomb costs at most the size cap.

`BodyDecoder(encoding).feed(chunk, limit)` returns at most `limit` decoded bytes per call (zlib's max_length,
brotli's output_buffer_limit); gzip, deflate (zlib-wrapped, or raw as some servers send it), br and identity.
Anything else, or bytes that do not decode, raise FetchError("decode_error").
"""

from __future__ import annotations

import zlib

import brotli

from pipeline.crawl.log import FetchError


class BodyDecoder:
    """Content-Encoding decoding with bounded output: `feed` never returns more than `limit` bytes."""

    def __init__(self, encoding: str):
        self.encoding = encoding.strip().lower()
        # Some servers send "deflate" as raw deflate without the zlib header: retried as such on the first chunk.
        self.raw_deflate_fallback = self.encoding == "deflate"
        if self.encoding in ("", "identity"):
            self.inflate = None
        elif self.encoding in ("gzip", "x-gzip"):
            self.inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif self.encoding == "deflate":
            self.inflate = zlib.decompressobj(zlib.MAX_WBITS)
        elif self.encoding == "br":
            self.inflate = brotli.Decompressor()
        else:
            raise FetchError("decode_error")

    def feed(self, data: bytes, limit: int) -> bytes:
        try:
            if self.inflate is None:
                return data[:limit]
            if self.encoding == "br":
                return self.inflate.process(data, output_buffer_limit=limit)
            try:
                out = self.inflate.decompress(data, limit)
            except zlib.error:
                if not self.raw_deflate_fallback:
                    raise
                self.inflate = zlib.decompressobj(-zlib.MAX_WBITS)
                out = self.inflate.decompress(data, limit)
            self.raw_deflate_fallback = False
            return out
        except (zlib.error, brotli.error) as err:
            raise FetchError("decode_error") from err

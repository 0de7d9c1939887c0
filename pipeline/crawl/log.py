"""The crawl log: one row per input URL with its outcome, and the runner's counts made from the rows.

The schema and the reasons are documented in pipeline/crawl/__init__.py. `FetchError` carries the reason of
a request that produced no usable response; `finish` stamps a row with its reason when it is decided.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pyarrow as pa

LOG_SCHEMA = pa.schema([
    ("url", pa.string()),
    ("final_url", pa.string()),
    ("status", pa.int32()),
    ("reason", pa.string()),
    ("content_type", pa.string()),
    ("charset", pa.string()),
    ("bytes", pa.int64()),
    ("elapsed_ms", pa.int64()),
    ("retries", pa.int32()),
    ("warc_file", pa.string()),
    ("warc_offset", pa.int64()),
    ("fetched_at", pa.string()),
    ("source", pa.string()),
    ("capture_time", pa.string()),
    ("archive_url", pa.string()),
    ("live_reason", pa.string()),
])


class FetchError(Exception):
    """A request that produced no usable response; `reason` is the log reason."""

    def __init__(self, reason: str, retryable: bool = False, mid_body: bool = False):
        super().__init__(reason)
        self.reason, self.retryable, self.mid_body = reason, retryable, mid_body  # mid_body: after the headers


@dataclass
class LogRow:
    url: str
    final_url: str
    status: int = 0
    reason: str = ""
    content_type: str | None = None
    charset: str | None = None
    bytes: int = 0
    elapsed_ms: int = 0
    retries: int = 0
    warc_file: str | None = None
    warc_offset: int | None = None
    fetched_at: str = ""
    source: str = "live"
    capture_time: str | None = None
    archive_url: str | None = None
    live_reason: str | None = None
    elapsed_s: float = field(default=0.0, repr=False)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def finish(row: LogRow, reason: str) -> LogRow:
    """The row with its reason, its request time in ms and the time the outcome was decided."""
    row.reason = reason
    row.elapsed_ms = round(row.elapsed_s * 1000)
    row.fetched_at = utc_now()
    return row


def log_table(rows: list[LogRow]) -> pa.Table:
    columns = {name: [getattr(row, name) for row in rows] for name in LOG_SCHEMA.names}
    return pa.table(columns, schema=LOG_SCHEMA)


def outcome_counts(rows: list[LogRow]) -> dict[str, int]:
    """Runner counts: in = URLs, out = "ok" pages, every other reason a drop key."""
    counts = Counter(row.reason for row in rows)
    return {"in": len(rows), "out": counts.pop("ok", 0), **counts}

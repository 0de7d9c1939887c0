"""Local web archives for dry runs, tests and benchmarks: WARC captures, a Common-Crawl-style server, pywb.

- `write_warc(path, captures)`: WARC/1.1 response records (gzip per record, warcio) of `Capture`s, each at
  its own date; returns their CDX rows (url, timestamp, mime, status, digest, filename, offset, length).
- `serving(archive_dir, host, port)`: a plain HTTP server in a background thread over `archive_dir`
  (its `index.jsonl` of CDX rows and the WARC files beside it), in the manner of Common Crawl:
  `GET /cdx?url=U&output=json[&closest=TS&sort=closest][&from=TS&to=TS][&limit=N]` answers the captures of U
  (exact URL), closest first, one JSON object per line, or 404 with a JSON message when there is none (as
  index.commoncrawl.org does); `GET /warcs/<file>` serves the WARC files with byte ranges (`Range:`).
- `pywb_bin()` and `serving_pywb(root, warcs, host, port)` (yields its base URL and pid): a real pywb (`wayback`) over a collection made
  from WARC files with `wb-manager`, started as a subprocess. pywb cannot share the project's environment
  (it pins versions of cryptography and Werkzeug and brings brotlipy, which replaces the brotli module), so
  it lives in its own virtual environment: `$WEBTEXT_PYWB_BIN` names that environment's bin directory,
  else `wayback` is looked up on PATH; `pywb_bin()` is None when neither has it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

INDEX = "index.jsonl"
STATUS_TEXT = {200: "OK", 301: "Moved Permanently", 302: "Found", 404: "Not Found", 500: "Internal Server Error"}


@dataclass(frozen=True)
class Capture:
    """One archived response: the URL, when it was captured, and what the server answered then."""

    url: str
    when: datetime
    body: bytes
    status: int = 200
    content_type: str = "text/html; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


def timestamp(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y%m%d%H%M%S")


def write_warc(path: Path, captures: list[Capture]) -> list[dict]:
    """The captures as gzip-per-record WARC response records in `path`; their CDX rows, in file order."""
    rows = []
    with open(path, "wb") as out:
        writer = WARCWriter(out, gzip=True, warc_version="1.1")
        for capture in captures:
            given = {name.lower() for name, _ in capture.headers}
            headers = [("Content-Type", capture.content_type), *capture.headers]
            if "content-length" not in given:  # a capture may state a length its body does not have
                headers.append(("Content-Length", str(len(capture.body))))
            http = StatusAndHeaders(f"{capture.status} {STATUS_TEXT.get(capture.status, 'Status')}", headers,
                                    protocol="HTTP/1.1")
            date = capture.when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            record = writer.create_warc_record(capture.url, "response", payload=io.BytesIO(capture.body),
                                               http_headers=http, warc_headers_dict={"WARC-Date": date})
            offset = out.tell()
            writer.write_record(record)
            rows.append({"url": capture.url, "timestamp": timestamp(capture.when),
                         "mime": capture.content_type.split(";")[0].strip(), "status": str(capture.status),
                         "digest": record.rec_headers.get_header("WARC-Payload-Digest", "").split(":")[-1],
                         "filename": path.name, "offset": str(offset), "length": str(out.tell() - offset)})
    return rows


def write_index(archive_dir: Path, rows: list[dict]) -> None:
    """The CDX rows of an archive directory, sorted by URL and time, as `serving` reads them."""
    rows = sorted(rows, key=lambda r: (r["url"], r["timestamp"]))
    (Path(archive_dir) / INDEX).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


# ----------------------------------------------------------------------------------------------------------
# The Common-Crawl-style server.


def _bound(value: str, high: bool) -> str:
    """A CDX from/to timestamp of up to 14 digits, padded to the earliest or latest time it covers."""
    return (value + ("99991231235959" if high else "00000101000000")[len(value):])[:14] if value else ""


def _seconds(ts: str) -> float:
    return datetime.strptime(_bound(ts, False), "%Y%m%d%H%M%S").replace(tzinfo=timezone.utc).timestamp()


def cdx_answer(rows: list[dict], query: dict[str, str]) -> list[dict]:
    """The rows a CDX query selects: exact URL, within from/to, closest first when asked, at most limit."""
    low, high = _bound(query.get("from", ""), False), _bound(query.get("to", ""), True)
    found = [r for r in rows if r["url"] == query.get("url") and (not low or r["timestamp"] >= low)
             and (not high or r["timestamp"] <= high)]
    if query.get("sort") == "closest" and query.get("closest"):
        target = _seconds(query["closest"])
        found.sort(key=lambda r: (abs(_seconds(r["timestamp"]) - target), r["timestamp"]))
    limit = int(query.get("limit") or 0)
    return found[:limit] if limit > 0 else found


def archive_app(archive_dir: Path, middlewares=()):
    from aiohttp import web

    archive_dir = Path(archive_dir)
    rows = [json.loads(line) for line in (archive_dir / INDEX).read_text().splitlines() if line.strip()]

    async def cdx(request: web.Request) -> web.Response:
        found = cdx_answer(rows, dict(request.query))
        if not found:
            return web.json_response({"message": f"No Captures found for: {request.query.get('url')}"}, status=404)
        return web.Response(text="".join(json.dumps(r) + "\n" for r in found), content_type="text/x-ndjson")

    async def warc(request: web.Request) -> web.StreamResponse:
        path = archive_dir / request.match_info["name"]
        if path.parent != archive_dir or not path.is_file():
            return web.Response(status=404, text="no such file")
        return web.FileResponse(path)

    app = web.Application(middlewares=list(middlewares))
    app.router.add_get("/cdx", cdx)
    app.router.add_get("/warcs/{name}", warc)
    return app


@contextlib.contextmanager
def serve_app(app, host: str, port: int):
    """Serve an aiohttp application on host:port from a background thread; yields the base URL."""
    from aiohttp import web

    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)

    async def start():
        await runner.setup()
        await web.TCPSite(runner, host, port).start()

    thread = threading.Thread(target=loop.run_forever, name=f"serve-{host}", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
    try:
        yield f"http://{host}:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


def serving(archive_dir: Path, host: str, port: int, middlewares=()):
    """Serve `archive_dir` Common-Crawl-style on host:port from a background thread; yields the base URL."""
    return serve_app(archive_app(archive_dir, middlewares), host, port)


# ----------------------------------------------------------------------------------------------------------
# pywb.


def pywb_bin() -> Path | None:
    """The bin directory holding pywb's `wayback` and `wb-manager`, or None when pywb is not installed."""
    named = os.environ.get("WEBTEXT_PYWB_BIN")
    if named:
        return Path(named).resolve() if (Path(named) / "wayback").exists() else None
    found = shutil.which("wayback")
    return Path(found).parent if found else None


def _wait_listening(host: str, port: int, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"pywb's wayback exited with {process.returncode} before listening on {host}:{port}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.2)
    raise RuntimeError(f"pywb's wayback did not listen on {host}:{port} within {timeout_s:.0f} s")


@dataclass(frozen=True)
class Pywb:
    base: str  # the collection's URL: `{base}cdx` is its CDX endpoint, `{base}{timestamp}id_/{url}` a raw replay
    pid: int


@contextlib.contextmanager
def serving_pywb(root: Path, warcs: list[Path], host: str, port: int, collection: str = "archive"):
    """pywb's `wayback` over a collection of `warcs` built in `root`, until the block ends."""
    bin_dir = pywb_bin()
    if bin_dir is None:
        raise RuntimeError("pywb is not installed: set WEBTEXT_PYWB_BIN to the bin directory of a venv with pywb")
    root.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH="")  # pywb's own environment, not the project's
    if not (root / "collections" / collection).exists():
        subprocess.run([str(bin_dir / "wb-manager"), "init", collection], cwd=root, env=env, check=True,
                       capture_output=True)
    subprocess.run([str(bin_dir / "wb-manager"), "add", collection, *map(str, warcs)], cwd=root, env=env,
                   check=True, capture_output=True)
    log = open(root / "wayback.log", "ab")
    process = subprocess.Popen([str(bin_dir / "wayback"), "-b", host, "-p", str(port)], cwd=root, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_listening(host, port, process, 60)
        yield Pywb(f"http://{host}:{port}/{collection}/", process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()

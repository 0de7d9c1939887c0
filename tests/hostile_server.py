"""A real, misbehaving HTTP/1.1 server on several loopback addresses, for the crawler's tests.

Written on raw asyncio streams, not a web framework, because half of its endpoints break HTTP on purpose:
a missing Content-Type, a body shorter than Content-Length, a TCP reset mid-body, a byte-at-a-time drip.
It runs in a child process and listens on one port on each of the given 127.0.0.N addresses (each address is
a separate "host" for the crawler), answering one request per connection. Every request is recorded in
`access_log` with the address it arrived on, the kernel's receive time of its first bytes and the time its
response ended, so politeness is checked from the server's side and not skewed by process scheduling.

Endpoints (same on every host):
  /robots.txt                per host: text given to the constructor, a status code, or 404 by default
  /page/<any>                200 HTML (UTF-8)
  /gzipped                   200 HTML sent with Content-Encoding: gzip
  /slow/<ms>/<any>           200 HTML after <ms> milliseconds
  /redirect/<n>              302 -> /redirect/<n-1> ... /redirect/0 -> /page/final
  /loop/a, /loop/b           302 to each other
  /to?url=<absolute url>     302 to that URL
  /status/<code>             that status with a small HTML body
  /flaky/<key>               500 on the first request for <key>, then 200 HTML
  /retry-after/<s>/<key>     503 with Retry-After: <s> on the first request for <key>, then 200 HTML
  /drip                      200 with Content-Length 100000, then one byte every 50 ms
  /big/<bytes>               200 HTML of that many bytes, streamed
  /bomb/<gzip|deflate|br>    200 HTML whose encoded body decodes to 50 MB of spaces
  /pdf, /png                 a PDF and a PNG with their true types
  /no-type                   HTML with no Content-Type header
  /binary-as-html            random bytes (with NULs) labelled text/html
  /cp1251-meta               Russian text in windows-1251, declared only by <meta charset>
  /cp1251-header             the same, declared only by the Content-Type charset
  /sjis                      Japanese text in Shift_JIS, declared nowhere
  /malformed                 tag soup: unclosed and misnested tags
  /empty                     200 text/html with an empty body
  /reset                     Content-Length 20000, 5000 bytes, then a TCP reset
  /short                     Content-Length 20000, 5000 bytes, then a clean close
"""

from __future__ import annotations

import asyncio
import gzip
import multiprocessing
import random
import socket
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import brotli

RUSSIAN = ("Москва — столица России, город федерального значения. Это крупнейший по численности населения "
           "город страны и самый населённый из городов, полностью расположенных в Европе. ") * 8
JAPANESE = ("吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。何でも薄暗いじめじめした所で"
            "ニャーニャー泣いていた事だけは記憶している。吾輩はここで始めて人間というものを見た。") * 8
BOMB_BYTES = 50_000_000
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux's value; Python does not export the name


def html_page(title: str, body_text: str) -> str:
    return (f"<!DOCTYPE html><html><head><title>{title}</title></head><body><h1>{title}</h1>"
            f"<p>{body_text}</p></body></html>")


def page_bytes(path: str) -> bytes:
    """The body /page/..., /slow/..., /gzipped (decoded) and the retried endpoints answer for `path`."""
    return html_page(path, "A plain page for the crawler tests. " * 20).encode()


@dataclass
class Access:
    host: str  # the 127.0.0.N address the connection arrived on
    path: str
    start: float  # time.time() at which the kernel received the request's first bytes
    end: float = 0.0  # time.time() when the response was finished or the connection dropped


class HostileServer:
    """The server in a child process, so that its timestamps never wait for the crawler's GIL.

    Use as a context manager; `access_log` is fetched from the child on every read.
    """

    def __init__(self, hosts: list[str], robots: dict[str, str | int] | None = None):
        self.hosts, self.robots = hosts, robots or {}
        self.port = 0

    def __enter__(self) -> "HostileServer":
        context = multiprocessing.get_context("spawn")
        self._control, child_end = context.Pipe()
        self._process = context.Process(target=_serve, args=(self.hosts, self.robots, child_end), daemon=True)
        self._process.start()
        self.port = self._control.recv()
        return self

    def __exit__(self, *exc) -> None:
        self._control.send("stop")
        self._process.join(timeout=10)

    @property
    def access_log(self) -> list[Access]:
        self._control.send("log")
        return self._control.recv()

    def url(self, host: str, path: str) -> str:
        return f"http://{host}:{self.port}{path}"

    def requests_to(self, host: str, path_prefix: str = "") -> list[Access]:
        return [a for a in self.access_log if a.host == host and a.path.startswith(path_prefix)]


def _serve(hosts: list[str], robots: dict[str, str | int], control) -> None:
    """Child process: serve until told to stop, answering "log" with the access log so far."""
    with _Server(hosts, robots) as server:
        control.send(server.port)
        while control.recv() == "log":
            control.send(list(server.access_log))


class _Server:
    """The server itself: an asyncio loop in a thread, listening on every host at one port."""

    def __init__(self, hosts: list[str], robots: dict[str, str | int]):
        self.hosts, self.robots = hosts, robots
        self.access_log: list[Access] = []
        self.port = 0
        self._seen_keys: set[str] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._listeners: list[socket.socket] = []
        self._bombs = self._make_bombs()

    @staticmethod
    def _make_bombs() -> dict[str, bytes]:
        plain = b" " * BOMB_BYTES
        deflater = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS)
        return {"gzip": gzip.compress(plain, 9), "deflate": deflater.compress(plain) + deflater.flush(),
                "br": brotli.compress(plain, quality=5)}

    # -- lifecycle -------------------------------------------------------------------------------------------

    def __enter__(self) -> "_Server":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        for host in self.hosts:
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)  # accepted sockets inherit it
            listener.bind((host, self.port))
            listener.listen(512)
            listener.setblocking(False)
            self.port = listener.getsockname()[1]
            self._listeners.append(listener)
            loop.create_task(self._accept(listener))

    async def _close(self) -> None:
        for listener in self._listeners:
            listener.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(listener)
            loop.create_task(self._handle(conn))

    # -- one connection --------------------------------------------------------------------------------------

    @staticmethod
    async def _read_head(conn: socket.socket) -> tuple[bytes, float]:
        """The request head, and when the kernel received its first bytes (wall clock).

        The kernel's timestamp (SO_TIMESTAMPNS) does not depend on when this process gets scheduled, so the
        politeness tests measure the spacing the crawler put on the wire, even on a loaded machine.
        """
        loop = asyncio.get_running_loop()
        head, arrived = b"", None
        while b"\r\n\r\n" not in head:
            readable = loop.create_future()
            loop.add_reader(conn.fileno(), lambda: readable.done() or readable.set_result(None))
            try:
                await readable
            finally:
                loop.remove_reader(conn.fileno())
            try:
                data, ancillary, _, _ = conn.recvmsg(65536, 1024)
            except BlockingIOError:
                continue
            if not data:
                raise ConnectionError("closed before the request head")
            for _, kind, value in ancillary:
                if kind == SO_TIMESTAMPNS and arrived is None:
                    seconds, nanoseconds = struct.unpack("qq", value[:16])
                    arrived = seconds + nanoseconds / 1e9
            head += data
        return head, arrived if arrived is not None else time.time()

    async def _handle(self, conn: socket.socket) -> None:
        try:
            head, arrived = await self._read_head(conn)
        except OSError:
            conn.close()
            return
        _, writer = await asyncio.open_connection(sock=conn)
        target = head.split(b"\r\n", 1)[0].split(b" ")[1].decode("latin-1")
        access = Access(host=conn.getsockname()[0], path=target, start=arrived)
        self.access_log.append(access)
        try:
            await self._respond(access, writer)
            await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            access.end = access.end or time.time()
            writer.close()

    @staticmethod
    def _head(status: int, headers: dict[str, str]) -> bytes:
        lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in headers.items()] + ["Connection: close"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send(self, access: Access, writer, status: int, body: bytes,
              content_type: str | None = "text/html; charset=utf-8", extra: dict[str, str] | None = None) -> None:
        headers = {"Content-Length": str(len(body)), **(extra or {})}
        if content_type is not None:
            headers["Content-Type"] = content_type
        # Stamped before the write: the client cannot send its next request before it has this response,
        # so even if this process is preempted right after the write, the log never shows a false overlap.
        access.end = time.time()
        writer.write(self._head(status, headers) + body)

    def _first_time(self, key: str) -> bool:
        first = key not in self._seen_keys
        self._seen_keys.add(key)
        return first

    async def _respond(self, access: Access, writer: asyncio.StreamWriter) -> None:
        host, target = access.host, access.path
        path = urlsplit(target).path
        parts = path.strip("/").split("/")
        page = page_bytes(path)
        kind = parts[0]
        if path == "/robots.txt":
            rule = self.robots.get(host, 404)
            if isinstance(rule, int):
                self._send(access, writer, rule, b"<html>no robots here</html>")
            else:
                self._send(access, writer, 200, rule.encode(), "text/plain")
        elif kind == "page":
            self._send(access, writer, 200, page)
        elif kind == "gzipped":
            self._send(access, writer, 200, gzip.compress(page), extra={"Content-Encoding": "gzip"})
        elif kind == "slow":
            await asyncio.sleep(int(parts[1]) / 1000)
            self._send(access, writer, 200, page)
        elif kind == "redirect":
            n = int(parts[1])
            self._send(access, writer, 302, b"", extra={"Location": f"/redirect/{n - 1}" if n > 0 else "/page/final"})
        elif kind == "loop":
            self._send(access, writer, 302, b"", extra={"Location": "/loop/b" if parts[1] == "a" else "/loop/a"})
        elif kind == "to":
            self._send(access, writer, 302, b"", extra={"Location": parse_qs(urlsplit(target).query)["url"][0]})
        elif kind == "status":
            self._send(access, writer, int(parts[1]), html_page("status", parts[1]).encode())
        elif kind == "flaky":
            self._send(access, writer, 500 if self._first_time(path) else 200, page)
        elif kind == "retry-after":
            if self._first_time(path):
                self._send(access, writer, 503, b"busy", extra={"Retry-After": parts[1]})
            else:
                self._send(access, writer, 200, page)
        elif kind == "drip":
            writer.write(self._head(200, {"Content-Type": "text/html", "Content-Length": "100000"}))
            for _ in range(100000):
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(0.05)
        elif kind == "big":
            size = int(parts[1])
            writer.write(self._head(200, {"Content-Type": "text/html", "Content-Length": str(size)}))
            writer.write(b"<html><body>")
            for _ in range((size - 12) // 65536):
                writer.write(b"x" * 65536)
                await writer.drain()
            writer.write(b"x" * ((size - 12) % 65536))
        elif kind == "bomb":
            self._send(access, writer, 200, self._bombs[parts[1]], extra={"Content-Encoding": parts[1]})
        elif kind == "pdf":
            pdf = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\n" * 50
            self._send(access, writer, 200, pdf, "application/pdf")
        elif kind == "png":
            png = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + bytes(500)
            self._send(access, writer, 200, png, "image/png")
        elif kind == "no-type":
            self._send(access, writer, 200, page, content_type=None)
        elif kind == "binary-as-html":
            noise = random.Random(7).randbytes(4000)
            self._send(access, writer, 200, b"\x00\x01\x02\x03" + noise, "text/html")
        elif kind == "cp1251-meta":
            body = ('<html><head><meta charset="windows-1251"><title>Москва</title></head><body><p>'
                    + RUSSIAN + "</p></body></html>").encode("cp1251")
            self._send(access, writer, 200, body, "text/html")
        elif kind == "cp1251-header":
            body = ("<html><head><title>Москва</title></head><body><p>" + RUSSIAN + "</p></body></html>")
            self._send(access, writer, 200, body.encode("cp1251"), "text/html; charset=windows-1251")
        elif kind == "sjis":
            body = "<html><head><title>猫</title></head><body><p>" + JAPANESE + "</p></body></html>"
            self._send(access, writer, 200, body.encode("shift_jis"), "text/html")
        elif kind == "malformed":
            body = b"<html><body><div><p>Unclosed <b>bold <i>misnested</b> text</i><table><tr><td>cell</div>"
            self._send(access, writer, 200, body + b"<p>" + b"More words in a broken page. " * 20)
        elif kind == "empty":
            self._send(access, writer, 200, b"")
        elif kind in ("reset", "short"):
            writer.write(self._head(200, {"Content-Type": "text/html", "Content-Length": "20000"}))
            writer.write(b"<html><body>" + b"y" * 4988)
            await writer.drain()
            await asyncio.sleep(0.05)
            if kind == "reset":
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
        else:
            self._send(access, writer, 404, b"<html>not found</html>")

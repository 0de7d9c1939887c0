"""A real S3 API server for the tests: moto in server mode (`moto_server`), one process on 127.0.0.1.

    with MotoServer() as server:                      # a fresh, empty store on a free port
        server.create_bucket("runs")
        server.env                                    # AWS_* variables that point pyarrow and boto3 at it

`ThrottlingProxy` sits in front of a server and answers 503 SlowDown (S3's throttling reply) to the next N
requests whose path starts with a prefix, forwarding everything else: what a busy bucket does. A server
started with `auth_after=N` checks IAM credentials and policies after its first N requests (moto's
INITIAL_NO_AUTH_ACTION_COUNT), so a test can make a user whose key is denied.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "webtext-test", "AWS_SECRET_ACCESS_KEY": "webtext-test-secret",
               "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def moto_server_command() -> str | None:
    found = Path(sys.executable).with_name("moto_server")
    return str(found) if found.exists() else shutil.which("moto_server")


class MotoServer:
    def __init__(self, auth_after: int | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.auth_after = auth_after
        self.process: subprocess.Popen | None = None

    @property
    def env(self) -> dict[str, str]:
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.url}

    def __enter__(self) -> MotoServer:
        command = moto_server_command()
        if command is None:
            raise RuntimeError("moto_server not found: install the test extra (pip install -e '.[test]')")
        env = dict(os.environ)
        if self.auth_after is not None:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(self.auth_after)
        self.process = subprocess.Popen([command, "-H", "127.0.0.1", "-p", str(self.port)], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=2)
                return self
            except OSError:
                time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"moto_server did not answer on {self.url} within 60 s")

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)

    def client(self, service: str = "s3", **credentials):
        import boto3

        keys = {"aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
                "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"], **credentials}
        return boto3.client(service, endpoint_url=self.url, region_name="us-east-1", **keys)

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)


SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message></Error>")


class ThrottlingProxy:
    """An HTTP proxy to `upstream` that answers 503 SlowDown to the next `throttle(prefix, n)` requests."""

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.prefix, self.remaining, self.throttled = "", 0, 0
        self.loop = asyncio.new_event_loop()

    def throttle(self, prefix: str, count: int) -> None:
        self.prefix, self.remaining = prefix, count

    async def _handle(self, request):
        from aiohttp import ClientSession, web

        if self.remaining and request.path.startswith(self.prefix):
            self.remaining -= 1
            self.throttled += 1
            return web.Response(status=503, body=SLOW_DOWN, content_type="application/xml")
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with ClientSession(auto_decompress=False) as session:
            async with session.request(request.method, self.upstream + request.path_qs, headers=headers,
                                       data=body, allow_redirects=False) as answer:
                payload = await answer.read()
                keep = {k: v for k, v in answer.headers.items()
                        if k.lower() not in ("content-length", "transfer-encoding", "connection")}
                if request.method != "HEAD":
                    return web.Response(status=answer.status, body=payload, headers=keep)
                head = web.StreamResponse(status=answer.status, headers=keep)  # no body, but the object's size
                head.content_length = int(answer.headers.get("Content-Length", 0))
                await head.prepare(request)
                return head

    def __enter__(self) -> ThrottlingProxy:
        from aiohttp import web

        async def start():
            app = web.Application(client_max_size=1 << 30)
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self.runner = web.AppRunner(app, access_log=None)
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(start(), self.loop).result(timeout=30)
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)

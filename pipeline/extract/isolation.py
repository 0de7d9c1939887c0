"""A persistent child process that runs calls in batches, each call within a deadline.

`IsolatedWorker(fn, timeout_s, warm_up)` starts `python -c` over a socketpair (not multiprocessing: its
spawn mode re-runs the parent's __main__, a Ray worker's or stdin's, and fork is unsafe in a threaded
Ray worker). `map(calls)` sends a batch of argument tuples in one message and returns one outcome per
call: ("ok", result), ("timeout", detail), ("crash", detail) or ("error", detail). A call that took
longer than `timeout_s` is a timeout, finished or not. A batch may take `timeout_s` per call; when it
runs past that or the child dies, the child is killed and the batch's calls run again one by one in
fresh children, so the timeout or crash is counted for the one call that caused it and the others'
outcomes are kept. `warm_up()` runs in each fresh child before its first call, outside any deadline.
The extract stage runs its whole per-document path (pipeline/extract/document.py) in one.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any, Callable

WORKER_START_TIMEOUT_S = 120.0  # importing the extractors in a fresh child, on a loaded machine


def _child_main(fd: int) -> None:
    """Entry point of the worker process: take the parent's sys.path and the functions, warm up, then serve
    batches of calls, answering each batch with one message of (status, result, seconds) per call."""
    conn = Connection(fd)
    sys.path[:] = conn.recv()
    fn, warm_up = conn.recv()
    if warm_up is not None:
        warm_up()
    conn.send(("ready", None))
    while True:
        try:
            calls = conn.recv()
        except EOFError:
            return
        outcomes = []
        for args in calls:
            started = time.monotonic()
            try:
                status, result = "ok", fn(*args)
            except Exception as err:  # noqa: BLE001 - reported to the parent as extract_crash
                status, result = "error", f"{type(err).__name__}: {err} | {traceback.format_exc(limit=3)[-400:]}"
            outcomes.append((status, result, time.monotonic() - started))
        conn.send(outcomes)


class IsolatedWorker:
    """Runs `fn(*args)` calls in a persistent child process, in batches, each call within `timeout_s`
    (module docstring). Use as a context manager."""

    def __init__(self, fn: Callable, timeout_s: float, warm_up: Callable[[], None] | None = None):
        self.fn, self.timeout_s, self.warm_up = fn, timeout_s, warm_up
        self.process: subprocess.Popen | None = None
        self.conn: Connection | None = None
        self.starts = 0

    def _start(self) -> None:
        parent_sock, child_sock = socket.socketpair()
        command = f"from pipeline.extract.isolation import _child_main; _child_main({child_sock.fileno()})"
        self.process = subprocess.Popen(
            [sys.executable, "-c", command], pass_fds=[child_sock.fileno()], stdin=subprocess.DEVNULL
        )
        child_sock.close()
        self.conn = Connection(parent_sock.detach())
        self.starts += 1
        self.conn.send(sys.path)
        self.conn.send((self.fn, self.warm_up))
        try:
            ready = self.conn.poll(WORKER_START_TIMEOUT_S) and self.conn.recv()[0] == "ready"
        except EOFError:
            ready = False
        if not ready:
            self.stop()
            raise RuntimeError(
                f"extraction worker ({sys.executable} -c {command!r}) did not start within "
                f"{WORKER_START_TIMEOUT_S}s; its error, if any, is on stderr above; check that webtext is installed"
            )

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.conn.close()
        self.process = self.conn = None

    def _run(self, calls: list[tuple], deadline_s: float) -> tuple[str, Any]:
        """("ok", outcomes) for a batch of calls, or ("timeout" | "crash", detail) with the child stopped."""
        if self.process is None:
            self._start()
        try:
            self.conn.send(calls)
            if self.conn.poll(deadline_s):
                return "ok", self.conn.recv()
        except (EOFError, OSError):
            try:
                code = self.process.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                code = None
            self.stop()
            return "crash", f"worker died (exit code {code})"
        self.stop()
        return "timeout", f"no result within {deadline_s}s"

    def map(self, calls: list[tuple]) -> list[tuple[str, Any]]:
        status, answer = self._run(calls, self.timeout_s * len(calls))
        if status == "ok":
            late = f"took longer than {self.timeout_s}s"
            return [
                (call_status, result) if seconds <= self.timeout_s else ("timeout", f"{late} ({seconds:.1f}s)")
                for call_status, result, seconds in answer
            ]
        if len(calls) == 1:
            return [(status, answer)]
        return [outcome for args in calls for outcome in self.map([args])]

    def __enter__(self) -> "IsolatedWorker":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

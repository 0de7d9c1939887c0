"""Where run directories and inputs live, and how every file is written: local paths or object stores.

    from pipeline import storage
    root = storage.location("s3://bucket/runs/x")         # an ObjectPath; a local path gives a pathlib.Path
    with storage.atomic_path(root / "urls" / "part-00000.parquet") as tmp:
        pq.write_table(table, tmp)                         # tmp is a local file; the object appears when done
    with storage.atomic_writer(root / "crawl" / "warc" / "part-00000.warc.gz") as out:
        out.write(record)                                  # streamed: a multipart upload, no local copy
    with storage.open_read(path) as f:                     # random access: ranged GETs on an object store
        f.seek(offset)

A location is a local path (or `file://...`), `s3://bucket/key` or `gs://bucket/key` (pyarrow's
filesystems). Local paths are `pathlib.Path`s, written to a temporary name in the destination folder,
fsynced and renamed over the target, so a reader never sees half a file. On an object store there is no
rename: an object is written under its final name by one PUT or a multipart upload that becomes visible
only when it completes, so a reader never sees half an object either; a write that fails is removed. What
makes a set of files a committed partition is the runner's commit record, written last (pipeline/runner.py).

Object stores take their settings where AWS tools do: credentials from AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, AWS_PROFILE and ~/.aws (the AWS SDK's chain, inside pyarrow);
the region from AWS_REGION or AWS_DEFAULT_REGION; the endpoint of an S3-compatible server from
AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL (read here, since pyarrow does not). The `[storage]` config keys
override endpoint, region and retries (`configure`). Throttling (503 SlowDown), 5xx answers and timeouts are
retried with exponential backoff by the SDK (`storage.max_attempts`); other store errors become a
StorageError naming the URI and what to do. Credentials are never printed.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import glob
import hashlib
import json
import os
import posixpath
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

PARQUET_OPTIONS = dict(compression="zstd", compression_level=3, use_dictionary=True, write_statistics=True)
OBJECT_SCHEMES = ("s3", "gs")
COPY_BLOCK = 8 << 20  # bytes per read when streaming a file


class StorageError(OSError):
    """An object store refused a request; the message names the URI and what to do."""


# ---------------------------------------------------------------- object-store settings


@dataclass(frozen=True)
class StoreOptions:
    """What a filesystem for one scheme is built from (plain data: travels to Ray workers with paths)."""

    endpoint_url: str = ""
    region: str = ""
    max_attempts: int = 5


_configured = StoreOptions()


def configure(endpoint_url: str = "", region: str = "", max_attempts: int = 5) -> None:
    """Set the `[storage]` overrides for locations made in this process from now on."""
    global _configured
    _configured = StoreOptions(endpoint_url, region, max_attempts)


def _options() -> StoreOptions:
    env = os.environ
    return StoreOptions(
        endpoint_url=_configured.endpoint_url or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL", ""),
        region=_configured.region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION", ""),
        max_attempts=_configured.max_attempts,
    )


@functools.lru_cache(maxsize=None)
def filesystem(scheme: str, options: StoreOptions) -> pafs.FileSystem:
    if scheme == "s3":
        kwargs = {"retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=options.max_attempts),
                  "connect_timeout": 10, "request_timeout": 60}
        if options.endpoint_url:
            scheme_part, _, host = options.endpoint_url.partition("://")
            kwargs.update(endpoint_override=host or scheme_part, scheme=scheme_part if host else "https")
        if options.region:
            kwargs["region"] = options.region
        return pafs.S3FileSystem(**kwargs)
    return pafs.GcsFileSystem(retry_time_limit=60)


def explain(err: Exception, uri: str) -> StorageError:
    """A store error as one line naming the URI and what to do (the SDK's text keeps no credentials)."""
    text = str(err)
    if isinstance(err, FileNotFoundError) or "NO_SUCH_KEY" in text:
        return StorageError(f"{uri}: no such object")
    if "NO_SUCH_BUCKET" in text or "NoSuchBucket" in text:
        return StorageError(f"{uri}: the bucket does not exist; create it or fix the URI")
    if "ACCESS_DENIED" in text or "AccessDenied" in text or "403" in text:
        return StorageError(f"{uri}: access denied (403); check that the credentials in the environment may use "
                            "this bucket and key")
    if "SLOW_DOWN" in text or "SlowDown" in text or "503" in text:
        return StorageError(f"{uri}: the store kept throttling (503) after every retry; lower the parallelism "
                            "or raise storage.max_attempts")
    first = text.splitlines()[0] if text else type(err).__name__
    return StorageError(f"{uri}: {first[:300]}")


@contextlib.contextmanager
def _store_errors(uri: str):
    try:
        yield
    except StorageError:
        raise
    except OSError as err:
        raise explain(err, uri) from None


# ---------------------------------------------------------------- object paths


@dataclass(frozen=True, order=True)
class _Stat:
    st_size: int
    st_mtime_ns: int


class ObjectPath:
    """`scheme://bucket/key` with the pathlib subset the stages use; picklable (it rebuilds its filesystem)."""

    def __init__(self, scheme: str, key: str, options: StoreOptions | None = None):
        self.scheme, self.key = scheme, key.strip("/")
        self.options = options or _options()

    # pure path operations
    def __str__(self) -> str:
        return f"{self.scheme}://{self.key}"

    def __repr__(self) -> str:
        return f"ObjectPath({str(self)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, ObjectPath) and str(self) == str(other)

    def __lt__(self, other: ObjectPath) -> bool:
        return str(self) < str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def joinpath(self, *parts: str | PurePosixPath) -> ObjectPath:
        key = self.key
        for part in parts:
            part = str(part)
            key = part.lstrip("/") if part.startswith("/") else posixpath.join(key, part)
        return ObjectPath(self.scheme, posixpath.normpath(key), self.options)

    __truediv__ = joinpath

    @property
    def name(self) -> str:
        return posixpath.basename(self.key)

    @property
    def stem(self) -> str:
        return PurePosixPath(self.key).stem

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.key).suffix

    @property
    def parent(self) -> ObjectPath:
        return ObjectPath(self.scheme, posixpath.dirname(self.key), self.options)

    def with_name(self, name: str) -> ObjectPath:
        return self.parent / name

    def relative_to(self, other: ObjectPath) -> PurePosixPath:
        if not isinstance(other, ObjectPath) or other.scheme != self.scheme:
            raise ValueError(f"{self} is not under {other}")
        return PurePosixPath(self.key).relative_to(other.key)

    def resolve(self) -> ObjectPath:
        return self

    def expanduser(self) -> ObjectPath:
        return self

    # the store
    @property
    def fs(self) -> pafs.FileSystem:
        return filesystem(self.scheme, self.options)

    def _info(self) -> pafs.FileInfo:
        with _store_errors(str(self)):
            return self.fs.get_file_info(self.key)

    def stat(self) -> _Stat:
        info = self._info()
        if info.type != pafs.FileType.File:
            raise FileNotFoundError(f"{self}: no such object")
        return _Stat(info.size, info.mtime_ns or 0)

    def exists(self) -> bool:
        return self._info().type != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self._info().type == pafs.FileType.File

    def is_dir(self) -> bool:
        return self._info().type == pafs.FileType.Directory

    def _listing(self, recursive: bool) -> list[pafs.FileInfo]:
        with _store_errors(str(self)):
            return self.fs.get_file_info(pafs.FileSelector(self.key, allow_not_found=True, recursive=recursive))

    def iterdir(self):
        return iter(sorted(ObjectPath(self.scheme, i.path, self.options) for i in self._listing(False)))

    def glob(self, pattern: str):
        """Entries directly under this folder whose name matches `pattern` (no `/` or `**` in it)."""
        return iter(sorted(ObjectPath(self.scheme, i.path, self.options) for i in self._listing(False)
                           if fnmatch.fnmatchcase(posixpath.basename(i.path), pattern)))

    def rglob(self, pattern: str):
        return iter(sorted(ObjectPath(self.scheme, i.path, self.options) for i in self._listing(True)
                           if fnmatch.fnmatchcase(posixpath.basename(i.path), pattern)))

    def read_bytes(self) -> bytes:
        with _store_errors(str(self)), self.fs.open_input_stream(self.key) as f:
            return f.read()

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> None:
        with _store_errors(str(self)), self.fs.open_output_stream(self.key) as f:
            f.write(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(text.encode(encoding))

    def unlink(self, missing_ok: bool = False) -> None:
        with _store_errors(str(self)):
            try:
                self.fs.delete_file(self.key)
            except FileNotFoundError:
                if not missing_ok:
                    raise

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Nothing to do: an object store has no folders, only keys with slashes."""


AnyPath = Path | ObjectPath


def location(uri: str | Path | ObjectPath) -> AnyPath:
    """A path or URI as a local `Path` (absolute) or an `ObjectPath`; other schemes are refused by name."""
    if isinstance(uri, ObjectPath):
        return uri
    text = str(uri)
    scheme, sep, rest = text.partition("://")
    if not sep:
        return Path(text).expanduser().resolve()
    if scheme == "file":
        return Path(rest).resolve()
    if scheme in OBJECT_SCHEMES:
        return ObjectPath(scheme, rest)
    raise ValueError(f"{text}: {scheme}:// is not supported; use a local path, s3:// or gs://")


def is_object(path: AnyPath) -> bool:
    return isinstance(path, ObjectPath)


def expand(pattern: str) -> list[AnyPath]:
    """A file, every file under a folder, or the files a glob matches (`*`, `?`, `[...]`, `**`), sorted."""
    path = location(pattern)
    if not is_object(path):
        if path.is_dir():
            return sorted(p for p in path.rglob("*") if p.is_file())
        if path.is_file():
            return [path]
        return sorted(Path(p).resolve() for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
    if not any(c in path.key for c in "*?["):
        return [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    fixed = path.key[: min(path.key.find(c) for c in "*?[" if c in path.key)].rpartition("/")[0]
    base = ObjectPath(path.scheme, fixed, path.options)
    return sorted(p for p in base.rglob("*") if fnmatch.fnmatchcase(p.key, path.key))


# ---------------------------------------------------------------- writing


@contextlib.contextmanager
def atomic_path(target: AnyPath):
    """Yield a local temporary path; on success it becomes `target` whole (rename, or one upload)."""
    if is_object(target):
        with tempfile.TemporaryDirectory(prefix="webtext-upload-") as folder:
            tmp = Path(folder) / target.name
            yield tmp
            with open(tmp, "rb") as src, atomic_writer(target) as out:
                shutil.copyfileobj(src, out, COPY_BLOCK)
        return
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".tmp-{os.getpid()}-{target.name}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_writer(target: AnyPath, buffering: int = 1 << 20):
    """Yield a binary file; on success it becomes `target` whole. On an object store the bytes stream out as a
    multipart upload (nothing staged on local disk); a failed write's object is removed."""
    if not is_object(target):
        with atomic_path(target) as tmp, open(tmp, "wb", buffering=buffering) as out:
            yield out
        return
    uri = str(target)
    with _store_errors(uri):
        stream = target.fs.open_output_stream(target.key)
    try:
        yield stream
    except BaseException:
        with contextlib.suppress(OSError):
            stream.close()
            target.fs.delete_file(target.key)
        raise
    with _store_errors(uri):
        stream.close()


def write_bytes(target: AnyPath, data: bytes) -> None:
    with atomic_writer(target) as out:
        out.write(data)


def write_json(target: AnyPath, obj) -> None:
    write_bytes(target, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def write_parquet(target: AnyPath, table: pa.Table) -> None:
    """Write `table` atomically; same table -> byte-identical file."""
    with atomic_writer(target) as out:
        pq.write_table(table, out, **PARQUET_OPTIONS)


# ---------------------------------------------------------------- reading


def open_read(path: AnyPath):
    """A seekable binary file: a local file, or an object read with ranged GETs."""
    if not is_object(path):
        return open(path, "rb")
    with _store_errors(str(path)):
        return path.fs.open_input_file(path.key)


def parquet_file(path: AnyPath) -> pq.ParquetFile:
    """A Parquet file opened for reading row groups and batches (ranged reads on an object store)."""
    return pq.ParquetFile(open_read(path))


def read_parquet(paths: list[AnyPath] | AnyPath, columns: list[str] | None = None) -> pa.Table:
    """Read one file or concatenate several, in the order given."""
    if not isinstance(paths, list):
        with open_read(paths) as f:
            return pq.read_table(f, columns=columns)
    tables = [read_parquet(p, columns) for p in paths]
    return pa.concat_tables(tables) if tables else None


def local_copy(path: AnyPath) -> Path:
    """A local file with `path`'s bytes: the path itself, or for an object a copy in the cache folder
    ($WEBTEXT_CACHE, default ~/.cache/webtext), fetched once per object version (URI, size, mtime)."""
    if not is_object(path):
        return path
    stat = path.stat()
    name = hashlib.sha1(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    cached = Path(os.environ.get("WEBTEXT_CACHE", "~/.cache/webtext")).expanduser() / "objects" / f"{name}-{path.name}"
    if not cached.exists():
        with open_read(path) as src, atomic_writer(cached) as out:
            shutil.copyfileobj(src, out, COPY_BLOCK)
    return cached


def sha256_file(path: AnyPath) -> str:
    digest = hashlib.sha256()
    with open_read(path) as f:
        for block in iter(lambda: f.read(COPY_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def stable_hash(text: str) -> int:
    """A 64-bit hash that is the same in every process and on every machine (unlike hash())."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")

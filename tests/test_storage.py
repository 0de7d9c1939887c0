"""Object storage through pipeline/storage.py against a real S3 API server (moto_server on 127.0.0.1)."""

from __future__ import annotations

import json
import os

import pytest

from pipeline import storage
from pipeline.runner import RunDirError, check_run_dir
from s3_server import MotoServer, ThrottlingProxy


@pytest.fixture(scope="module")
def s3():
    """One S3 server for this module, with AWS_ENDPOINT_URL and test credentials in the environment."""
    with MotoServer() as server:
        saved = {k: os.environ.get(k) for k in server.env}
        os.environ.update(server.env)
        server.create_bucket("webtext-test")
        yield server
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_object_paths_behave_as_the_stages_use_paths(s3):
    root = storage.location("s3://webtext-test/runs/a")
    (root / "urls" / "part-00000.parquet").write_bytes(b"one")
    (root / "urls" / "part-00001.parquet").write_bytes(b"two!")
    (root / "urls" / "_commits" / "part-00000.json").write_text("{}")
    part = root / "urls" / "part-00001.parquet"
    assert str(part) == "s3://webtext-test/runs/a/urls/part-00001.parquet"
    assert part.read_bytes() == b"two!" and part.stat().st_size == 4 and part.stat().st_mtime_ns > 0
    assert part.is_file() and (root / "urls").is_dir() and not (root / "nothing").exists()
    assert [p.name for p in (root / "urls").glob("part-*")] == ["part-00000.parquet", "part-00001.parquet"]
    assert [str(p.relative_to(root)) for p in root.rglob("part-*.json")] == ["urls/_commits/part-00000.json"]
    assert (part.parent.name, part.stem, part.suffix) == ("urls", "part-00001", ".parquet")
    part.unlink()
    part.unlink(missing_ok=True)
    assert not part.exists()
    with pytest.raises(FileNotFoundError):
        part.stat()


def test_a_multipart_upload_is_invisible_until_complete_and_a_failed_one_leaves_nothing(s3):
    target = storage.location("s3://webtext-test/warc/part-00000.warc")
    block = os.urandom(1 << 20)
    with storage.atomic_writer(target) as out:
        for _ in range(12):  # more than one 10 MB part: parts are uploaded while writing
            out.write(block)
        assert not target.exists()
    assert target.stat().st_size == 12 << 20
    with storage.open_read(target) as f:  # ranged reads
        f.seek((5 << 20) + 7)
        assert f.read(100) == block[7:107]
    failed = storage.location("s3://webtext-test/warc/part-00001.warc")
    with pytest.raises(RuntimeError, match="killed mid-write"):
        with storage.atomic_writer(failed) as out:
            out.write(block)
            raise RuntimeError("killed mid-write")
    assert not failed.exists()


def test_parquet_and_json_round_trip_byte_identical_to_local(s3, tmp_path):
    import pyarrow as pa

    table = pa.table({"url": ["http://a/", "http://b/"], "n": [1, 2]})
    remote = storage.location("s3://webtext-test/t/part-00000.parquet")
    storage.write_parquet(remote, table)
    storage.write_parquet(tmp_path / "part-00000.parquet", table)
    assert remote.read_bytes() == (tmp_path / "part-00000.parquet").read_bytes()
    assert storage.read_parquet([remote, remote]).num_rows == 4
    storage.write_json(remote.with_name("stats.json"), {"b": 1, "a": [2]})
    assert json.loads(remote.with_name("stats.json").read_text()) == {"a": [2], "b": 1}
    assert storage.sha256_file(remote) == storage.sha256_file(tmp_path / "part-00000.parquet")


def test_globs_and_folders_of_objects_expand_to_the_matching_files(s3):
    for name in ("RS_2019-01.zst", "RS_2019-02.zst", "RS_2018-12.zst", "notes.txt"):
        storage.location(f"s3://webtext-test/pushshift/{name}").write_bytes(b"x")
    names = [p.name for p in storage.expand("s3://webtext-test/pushshift/RS_2019-*.zst")]
    assert names == ["RS_2019-01.zst", "RS_2019-02.zst"]
    assert len(storage.expand("s3://webtext-test/pushshift")) == 4
    assert storage.expand("s3://webtext-test/pushshift/RS_2017-*.zst") == []


def test_throttling_is_retried_with_backoff_and_named_when_it_never_stops(s3):
    target = "s3://webtext-test/throttled/object"
    storage.location(target).write_bytes(b"payload")
    with ThrottlingProxy(s3.url) as proxy:
        patient = storage.ObjectPath("s3", "webtext-test/throttled/object", storage.StoreOptions(proxy.url, "", 5))
        proxy.throttle("/webtext-test/throttled/", 2)
        assert patient.read_bytes() == b"payload"
        assert proxy.throttled == 2
        impatient = storage.ObjectPath("s3", "webtext-test/throttled/object", storage.StoreOptions(proxy.url, "", 1))
        proxy.throttle("/webtext-test/throttled/", 100)
        with pytest.raises(storage.StorageError, match=r"throttling \(503\) after every retry"):
            impatient.read_bytes()


def test_a_missing_bucket_and_a_denied_key_are_clear_errors(s3):
    with pytest.raises(RunDirError, match=r"the bucket s3://no-such-bucket does not exist"):
        check_run_dir("s3://no-such-bucket/runs/x")
    with MotoServer(auth_after=6) as locked:
        admin_s3, iam = locked.client("s3"), locked.client("iam")
        admin_s3.create_bucket(Bucket="locked")
        admin_s3.put_object(Bucket="locked", Key="public/a", Body=b"yes")
        admin_s3.put_object(Bucket="locked", Key="private/b", Body=b"no")
        iam.create_user(UserName="reader")
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        iam.put_user_policy(UserName="reader", PolicyName="read-public", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"],
                                                    "Resource": ["arn:aws:s3:::locked", "arn:aws:s3:::locked/public/*"]}]}))
        saved = dict(os.environ)
        os.environ.update(AWS_ACCESS_KEY_ID=key["AccessKeyId"], AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"])
        storage.filesystem.cache_clear()
        try:
            options = storage.StoreOptions(locked.url, "us-east-1", 2)
            assert storage.ObjectPath("s3", "locked/public/a", options).read_bytes() == b"yes"
            with pytest.raises(storage.StorageError) as err:
                storage.ObjectPath("s3", "locked/private/b", options).read_bytes()
            assert str(err.value).startswith("s3://locked/private/b: access denied (403)")
            assert key["SecretAccessKey"] not in str(err.value)
        finally:
            os.environ.clear()
            os.environ.update(saved)
            storage.filesystem.cache_clear()

"""The bucket, through boto3 against an S3-compatible server over real HTTP on 127.0.0.1 (moto, in a process of its
own): uploads verified before they count, multipart for large files and continued after a restart, and a
bucket that refuses (credentials, permissions, no such bucket) or cannot be reached, each said plainly."""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from controller.settings import UploadConfig
from controller.storage.keys import KeyTemplate, parse_s3_url
from controller.storage.s3 import MIB, Bucket, StorageError, file_digests


def bucket_for(s3, name: str, prefix: str = "calls", **more) -> Bucket:
    return Bucket(UploadConfig(url=f"s3://{name}/{prefix}", endpoint_url=s3.endpoint, region="us-east-1", **more))


def wav_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def upload(b: Bucket, path: Path, key: str, state: dict | None = None) -> str:
    digests = file_digests(path, b.part_size)
    b.upload(path, key, digests, {} if state is None else state, save=lambda: None)
    return b.verify(key, digests)


def test_a_small_recording_is_one_put_verified_by_its_md5_etag_and_carries_its_sha256(s3, bucket, tmp_path):
    b = bucket_for(s3, bucket)
    path = wav_file(tmp_path / "a.wav", 100_000)
    assert upload(b, path, "calls/a.wav") == "etag"
    head = s3.client().head_object(Bucket=bucket, Key="calls/a.wav")
    assert head["Metadata"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert head["ContentType"] == "audio/wav"
    assert s3.objects(bucket)["calls/a.wav"] == path.read_bytes()


def test_a_large_recording_goes_up_in_parts_and_its_etag_is_the_md5_of_the_parts(s3, bucket, tmp_path):
    b = bucket_for(s3, bucket, part_size_mb=5)
    path = wav_file(tmp_path / "big.wav", 12 * MIB + 123)
    digests = file_digests(path, b.part_size)
    assert len(digests.part_md5s) == 3 and digests.expected_etag().endswith("-3")
    assert upload(b, path, "calls/big.wav") == "etag"
    assert s3.objects(bucket)["calls/big.wav"] == path.read_bytes()


def test_a_multipart_upload_cut_off_by_a_restart_continues_with_the_parts_already_there(s3, bucket, tmp_path):
    path = wav_file(tmp_path / "big.wav", 16 * MIB)
    sent: list[int] = []

    def reads_then_dies(p: Path, start: int, length: int) -> bytes:
        if sent and len(sent) == 2:
            raise StorageError("the controller was stopped here")  # as a kill between two parts
        sent.append(start)
        with open(p, "rb") as f:
            f.seek(start)
            return f.read(length)

    state: dict = {}
    first = Bucket(UploadConfig(url=f"s3://{bucket}", endpoint_url=s3.endpoint, region="us-east-1", part_size_mb=5),
                   read_file=reads_then_dies)
    with pytest.raises(StorageError):
        upload(first, path, "big.wav", state)
    assert len(state["parts"]) == 2  # kept on disk by the job queue in the controller
    s3.stop()  # the server is restarted too, with the upload in progress: it keeps it
    s3.start()
    resumed: list[int] = []

    def counting(p: Path, start: int, length: int) -> bytes:
        resumed.append(start)
        with open(p, "rb") as f:
            f.seek(start)
            return f.read(length)

    second = Bucket(UploadConfig(url=f"s3://{bucket}", endpoint_url=s3.endpoint, region="us-east-1", part_size_mb=5),
                    read_file=counting)
    assert upload(second, path, "big.wav", state) == "etag"
    assert resumed == [10 * MIB, 15 * MIB]  # parts 3 and 4 only
    assert state == {}
    assert s3.objects(bucket)["big.wav"] == path.read_bytes()


def test_an_upload_the_server_forgot_starts_again(s3, bucket, tmp_path):
    b = bucket_for(s3, bucket, part_size_mb=5)
    path = wav_file(tmp_path / "big.wav", 11 * MIB)
    state = {"upload_id": "forgotten-by-a-crash", "key": "calls/big.wav", "size": path.stat().st_size,
             "mtime_ns": path.stat().st_mtime_ns, "parts": {"1": "x"}}
    assert upload(b, path, "calls/big.wav", state) == "etag"
    assert s3.objects(bucket)["calls/big.wav"] == path.read_bytes()


def test_an_object_that_is_not_the_file_is_not_verified(s3, bucket, tmp_path):
    b = bucket_for(s3, bucket)
    path = wav_file(tmp_path / "a.wav", 1000)
    digests = file_digests(path, b.part_size)
    s3.client().put_object(Bucket=bucket, Key="calls/a.wav", Body=b"x" * 1000)
    with pytest.raises(StorageError, match="holds|carries|SHA-256"):
        b.verify("calls/a.wav", digests)


def test_a_missing_bucket_is_refused_with_what_to_do(s3, tmp_path):
    b = bucket_for(s3, "no-such-bucket-here")
    with pytest.raises(StorageError) as caught:
        upload(b, wav_file(tmp_path / "a.wav", 1000), "calls/a.wav")
    assert caught.value.refused and caught.value.code == "NoSuchBucket"
    assert "does not exist" in str(caught.value) and "storage.upload.url" in str(caught.value)


def test_a_server_that_is_down_is_not_a_refusal(tmp_path):
    b = Bucket(UploadConfig(url="s3://some-bucket", endpoint_url="http://127.0.0.1:9", region="us-east-1"))
    with pytest.raises(StorageError) as caught:
        b.check_bucket()
    assert not caught.value.refused and "127.0.0.1:9" in str(caught.value)


@pytest.fixture
def guarded_s3(tmp_path_factory, monkeypatch):
    """An S3 server that checks credentials: a bucket, and a user allowed only to read it."""
    from services import S3Server

    server = S3Server(tmp_path_factory.mktemp("s3auth"), auth_after=4)
    server.start()
    client = server.client()
    client.create_bucket(Bucket="guarded")
    import boto3

    iam = boto3.client("iam", endpoint_url=server.endpoint, region_name="us-east-1", aws_access_key_id="testing",
                       aws_secret_access_key="testing")
    iam.create_user(UserName="reader")
    key = iam.create_access_key(UserName="reader")["AccessKey"]
    iam.put_user_policy(UserName="reader", PolicyName="read", PolicyDocument=(
        '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], '
        '"Resource": "*"}]}'))
    yield server, key["AccessKeyId"], key["SecretAccessKey"]
    server.kill()


def test_wrong_credentials_and_missing_permissions_are_refusals_that_say_what_to_fix(guarded_s3, tmp_path,
                                                                                     monkeypatch):
    server, key_id, secret = guarded_s3
    path = wav_file(tmp_path / "a.wav", 1000)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG0")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(StorageError) as caught:
        upload(bucket_for(server, "guarded"), path, "calls/a.wav")
    assert caught.value.refused and caught.value.code == "InvalidAccessKeyId"
    assert "AWS_ACCESS_KEY_ID" in str(caught.value) and "wrong" not in str(caught.value).replace("AKIAWRONG", "")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    with pytest.raises(StorageError) as caught:
        upload(bucket_for(server, "guarded"), path, "calls/a.wav")
    assert caught.value.refused and caught.value.code == "AccessDenied"
    assert "s3:PutObject" in str(caught.value)


def test_the_doctor_probe_writes_reads_back_and_deletes_a_test_object(s3, bucket):
    b = bucket_for(s3, bucket)
    assert "deleted a test object" in b.probe()
    assert s3.objects(bucket) == {}
    with pytest.raises(StorageError, match="does not exist"):
        bucket_for(s3, "no-such-bucket-here").probe()


def test_the_key_template_and_the_bucket_url_are_checked_like_the_filename_template():
    moment = datetime(2026, 11, 25, 6, 46, tzinfo=timezone.utc)
    key = KeyTemplate("{date}/{switch}/{uuid}.wav").render(moment=moment, uuid="abc", switch="fs 1/../x")
    assert key == "2026-11-25/fs_1_.._x/abc.wav"
    for bad, problem in (("{date}/x.wav", "does not contain {uuid}"), ("/{uuid}.wav", "not a relative path"),
                         ("{uuid}.mp3", "does not end in .wav"), ("{uuid!r}.wav", "not a plain allowed field"),
                         ("../{uuid}.wav", "not a relative path"), ("{host}/{uuid}.wav", "not a plain allowed")):
        with pytest.raises(ValueError, match=problem.replace("{", r"\{").replace("}", r"\}")):
            KeyTemplate(bad)
    assert parse_s3_url("s3://my-bucket/calls/2026/") == ("my-bucket", "calls/2026")
    for bad in ("s3://B/x", "http://bucket", "s3://ab", "s3://bucket/../x", "s3://k:s@bucket"):
        with pytest.raises(ValueError):
            parse_s3_url(bad)

"""One S3-compatible bucket, through boto3: upload a finished WAV (multipart when large, resumable across
restarts), verify it, read it back (whole or a byte range), and the doctor's write-read-delete probe.

Verification does not trust the upload call's success alone. Before the upload the file's SHA-256 and the MD5 of
each part are computed; after it, a HEAD must show the same size, our ``x-amz-meta-sha256``, and the ETag S3
computes from what it stored (the MD5 for one PUT, the MD5 of the parts' MD5s and ``-N`` for a multipart
upload). A server whose ETag is not an MD5 (SSE-KMS, some gateways) is verified by reading the object back
and hashing it. Only then is the upload counted, the URL published, and a local copy ever removed.

Errors are sorted in two: the bucket *refused* (credentials, permissions, no such bucket: an operator must act,
and the message says what to do), or the server could not be *reached* (it is down: the job waits).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import uuid as uuid_module
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

from .keys import KeyTemplate, object_key, parse_s3_url

log = logging.getLogger("controller.storage")

MIB = 1024 * 1024
READ_CHUNK = 1 * MIB
CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 60
CONTENT_TYPES = {".wav": "audio/wav", ".json": "application/json"}

# Answers that mean the bucket (or the credentials) say no: retrying will not help until someone acts.
REFUSALS = {
    "AccessDenied": "the credentials in use may not do this on the bucket: allow s3:PutObject, s3:GetObject and "
                    "s3:ListMultipartUploadParts on it (and s3:AbortMultipartUpload)",
    "AllAccessDisabled": "all access to the bucket is disabled: check it with its owner",
    "NoSuchBucket": "the bucket does not exist there: create it, or fix storage.upload.url (and endpoint_url)",
    "InvalidAccessKeyId": "the access key is not known to the server: check AWS_ACCESS_KEY_ID (or the profile "
                          "or role in use)",
    "SignatureDoesNotMatch": "the secret key does not match the access key: check AWS_SECRET_ACCESS_KEY",
    "ExpiredToken": "the session token has expired: renew the credentials",
    "InvalidToken": "the session token is not valid: renew the credentials",
    "AuthorizationHeaderMalformed": "the region does not match the bucket's: set storage.upload.region",
    "PermanentRedirect": "the bucket is in another region: set storage.upload.region to it",
    "InvalidBucketName": "the bucket name is refused by the server: fix storage.upload.url",
    "AccountProblem": "the account has a problem: check it with the provider",
    "Forbidden": "the server refused (403): check the credentials and the bucket's policy",
    "403": "the server refused (403): check the credentials and the bucket's policy",
}


class StorageError(Exception):
    """An upload or a read that did not work. ``refused``: the bucket said no (someone must act); otherwise the
    server could not be reached or failed (it will be tried again)."""

    def __init__(self, message: str, *, refused: bool = False, code: str | None = None) -> None:
        super().__init__(message)
        self.refused, self.code = refused, code


@dataclass
class Digests:
    """What the file is: its size, its SHA-256, the MD5 of each part of ``part_size`` (one part below it)."""

    size: int
    mtime_ns: int
    sha256: str
    part_size: int
    part_md5s: list[str]

    @property
    def multipart(self) -> bool:
        return len(self.part_md5s) > 1

    def expected_etag(self) -> str:
        if not self.multipart:
            return self.part_md5s[0]
        joined = b"".join(bytes.fromhex(m) for m in self.part_md5s)
        return f"{hashlib.md5(joined).hexdigest()}-{len(self.part_md5s)}"

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "mtime_ns": self.mtime_ns, "sha256": self.sha256, "part_size": self.part_size,
                "part_md5s": self.part_md5s}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Digests":
        return cls(int(data["size"]), int(data["mtime_ns"]), str(data["sha256"]), int(data["part_size"]),
                   list(data["part_md5s"]))


def file_digests(path: os.PathLike | str, part_size: int) -> Digests:
    """One pass over the file (blocking: the controller runs it in a thread)."""
    path = Path(path)
    st = path.stat()
    size = st.st_size
    count = 1 if size <= part_size else -(-size // part_size)
    sha = hashlib.sha256()
    parts: list[str] = []
    with open(path, "rb") as f:
        for number in range(count):
            md5 = hashlib.md5()
            left = size if count == 1 else min(part_size, size - number * part_size)
            while left > 0:
                chunk = f.read(min(READ_CHUNK, left))
                if not chunk:
                    raise StorageError(f"{path} became shorter while it was read")
                sha.update(chunk)
                md5.update(chunk)
                left -= len(chunk)
            parts.append(md5.hexdigest())
    return Digests(size, st.st_mtime_ns, sha.hexdigest(), part_size, parts)


def sha256_of(path: os.PathLike | str) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(READ_CHUNK), b""):
            sha.update(chunk)
    return sha.hexdigest()


def _b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")


class Bucket:
    """storage.upload: the bucket, its prefix and key template, and a boto3 client made when first needed."""

    def __init__(self, upload, *, read_file: Callable[[Path, int, int], bytes] | None = None) -> None:
        self.config = upload
        self.bucket, self.prefix = parse_s3_url(upload.url)
        self.template = KeyTemplate(upload.key_template)
        self.part_size = upload.part_size_mb * MIB
        self.endpoint_url = upload.endpoint_url
        self._client = None
        self._read = read_file or _read_range

    @property
    def shown(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"s3://{self.bucket}{'/' + self.prefix if self.prefix else ''}{where}"

    @property
    def client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config

            config = Config(
                connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S,
                retries={"max_attempts": 2, "mode": "standard"},  # the job queue retries for longer
                # Path-style for S3-compatible servers (MinIO, Ceph, moto) addressed by IP or one host name.
                s3={"addressing_style": "path" if self.endpoint_url else "auto"},
                # Only the checksums S3 requires: the newer defaults (CRC32 trailers) break some S3-compatible
                # servers, and this code verifies what was stored itself (size, MD5 ETag, SHA-256).
                request_checksum_calculation="when_required", response_checksum_validation="when_required",
            )
            self._client = boto3.session.Session().client(
                "s3", endpoint_url=self.endpoint_url, region_name=self.config.region, config=config)
        return self._client

    def key_for(self, *, moment: datetime, recording_id: str, switch: str, controller: str, caller: str,
                destination: str, rule: str) -> str:
        relative = self.template.render(moment=moment, uuid=recording_id, switch=switch, controller=controller,
                                        caller=caller, destination=destination, rule=rule)
        return object_key(self.prefix, relative)

    def url_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def key_of(self, url: str) -> str:
        bucket, key = parse_object_url(url)
        if bucket != self.bucket:
            raise StorageError(f"{url} is not in the configured bucket {self.bucket}", refused=True)
        return key

    # ---- errors ----

    def _error(self, exc: Exception, doing: str) -> StorageError:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            message = error.get("Message") or ""
            fix = REFUSALS.get(code)
            if fix is not None:
                return StorageError(f"{self.shown} refused to {doing}: {code}{f' ({message})' if message else ''}; "
                                    f"{fix}", refused=True, code=code)
            return StorageError(f"{self.shown} failed to {doing}: {code}{f' ({message})' if message else ''}",
                                code=code)
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return StorageError(f"no credentials to {doing} at {self.shown}: set AWS_ACCESS_KEY_ID and "
                                "AWS_SECRET_ACCESS_KEY in the controller's environment, or AWS_PROFILE, or give "
                                "the host a role", refused=True, code="NoCredentials")
        if isinstance(exc, BotoCoreError):
            return StorageError(f"cannot {doing} at {self.shown}: {exc}")
        return StorageError(f"cannot {doing} at {self.shown}: {type(exc).__name__}: {exc}")

    def _call(self, doing: str, method: str, **kwargs):
        try:
            return getattr(self.client, method)(**kwargs)
        except StorageError:
            raise
        except Exception as exc:  # botocore's, and the socket's beneath them
            raise self._error(exc, doing) from exc

    # ---- upload ----

    def upload(self, path: Path, key: str, digests: Digests, state: dict, save: Callable[[], None]) -> None:
        """Put the file at key: one PUT up to part_size, else a multipart upload whose progress is kept in
        ``state`` (saved through ``save`` after each part), so a restart continues it rather than starting over."""
        metadata = {"sha256": digests.sha256}
        content_type = CONTENT_TYPES.get(path.suffix, "application/octet-stream")
        if not digests.multipart:
            body = self._read(path, 0, digests.size)
            self._check_unchanged(path, digests)
            self._call("upload the recording", "put_object", Bucket=self.bucket, Key=key, Body=body,
                       ContentMD5=_b64(digests.part_md5s[0]), ContentType=content_type, Metadata=metadata)
            return
        parts = self._resume_parts(key, digests, state)
        if not state.get("upload_id"):
            created = self._call("start a multipart upload", "create_multipart_upload", Bucket=self.bucket, Key=key,
                                 ContentType=content_type, Metadata=metadata)
            state.clear()
            state.update({"upload_id": created["UploadId"], "key": key, "size": digests.size,
                          "mtime_ns": digests.mtime_ns, "parts": {}})
            save()
        upload_id = state["upload_id"]
        for number, md5 in enumerate(digests.part_md5s, start=1):
            if parts.get(number) == md5:
                continue
            start = (number - 1) * digests.part_size
            body = self._read(path, start, min(digests.part_size, digests.size - start))
            if hashlib.md5(body).hexdigest() != md5:
                raise StorageError(f"{path} changed while it was being uploaded")
            try:
                answer = self._call(f"upload part {number}", "upload_part", Bucket=self.bucket, Key=key,
                                    UploadId=upload_id, PartNumber=number, Body=body, ContentMD5=_b64(md5))
            except StorageError as exc:
                if exc.code == "NoSuchUpload":  # the server forgot it (restarted, or aborted): from the start
                    state.clear()
                    save()
                raise
            if answer.get("ETag", "").strip('"') != md5:
                raise StorageError(f"{self.shown} stored part {number} of {key} with ETag {answer.get('ETag')}, "
                                   f"not the MD5 {md5} of what was sent")
            state["parts"][str(number)] = md5
            save()
        listing = [{"PartNumber": n, "ETag": f'"{md5}"'} for n, md5 in enumerate(digests.part_md5s, start=1)]
        try:
            self._call("complete the multipart upload", "complete_multipart_upload", Bucket=self.bucket, Key=key,
                       UploadId=upload_id, MultipartUpload={"Parts": listing})
        except StorageError as exc:
            if exc.code in ("NoSuchUpload", "InvalidPart", "InvalidPartOrder"):
                state.clear()
                save()
            raise
        state.clear()
        save()

    def _resume_parts(self, key: str, digests: Digests, state: dict) -> dict[int, str]:
        """The parts an earlier attempt (or process) uploaded that still match the file: {number: md5}."""
        if not state.get("upload_id"):
            return {}
        if state.get("key") != key or state.get("size") != digests.size or state.get("mtime_ns") != digests.mtime_ns:
            self._abort_quietly(state)
            state.clear()
            return {}
        found: dict[int, str] = {}
        marker = 0
        while True:
            try:
                page = self._call("list the uploaded parts", "list_parts", Bucket=self.bucket, Key=key,
                                  UploadId=state["upload_id"], PartNumberMarker=marker)
            except StorageError as exc:
                if exc.code == "NoSuchUpload":
                    state.clear()
                    return {}
                raise
            for part in page.get("Parts", []):
                found[int(part["PartNumber"])] = str(part["ETag"]).strip('"')
            if not page.get("IsTruncated"):
                break
            marker = int(page.get("NextPartNumberMarker") or 0)
        kept = {n: md5 for n, md5 in found.items() if 0 < n <= len(digests.part_md5s) and digests.part_md5s[n - 1] == md5}
        log.info("storage: continuing the multipart upload of %s: %d of %d parts already there", key, len(kept),
                 len(digests.part_md5s))
        return kept

    def _abort_quietly(self, state: dict) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=state["key"], UploadId=state["upload_id"])
        except Exception as exc:
            log.info("storage: could not abort an earlier multipart upload of %s: %s", state.get("key"), exc)

    def _check_unchanged(self, path: Path, digests: Digests) -> None:
        st = path.stat()
        if st.st_size != digests.size or st.st_mtime_ns != digests.mtime_ns:
            raise StorageError(f"{path} changed since its checksum was computed")

    def verify(self, key: str, digests: Digests, read_back: Callable[[str], str] | None = None) -> str:
        """That the object at key is the file: size, our SHA-256 metadata and the ETag, or else its SHA-256 read
        back. Returns how it was verified; StorageError when it is not the file."""
        head = self._call("check the uploaded recording", "head_object", Bucket=self.bucket, Key=key)
        size = int(head.get("ContentLength", -1))
        if size != digests.size:
            raise StorageError(f"{self.url_for(key)} holds {size} bytes, the WAV {digests.size}")
        stored_sha = (head.get("Metadata") or {}).get("sha256")
        if stored_sha is not None and stored_sha != digests.sha256:
            raise StorageError(f"{self.url_for(key)} carries SHA-256 {stored_sha}, the WAV has {digests.sha256}")
        etag = str(head.get("ETag", "")).strip('"')
        if etag == digests.expected_etag():
            return "etag"
        read = (read_back or self.sha256_of_object)(key)
        if read != digests.sha256:
            raise StorageError(f"{self.url_for(key)} read back has SHA-256 {read}, the WAV {digests.sha256}")
        return "read back"

    def sha256_of_object(self, key: str) -> str:
        sha = hashlib.sha256()
        for chunk in self.read(key):
            sha.update(chunk)
        return sha.hexdigest()

    def put_bytes(self, key: str, data: bytes, content_type: str, doing: str = "upload the sidecar") -> None:
        md5 = hashlib.md5(data).hexdigest()
        answer = self._call(doing, "put_object", Bucket=self.bucket, Key=key, Body=data, ContentMD5=_b64(md5),
                            ContentType=content_type)
        etag = str(answer.get("ETag", "")).strip('"')
        if etag and len(etag) == 32 and etag != md5:
            raise StorageError(f"{self.url_for(key)} stored with ETag {etag}, not the MD5 {md5} of what was sent")

    # ---- reading ----

    def head(self, key: str) -> dict:
        return self._call("look up the recording", "head_object", Bucket=self.bucket, Key=key)

    def open(self, key: str, start: int | None = None, end: int | None = None) -> tuple[Iterator[bytes], int, int]:
        """(chunks, length of what they hold, the object's full size); start/end inclusive byte positions."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if start is not None:
            kwargs["Range"] = f"bytes={start}-{'' if end is None else end}"
        answer = self._call("read the recording", "get_object", **kwargs)
        length = int(answer.get("ContentLength", 0))
        total = length
        content_range = answer.get("ContentRange")
        if content_range and "/" in content_range:
            total = int(content_range.rsplit("/", 1)[1])
        body = answer["Body"]

        def chunks() -> Iterator[bytes]:
            try:
                for chunk in body.iter_chunks(READ_CHUNK):
                    yield chunk
            except Exception as exc:
                raise self._error(exc, "read the recording") from exc
            finally:
                body.close()

        return chunks(), length, total

    def read(self, key: str) -> Iterator[bytes]:
        chunks, _length, _total = self.open(key)
        return chunks

    def download(self, key: str, destination: Path) -> int:
        """Write the object to destination (through a temporary file); its size."""
        tmp = destination.with_name(f".{destination.name}.part")
        written = 0
        try:
            with open(tmp, "wb") as f:
                for chunk in self.read(key):
                    f.write(chunk)
                    written += len(chunk)
            os.replace(tmp, destination)
        finally:
            if tmp.exists():
                tmp.unlink()
        return written

    # ---- checks ----

    def check_bucket(self) -> None:
        """A cheap look at the bucket (HEAD); StorageError when it refuses or cannot be reached."""
        try:
            self._call("reach the bucket", "head_bucket", Bucket=self.bucket)
        except StorageError as exc:
            if exc.code in ("404", "NotFound"):  # HEAD has no body to name the error: 404 is no such bucket
                raise StorageError(f"{self.shown} refused to reach the bucket: NoSuchBucket; "
                                   f"{REFUSALS['NoSuchBucket']}", refused=True, code="NoSuchBucket") from exc
            raise

    def probe(self) -> str:
        """The doctor's step: write a test object under the prefix, read it back, delete it. Returns what was
        done; StorageError with what failed."""
        key = object_key(self.prefix, f".fsctl-doctor/{uuid_module.uuid4().hex}.txt")
        data = f"fs-stream-controller doctor {uuid_module.uuid4().hex}\n".encode()
        self.put_bytes(key, data, "text/plain", doing="write a test object")
        back = b"".join(self.read(key))
        if back != data:
            raise StorageError(f"{self.url_for(key)} read back differs from what was written ({len(back)} bytes, "
                               f"{len(data)} written)")
        try:
            self._call("delete the test object", "delete_object", Bucket=self.bucket, Key=key)
        except StorageError as exc:
            return (f"wrote, read back {self.url_for(key)}; could not delete it ({exc.code}): remove it by hand "
                    "(the controller itself never deletes from the bucket)")
        return f"wrote, read back and deleted a test object under {self.shown}"


def parse_object_url(url: str) -> tuple[str, str]:
    if not url.startswith("s3://") or "/" not in url[5:]:
        raise StorageError(f"{url!r} is not an s3://bucket/key URL", refused=True)
    bucket, key = url[5:].split("/", 1)
    return bucket, key


def _read_range(path: Path, start: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(length)
    if len(data) != length:
        raise StorageError(f"{path} is shorter than it was ({start + len(data)} bytes, {start + length} expected)")
    return data

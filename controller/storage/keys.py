"""Where a recording goes in the bucket: ``storage.upload.url`` (s3://bucket/prefix) and the key template below
its prefix, rendered per recording. Pure: the config loader checks the template with these rules at start-up
and the uploader renders the same template, as recorder/filenames.py does for local file names.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from urllib.parse import urlsplit

from ..path_template import PathTemplate

KEY_FIELDS = ("date", "time", "uuid", "switch", "controller", "caller", "destination", "rule")
KEY_RULES = (f"fields {', '.join('{' + f + '}' for f in KEY_FIELDS)}; a relative path that contains {{uuid}} and "
             "ends in .wav, e.g. {date}/{switch}/{uuid}.wav")
S3_URL_RULES = ("s3://<bucket> or s3://<bucket>/<prefix>: a bucket name of 3 to 63 lower-case letters, digits, "
                "'.' and '-', a prefix of letters, digits, '/', '.', '_', '+' and '-'")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX = re.compile(r"[A-Za-z0-9._+/-]*")


def parse_s3_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) from s3://bucket/prefix; the prefix without slashes at either end ('' for none).
    ValueError saying what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not url.startswith("s3://"):
        raise ValueError(f"{url!r} does not start with s3://")
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(f"{url!r} has a query, a fragment or credentials; credentials come from the environment")
    bucket = parts.netloc
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ValueError(f"{bucket!r} is not a bucket name")
    prefix = parts.path.strip("/")
    if not _PREFIX.fullmatch(prefix) or "//" in prefix or ".." in prefix.split("/"):
        raise ValueError(f"the prefix {prefix!r} has characters or parts a key should not have")
    return bucket, prefix


class KeyTemplate(PathTemplate):
    """``{date}/{switch}/{uuid}.wav`` and the like, below the bucket's prefix. ValueError says what is wrong."""

    def __init__(self, template: str) -> None:
        super().__init__(template, KEY_FIELDS, outside="is not a relative path below the prefix", thing="key",
                         double_slash=False)

    def render(self, *, moment: datetime, uuid: str, switch: str = "", controller: str = "", caller: str = "",
               destination: str = "", rule: str = "") -> str:
        """The key below the prefix. ``uuid`` is the recording's id: the call's uuid, with -2, -3 ... for a
        call's second and later recordings (as their local file names have it), so no object is overwritten."""
        moment = moment.astimezone(timezone.utc)
        values = {"date": moment.strftime("%Y-%m-%d"), "time": moment.strftime("%H%M%S"), "uuid": uuid,
                  "switch": switch, "controller": controller, "caller": caller, "destination": destination,
                  "rule": rule}
        return self.fill(values)


def object_key(prefix: str, relative: str) -> str:
    return f"{prefix}/{relative}" if prefix else relative


def sidecar_key(wav_key: str) -> str:
    return wav_key[:-4] + ".json" if wav_key.endswith(".wav") else wav_key + ".json"

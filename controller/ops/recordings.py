"""``fs-stream-controller recordings``: the catalog, from the command line (issue #18).

    recordings -c CONFIG [--caller N] [--destination D] [--rule R] [--switch S] [--since T] [--until T]
               [--limit K] [--json]             the recordings, newest first (a table, or a JSON list)
    recordings show UUID -c CONFIG              one call's recordings, every column (JSON)
    recordings fetch UUID -o FILE -c CONFIG     its WAV: from this host's disk, else from the bucket; the SHA-256
                                                the catalog holds is checked

It reads the catalog the configuration names (catalog.url) directly, so it works whether the controller runs or
not, and from any controller of a fleet sharing one PostgreSQL catalog. Exit status: 0; 1 not found; 2 a bad
configuration or arguments; 3 the catalog or the bucket cannot be read, or the fetched file is not the one
catalogued.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from ..archive import catalog_url, controller_id, own_recording
from ..catalog.api import choose, parse_when
from ..catalog.schema import listed
from ..catalog.store import CatalogError, open_store, shown_url

NOT_FOUND, USAGE, UNAVAILABLE = 1, 2, 3


def main(config, args) -> int:
    if not config.catalog.enabled:
        print("the catalog is off (catalog.enabled: false) in this configuration", file=sys.stderr)
        return USAGE
    what = list(args.what)
    if what and what[0] not in ("show", "fetch") or what and len(what) != 2:
        print("usage: recordings [show UUID | fetch UUID -o FILE] -c CONFIG [filters]", file=sys.stderr)
        return USAGE
    url = catalog_url(config)
    store = open_store(url)
    try:
        if not what:
            return _list(store, args)
        rows = store.get(what[1])
        if not rows:
            print(f"no recording {what[1]} in the catalog {shown_url(url)}", file=sys.stderr)
            return NOT_FOUND
        if what[0] == "show":
            print(json.dumps(rows if len(rows) > 1 else rows[0], indent=1))
            return 0
        if not args.output:
            print("fetch needs -o FILE (where to write the WAV)", file=sys.stderr)
            return USAGE
        return _fetch(config, choose(rows, what[1]), Path(args.output))
    except CatalogError as exc:
        print(f"cannot read the catalog {shown_url(url)}: {exc}", file=sys.stderr)
        return UNAVAILABLE
    finally:
        store.close()


def _list(store, args) -> int:
    try:
        since = parse_when(args.since) if args.since else None
        until = parse_when(args.until) if args.until else None
    except ValueError as exc:
        print(f"recordings: {exc}", file=sys.stderr)
        return USAGE
    if not 1 <= args.limit <= 10000:
        print("recordings: --limit must be from 1 to 10000", file=sys.stderr)
        return USAGE
    rows = store.search(caller=args.caller, destination=args.destination, rule=args.rule, switch=args.switch,
                        since=since, until=until, limit=args.limit)
    if args.json:
        print(json.dumps([listed(row) for row in rows], indent=1))
        return 0
    columns = (("START (UTC)", 23), ("SWITCH", 16), ("CALLER", 14), ("DESTINATION", 14), ("RULE", 14),
               ("SECONDS", 9), ("GAP S", 7), ("CLOSE", 17), ("UPLOAD", 9), ("UUID", 0))
    print("  ".join(name.ljust(width) for name, width in columns).rstrip())
    for row in rows:
        values = (row["start_time"] or "", row["switch"] or "", row["caller"], row["destination"], row["rule"],
                  f"{row['duration_s']:.1f}", f"{row['gap_seconds']:.1f}", row["close_reason"] or "",
                  row["upload_state"] or "", row["recording_id"])
        print("  ".join(str(v)[:w].ljust(w) if w else str(v) for v, (_, w) in zip(values, columns)).rstrip())
    print(f"{len(rows)} recording{'s' if len(rows) != 1 else ''}" + (" (the limit)" if len(rows) == args.limit else ""))
    return 0


def _fetch(config, row: dict, output: Path) -> int:
    from ..storage.s3 import Bucket, StorageError, sha256_of

    local = own_recording(Path(config.recorder.directory), row.get("local_path"))
    source = None
    if local and row.get("controller_id") == controller_id(config) and local.is_file():
        shutil.copyfile(local, output)
        source = local
    elif row.get("object_url") and row.get("upload_state") == "verified":
        upload = config.storage.upload
        if upload is None:
            print(f"{row['recording_id']} is at {row['object_url']}, and this configuration has no storage.upload "
                  "(endpoint, region) to read it with", file=sys.stderr)
            return UNAVAILABLE
        try:
            bucket = Bucket(upload)
            bucket.download(bucket.key_of(row["object_url"]), output)
        except StorageError as exc:
            print(f"cannot fetch {row['object_url']}: {exc}", file=sys.stderr)
            return UNAVAILABLE
        source = row["object_url"]
    else:
        print(f"{row['recording_id']} is neither on this host's disk nor (yet) in the bucket (upload "
              f"{row.get('upload_state')}, recorded by {row.get('controller_id')})", file=sys.stderr)
        return NOT_FOUND
    size = output.stat().st_size
    note = ""
    if row.get("sha256"):
        if sha256_of(output) != row["sha256"]:
            print(f"{output}: its SHA-256 differs from the catalog's {row['sha256']}", file=sys.stderr)
            return UNAVAILABLE
        note = ", SHA-256 verified"
    print(f"wrote {output} ({size} bytes, from {source}{note})")
    return 0

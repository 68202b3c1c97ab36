"""The catalog's two engines against real databases (a SQLite file, a PostgreSQL server of the session's own):
the schema created and migrated, versioned; a row per recording written once whatever the order of the writes;
searching, newest first."""

from __future__ import annotations

import pytest

from controller.catalog.schema import SCHEMA_VERSION, gap_figures, recording_id, row_from_sidecar
from controller.catalog.store import CatalogError, _migrations, open_store, shown_url


def sidecar(uuid: str, start: str, **more) -> dict:
    base = {"uuid": uuid, "caller": "1000", "destination": "9999", "rule": "ext9999", "rate": 8000, "channels": 1,
            "start_time": start, "end_time": start.replace(":00.000Z", ":05.000Z"), "bytes": 80000,
            "duration_s": 5.0, "close_reason": "client_close", "error": None, "captured_s": 4.0,
            "captured_ratio": 0.8, "metadata": '{"team": "a"}',
            "gaps": [{"start_s": 1.0, "length_s": 0.5, "start_frame": 8000, "frames": 4000, "cause": "stream_lost"},
                     {"start_s": 3.0, "length_s": 0.5, "start_frame": 24000, "frames": 4000, "cause": "no_audio"}],
            "gaps_unlisted": 0, "gaps_unlisted_frames": 0}
    return base | more


def row(uuid: str, start: str, **more) -> dict:
    wav = f"/rec/2026-11-25/{uuid}.wav"
    return row_from_sidecar(sidecar(uuid, start), wav, switch="fs1", controller_id="c1", upload_state="none") | more


UUIDS = [f"{n:08x}-1111-4222-8333-444455556666" for n in range(1, 6)]


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'catalog.sqlite3'}"
    return request.getfixturevalue("pg_url")


def test_the_schema_is_created_at_the_current_version_and_a_second_migrate_changes_nothing(url):
    store = open_store(url)
    assert store.migrate() == SCHEMA_VERSION
    assert open_store(url).migrate() == SCHEMA_VERSION  # another controller, the same database
    assert store.count() == 0
    store.close()


def test_a_row_is_written_once_and_an_older_write_never_replaces_a_newer_one(url):
    store = open_store(url)
    first = row(UUIDS[0], "2026-11-25T06:00:00.000Z", upload_state="pending")
    verified = first | {"upload_state": "verified", "object_url": "s3://b/k.wav", "sha256": "ab" * 32,
                        "revision": first["revision"] + 1}
    assert store.upsert(verified)
    assert not store.upsert(first)  # the queued write that lands late
    assert store.upsert(verified) is False  # the same write again (a retry after a lost answer): nothing changes
    [got] = store.get(UUIDS[0])
    assert (got["upload_state"], got["object_url"], got["switch"], got["controller_id"]) == \
        ("verified", "s3://b/k.wav", "fs1", "c1")
    assert got["gaps"] == 2 and got["gap_seconds"] == 1.0
    assert got["gaps_by_cause"] == {"stream_lost": {"count": 1, "seconds": 0.5}, "no_audio": {"count": 1, "seconds": 0.5}}
    assert got["start_time"] == "2026-11-25T06:00:00.000Z" and got["metadata"] == '{"team": "a"}'
    assert store.count() == 1
    store.close()


def test_search_filters_and_orders_newest_first(url):
    store = open_store(url)
    for n, uuid in enumerate(UUIDS):
        store.upsert(row(uuid, f"2026-11-25T0{n}:00:00.000Z", caller="1000" if n % 2 else "2000",
                         switch="fs1" if n < 3 else "fs2"))
    newest = [r["uuid"] for r in store.search()]
    assert newest == list(reversed(UUIDS))
    assert [r["uuid"] for r in store.search(caller="1000")] == [UUIDS[3], UUIDS[1]]
    assert [r["uuid"] for r in store.search(switch="fs2")] == [UUIDS[4], UUIDS[3]]
    assert [r["uuid"] for r in store.search(since="2026-11-25T01:00:00.000Z", until="2026-11-25T03:00:00Z")] == \
        [UUIDS[2], UUIDS[1]]
    assert len(store.search(limit=2)) == 2
    assert store.existing(UUIDS[:2] + ["nope"]) == set(UUIDS[:2])
    assert store.search(destination="1234") == []
    store.close()


def test_a_calls_second_recording_is_a_row_of_its_own(url):
    store = open_store(url)
    one = row(UUIDS[0], "2026-11-25T06:00:00.000Z")
    two = row_from_sidecar(sidecar(UUIDS[0], "2026-11-25T06:01:00.000Z"), f"/rec/x/{UUIDS[0]}-2.wav", switch="fs1",
                           controller_id="c1", upload_state="none")
    assert two["recording_id"] == f"{UUIDS[0]}-2"
    store.upsert(one)
    store.upsert(two)
    assert [r["recording_id"] for r in store.get(UUIDS[0])] == [UUIDS[0], f"{UUIDS[0]}-2"]
    assert [r["recording_id"] for r in store.get(f"{UUIDS[0]}-2")] == [f"{UUIDS[0]}-2"]
    store.close()


def test_an_older_schema_is_migrated_to_the_next_version_at_start(url):
    old = open_store(url)
    assert old.migrate() == 1
    old.upsert(row(UUIDS[0], "2026-11-25T06:00:00.000Z"))
    old.close()
    engine = "sqlite" if url.startswith("sqlite") else "postgresql"
    newer = dict(_migrations(engine))
    newer[2] = ["CREATE INDEX fsctl_recordings_rule ON fsctl_recordings (rule, start_time)"]
    upgraded = open_store(url, migrations=newer)
    assert upgraded.migrate() == 2
    assert [r["uuid"] for r in upgraded.get(UUIDS[0])] == [UUIDS[0]]  # the rows stay
    upgraded.close()
    # A controller not upgraded yet keeps writing to the newer schema (migrations only add).
    behind = open_store(url)
    assert behind.migrate() == 2
    assert behind.upsert(row(UUIDS[1], "2026-11-25T07:00:00.000Z"))
    behind.close()


def test_a_database_that_is_down_is_a_catalog_error_and_the_store_reconnects(postgres, pg_url):
    store = open_store(pg_url)
    store.migrate()
    postgres.stop()
    try:
        with pytest.raises(CatalogError) as caught:
            store.upsert(row(UUIDS[0], "2026-11-25T06:00:00.000Z"))
        assert "password" not in str(caught.value)
    finally:
        postgres.start()
    assert store.upsert(row(UUIDS[0], "2026-11-25T06:00:00.000Z"))  # a new connection, no restart needed
    assert store.count() == 1
    store.close()


def test_urls_are_shown_without_their_password():
    assert shown_url("postgresql://fsctl:s3cret@db.example.net:5433/rec?sslmode=require") == \
        "postgresql://fsctl@db.example.net:5433/rec"


def test_recording_ids_and_gap_figures():
    uuid = UUIDS[0]
    assert recording_id(uuid, f"/r/{uuid}.wav") == uuid
    assert recording_id(uuid, f"/r/{uuid}-3.wav") == f"{uuid}-3"
    assert recording_id(uuid, f"/r/1000-{uuid}.wav") == uuid
    count, seconds, by_cause = gap_figures({"rate": 8000, "gaps": [], "gaps_unlisted": 2,
                                            "gaps_unlisted_frames": 16000})
    assert (count, seconds, by_cause) == (2, 2.0, {"unlisted": {"count": 2, "seconds": 2.0}})

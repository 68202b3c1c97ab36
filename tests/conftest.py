"""Tests drive real sockets from gevent greenlets; patch the stdlib before anything imports it."""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import pathlib  # noqa: E402

import pytest  # noqa: E402

FIXTURES = pathlib.Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "freeswitch-1.10.12"


@pytest.fixture(scope="session")
def captures() -> pathlib.Path:
    """The byte-exact captures from a real FreeSWITCH 1.10.12 + mod_audio_stream (../shared/fixtures)."""
    if not FIXTURES.is_dir():
        # A third of the suite checks the simulator and the parsers against these: never pass without them.
        pytest.fail(f"captures not found at {FIXTURES}: the tests need the shared fixtures beside this checkout")
    return FIXTURES


@pytest.fixture
def sim():
    """A simulated FreeSWITCH on an ephemeral loopback port, shut down after the test."""
    from controller.simulator import Simulator

    simulator = Simulator(host="127.0.0.1", esl_port=0, password="ClueCon")
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def harness(sim, tmp_path):
    """make(rules_yaml, extra_yaml="") -> a started Harness (controller in this process) against `sim`."""
    from harness import RULE_9999, Harness

    made = []

    def make(rules: str = RULE_9999, extra: str = "", recorder: str = ""):
        h = Harness(sim, tmp_path / "rec", rules, extra, recorder).start()
        made.append(h)
        return h

    yield make
    for h in made:
        h.stop()


@pytest.fixture
def ws():
    """A plain WebSocket server (tests/test_simulator.py) standing in for the recorder, for simulator tests."""
    from test_simulator import WsServer

    server = WsServer()
    yield server
    server.stop()


@pytest.fixture
def esl(sim):
    """A raw Event Socket client, logged in to `sim`."""
    from test_simulator import EslClient

    client = EslClient(sim.esl_port).login()
    yield client
    client.close()


# ---- real servers for the catalog and the bucket (issue #18): tests/services.py ----

# boto3 in the tests talks only to the S3 server on 127.0.0.1: credentials of its own from the environment, so
# its chain never looks further (~/.aws, or the instance metadata address, which is not on this machine).
for _name, _value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                      ("AWS_DEFAULT_REGION", "us-east-1"), ("AWS_EC2_METADATA_DISABLED", "true")):
    os.environ.setdefault(_name, _value)

@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server of the session's own (a throw-away data directory, a unix socket); tests that stop it
    start it again, and every test gets its own database (``pg_url``)."""
    from services import PostgresServer

    server = PostgresServer()
    server.start()
    yield server
    server.remove()


@pytest.fixture
def pg_url(postgres):
    """The URL of a fresh database on the session's PostgreSQL."""
    postgres.ensure_running()
    yield postgres.create_database()
    postgres.ensure_running()


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """moto's S3 over real HTTP on 127.0.0.1 (tests/s3_server.py), for the session; ``bucket`` makes a bucket."""
    from services import S3Server

    server = S3Server(tmp_path_factory.mktemp("s3"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def bucket(s3):
    """A new, empty bucket on the session's S3 server (running again if a test stopped it)."""
    if s3.process is None:
        s3.start()
    yield s3.make_bucket()
    if s3.process is None:
        s3.start()

"""Real servers for the catalog and storage tests (issue #18): a throw-away PostgreSQL (its own data directory,
a unix socket only) and an S3-compatible server (tests/s3_server.py: moto over real HTTP on 127.0.0.1). Each can
be stopped and started again to make the faults the tests need. Used by tests/conftest.py and scripts/soak_catalog.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid as uuid_module
from pathlib import Path

HERE = Path(__file__).resolve().parent
START_TIMEOUT_S = 30


def postgres_bin() -> Path | None:
    """Where initdb and pg_ctl are: $FSCTL_PG_BIN, the PATH, or Debian's /usr/lib/postgresql/<version>/bin."""
    if os.environ.get("FSCTL_PG_BIN"):
        return Path(os.environ["FSCTL_PG_BIN"])
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


class PostgresServer:
    """A PostgreSQL server of its own under `base`: started, stopped, started again on the same socket."""

    def __init__(self, base: Path | None = None, port: int = 5432) -> None:
        # Its own directory in /tmp (which every user may pass through; pytest's is root's alone), removed by
        # remove(). Short, too: a unix socket's path has at most 107 bytes.
        self.base = Path(base) if base is not None else Path(tempfile.mkdtemp(prefix="fsctl-pg-"))
        self.data = self.base / "data"
        self.socket_dir = self.base / "sock"
        self.port = port
        self.bin = postgres_bin()
        if self.bin is None:
            raise RuntimeError("PostgreSQL is not installed (no initdb): scripts/test installs it "
                               "(apt-get install -y postgresql), or set FSCTL_PG_BIN to its bin directory")
        # PostgreSQL refuses to run as root: then it runs as the postgres user, which owns its files.
        self.user = "postgres" if os.geteuid() == 0 else None
        self.running = False

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bin / argv[0]), *argv[1:]]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=START_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:1])} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        return done

    def init(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if self.user:
            shutil.chown(self.base, self.user)
            shutil.chown(self.socket_dir, self.user)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        if not self.data.exists():
            self.init()
        options = (f"-c listen_addresses='' -c unix_socket_directories={self.socket_dir} -c port={self.port} "
                   # fsync off: nothing here outlives the machine; a commit still reaches the WAL (the OS) before
                   # it is answered, so a crash of the server (stop -m immediate) loses no committed row.
                   "-c fsync=off -c full_page_writes=off -c max_connections=100")
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", str(START_TIMEOUT_S), "-l", str(self.base / "log"),
                  "-o", options, "start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """mode: fast (clean: sessions end), immediate (like a crash)."""
        if self.running:
            self._run("pg_ctl", "-D", str(self.data), "-w", "-m", mode, "stop", check=False)
            self.running = False

    def remove(self) -> None:
        """Stop it and delete its data directory."""
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    def ensure_running(self) -> None:
        if not self.running:
            self.start()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}&port={self.port}"

    def create_database(self, name: str | None = None) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = name or f"t_{uuid_module.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


class S3Server:
    """tests/s3_server.py in a process of its own: stop() keeps its objects (a clean stop), kill() loses what it
    took since the last stop (a crash); start() comes back on the same port."""

    def __init__(self, base: Path, *, auth_after: int | None = None) -> None:
        self.base = Path(base)
        self.base.mkdir(parents=True, exist_ok=True)
        self.state = self.base / "s3-state.pickle"
        self.auth_after = auth_after
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        argv = [sys.executable, str(HERE / "s3_server.py"), "--port", str(self.port), "--state", str(self.state)]
        if self.auth_after is not None:
            argv += ["--auth-after", str(self.auth_after)]
        with open(self.base / "s3.log", "ab") as log:
            self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                                            text=True)
        line = self._first_line()
        if not line.startswith("port "):
            self.process.kill()
            raise RuntimeError(f"the S3 server did not start (see {self.base / 's3.log'}): {line!r}")
        self.port = int(line.split()[1])

    def _first_line(self) -> str:
        try:
            import gevent

            with gevent.Timeout(START_TIMEOUT_S, TimeoutError("the S3 server did not say its port")):
                return self.process.stdout.readline()
        except ImportError:
            return self.process.stdout.readline()

    def stop(self) -> None:
        """A clean stop: connections in flight end, the objects are kept."""
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(START_TIMEOUT_S)
            self.process = None

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(START_TIMEOUT_S)
            self.process = None

    def client(self, access_key: str = "testing", secret_key: str = "testing"):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                                          request_checksum_calculation="when_required",
                                          response_checksum_validation="when_required"))

    def make_bucket(self, name: str | None = None) -> str:
        name = name or f"rec-{uuid_module.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def objects(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        client = self.client()
        found = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                found[item["Key"]] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        return found

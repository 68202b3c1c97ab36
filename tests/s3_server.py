"""An S3-compatible server for the tests and the soak: moto's standalone server (its WSGI app on werkzeug, real
HTTP on 127.0.0.1), in a process of its own, that keeps its buckets and objects across a stop, as a real server
keeps them on disk: SIGTERM writes its state to --state before it exits, and a start loads it. SIGKILL loses
what it held since the last stop (a crash). Prints "port N" on stdout once it listens.

    python tests/s3_server.py --port 0 --state /tmp/s3.pickle [--auth-after N]

--auth-after N: moto checks credentials (IAM) after the first N requests, so the test can make a bucket, a
user and that user's key and policy first, and every request after that needs real credentials.
"""

from __future__ import annotations

import argparse
import os
import pickle
import signal
import sys


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--state", required=True)
    parser.add_argument("--auth-after", type=int, default=None)
    args = parser.parse_args()
    if args.auth_after is not None:
        os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = str(args.auth_after)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")

    from moto.iam.models import iam_backends
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from moto.s3.models import s3_backends
    from moto.server import MotoRequestHandler
    from werkzeug.serving import make_server

    backends = {"s3": s3_backends, "iam": iam_backends}
    if os.path.exists(args.state):
        with open(args.state, "rb") as f:
            saved = pickle.load(f)
        for name, state in saved.items():
            backends[name].update(state)

    app = DomainDispatcherApplication(create_backend_app)
    server = make_server("127.0.0.1", args.port, app, threaded=True, request_handler=MotoRequestHandler)

    def stop(_signum, _frame) -> None:
        tmp = args.state + ".tmp"
        with open(tmp, "wb") as f:
            pickle.dump({name: dict(backend) for name, backend in backends.items()}, f)
        os.replace(tmp, args.state)
        os._exit(0)  # connections in flight end here, as with any server stopped under load

    signal.signal(signal.SIGTERM, stop)
    print(f"port {server.server_port}", flush=True)
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()

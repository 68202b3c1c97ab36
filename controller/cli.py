"""The console script ``fs-stream-controller``: parse the command line, check the configuration, run.

gevent's monkey patching belongs to the program's entry point, here, before anything imports socket, ssl or
threading; importing ``controller.app`` (as the tests do) patches nothing.
"""

from __future__ import annotations

import argparse
import sys

from .config import LOG_LEVELS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="fs-stream-controller",
        description="Call controller beside FreeSWITCH: starts mod_audio_stream over the Event Socket for the "
                    "calls your rules match and records each call's audio to WAV.")
    parser.add_argument("-c", "--config", default="config/controller.yaml", help="YAML configuration file")
    parser.add_argument("--check", action="store_true", help="validate the configuration and exit")
    parser.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default=None,
                        help="overrides logging.level from the configuration")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from gevent import monkey

    monkey.patch_all()

    import logging

    from .app import Controller
    from .config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print(f"{args.config}: OK ({len(config.rules)} rules)")
        return 0
    level = args.log_level or config.logging.level
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Each stream holds a socket and a file; systemd and most shells start a process with a soft limit of 1024.
    raise_open_file_limit(2 * config.limits.recorder_max_connections + 64)
    Controller(config, args.config).serve_forever()
    return 0


def raise_open_file_limit(wanted: int) -> None:
    """Raise the soft RLIMIT_NOFILE towards ``wanted`` (never past the hard limit); warn if it stays below."""
    import logging
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft != resource.RLIM_INFINITY and soft < wanted:
        logging.getLogger("controller").warning(
            "open file limit is %d, below the %d that limits.recorder_max_connections needs; raise LimitNOFILE "
            "(systemd) or ulimit -n, or lower the limits", soft, wanted)


if __name__ == "__main__":
    sys.exit(main())

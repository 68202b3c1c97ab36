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
    Controller(config, args.config).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())

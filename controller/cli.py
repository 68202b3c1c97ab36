"""The console script ``fs-stream-controller``: run the controller, or check, diagnose or ask it.

    fs-stream-controller [run] -c CONFIG        the controller (the default when no subcommand is given)
    fs-stream-controller check CONFIG [--call DEST ...]   the configuration as understood; what a call would get
    fs-stream-controller doctor -c CONFIG       the troubleshooting list, run against the live switch
    fs-stream-controller status -c CONFIG       what the running controller is doing; non-zero when unhealthy
    fs-stream-controller recordings -c CONFIG   the catalog: list (filters), show UUID, fetch UUID -o FILE

gevent's monkey patching belongs to the program's entry point, here, before anything imports socket, ssl or
threading; importing ``controller.app`` (as the tests do) patches nothing.
"""

from __future__ import annotations

import argparse
import sys

from .config import LOG_LEVELS

DEFAULT_CONFIG = "config/controller.yaml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fs-stream-controller",
        description="Call controller beside FreeSWITCH: starts mod_audio_stream over the Event Socket for the "
                    "calls your rules match and records each call's audio to WAV. Without a subcommand it runs.")
    _run_options(parser)
    parser.add_argument("--check", action="store_true", help="validate the configuration and exit (see: check)")
    commands = parser.add_subparsers(dest="command", metavar="{run,check,doctor,status,recordings}")
    run = commands.add_parser("run", help="run the controller (the default)", description="Run the controller.")
    _run_options(run)
    check = commands.add_parser(
        "check", help="print the configuration as understood, or what one call would get",
        description="Validate CONFIG and print its rules as understood. With --call, print which rule a call "
                    "would match and the exact Event Socket commands the controller would send for it.")
    check.add_argument("config", nargs="?", default=DEFAULT_CONFIG, help=f"YAML configuration file ({DEFAULT_CONFIG})")
    check.add_argument("--call", metavar="DEST", help="a call to this destination number")
    check.add_argument("--caller", default="1000", metavar="N", help="its caller id number (default 1000)")
    check.add_argument("--context", default="default", metavar="C", help="its dialplan context (default default)")
    check.add_argument("--direction", default="inbound", choices=("inbound", "outbound"),
                       help="its leg's direction (default inbound)")
    check.add_argument("--uuid", help="its channel uuid (default: a new one)")
    doctor = commands.add_parser(
        "doctor", help="run the troubleshooting list against the live switch",
        description="Check, one step at a time, that the whole chain works: the Event Socket, the module, the "
                    "recorder's address, a test call streamed to public_url, the recordings directory. "
                    "Exit status 0 only when every step passes.")
    _config_option(doctor)
    status = commands.add_parser(
        "status", help="ask the running controller what it is doing",
        description="Ask the running controller (its HTTP listener, metrics.listen_host:listen_port) for its "
                    "health and live calls and print them. Exit status 1 when it is unhealthy, 3 when it "
                    "cannot be reached.")
    _config_option(status)
    recordings = commands.add_parser(
        "recordings", help="list, show or fetch recordings from the catalog",
        description="List the catalog's recordings, newest first (filters below), show one call's (show UUID) "
                    "or fetch its WAV from this host's disk or from the bucket (fetch UUID -o FILE). Exit status "
                    "1 when not found, 3 when the catalog or the bucket cannot be read.")
    _config_option(recordings)
    recordings.add_argument("what", nargs="*", metavar="show UUID | fetch UUID",
                            help="nothing: list; show UUID: every column of that call's recordings; fetch UUID: "
                                 "its WAV")
    recordings.add_argument("--caller", metavar="N", help="only calls from this caller id number")
    recordings.add_argument("--destination", metavar="D", help="only calls to this destination")
    recordings.add_argument("--rule", metavar="R", help="only recordings of this rule")
    recordings.add_argument("--switch", metavar="S", help="only calls on this FreeSWITCH host")
    recordings.add_argument("--since", metavar="T", help="started at or after T: ISO 8601 (2026-11-25, "
                                                         "2026-11-25T06:00Z) or a time ago (30m, 2h, 7d)")
    recordings.add_argument("--until", metavar="T", help="started before T (as --since)")
    recordings.add_argument("--limit", metavar="K", type=int, default=50, help="at most K recordings (default 50)")
    recordings.add_argument("--json", action="store_true", help="print JSON instead of a table")
    recordings.add_argument("-o", "--output", metavar="FILE", help="fetch: where to write the WAV")
    return parser


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=f"YAML configuration file ({DEFAULT_CONFIG})")


def _run_options(parser: argparse.ArgumentParser) -> None:
    _config_option(parser)
    parser.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default=None,
                        help="overrides logging.level from the configuration")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from gevent import monkey

    monkey.patch_all()

    from .config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "check" or args.check:
        from .ops import check

        return check.main(config, args)
    if args.command == "doctor":
        from .ops import doctor

        return doctor.main(config, args)
    if args.command == "recordings":
        from .ops import recordings

        return recordings.main(config, args)
    if args.command == "status":
        from .ops import status

        return status.main(config, args)
    return run(config, args)


def run(config, args: argparse.Namespace) -> int:
    from .app import Controller
    from .ops import logs

    logs.configure(args.log_level or config.logging.level, config.logging.timestamps)
    # Each stream holds a socket and a file; systemd and most shells start a process with a soft limit of 1024.
    raise_open_file_limit(2 * config.limits.recorder_max_connections + 64)
    from .config import ConfigError

    try:
        controller = Controller(config, args.config)
    except ConfigError as exc:  # found only when used: a certificate that does not match its key, say
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    controller.serve_forever()
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

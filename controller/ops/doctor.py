"""``fs-stream-controller doctor``: the troubleshooting list, run against the live switch (being built)."""

from __future__ import annotations


def main(config, args) -> int:
    print("doctor: not available yet", flush=True)
    return 2

"""The ``statestream`` command.

Every flag has an environment-variable default, shown in ``--help``; this
module and :mod:`statestream.config` are the only readers of the environment.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from statestream import __version__
from statestream.config import env_setting
from statestream.errors import StateStreamError

__all__ = ["build_parser", "main"]


def _env_help(text: str, env: str, default: str) -> str:
    return f"{text} (env {env}; default: {default})"


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``statestream`` command."""
    parser = argparse.ArgumentParser(
        prog="statestream",
        description="Stream processing with durable, fault-tolerant state.",
    )
    parser.add_argument("--version", action="version", version=f"statestream {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser(
        "demo",
        help="count page views into durable state; stop and rerun it to see state survive",
        description=(
            "Count page views from a generated stream into a LevelDB store, committing "
            "data and offset atomically. Stop it at any time (Ctrl-C or kill -9) and run "
            "it again: it resumes where its state says and checks its counts."
        ),
    )
    default_dir = env_setting("STATESTREAM_DATA_DIR", "./statestream-data")
    demo.add_argument(
        "--data-dir",
        default=default_dir,
        help=_env_help("directory for state", "STATESTREAM_DATA_DIR", default_dir),
    )
    default_events = env_setting("STATESTREAM_DEMO_EVENTS", "20000")
    demo.add_argument(
        "--events",
        type=int,
        default=int(default_events),
        help=_env_help("events to process this run", "STATESTREAM_DEMO_EVENTS", default_events),
    )
    demo.add_argument("--commit-every", type=int, default=500, help="events per commit")
    demo.add_argument("--pause", type=float, default=0.0, help="seconds to sleep after each commit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            from statestream.demo import run_demo

            if args.events < 0 or args.commit_every <= 0:
                print("statestream: --events must be >= 0 and --commit-every > 0", file=sys.stderr)
                return 2
            result = run_demo(args.data_dir, args.events, args.commit_every, pause=args.pause)
            return 0 if result.verified else 1
    except StateStreamError as exc:
        print(f"statestream: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("statestream: interrupted; state is intact up to the last commit", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    raise SystemExit(main())

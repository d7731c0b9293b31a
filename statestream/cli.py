"""The ``statestream`` command: ``worker``, ``tables``, ``inspect``, ``produce``,
``consume`` and ``demo``.

Every flag has an environment-variable default, shown in ``--help``; this
module and :mod:`statestream.config` are the only readers of the environment.
Exit codes: 0 clean stop, 1 fatal error (message on stderr), 2 bad arguments.
Secrets in the settings (passwords in broker and store URLs) show as ``***``
in help, log lines and error messages. Logging is set up by
:mod:`statestream.logs` (``--log-level``, ``--log-format``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

from statestream import __version__
from statestream.app import App
from statestream.config import APP_ENV, ERROR_POLICIES, GUARANTEES, env_setting
from statestream.errors import (
    ConfigurationError,
    StateStreamError,
)
from statestream.logs import LOG_FORMATS, LoggingSetup, LogLevels, configure_logging
from statestream.logs import parse_log_levels as _parse_log_levels
from statestream.secrets import redact_text, redact_url, url_secrets
from statestream.serde import CODECS

if TYPE_CHECKING:
    pass

__all__ = ["build_parser", "load_app", "main"]


class _Secrets:
    """The secrets of the settings in use, hidden in whatever the command prints.

    Learned from the flags and the environment first, then from the app's
    resolved settings; read by the log formatter from any thread.
    """

    def __init__(self) -> None:
        # Replaced, never mutated, so a logging thread always reads a whole set.
        self._known: frozenset[str] = frozenset()

    def add_url(self, url: str | None) -> None:
        """Learn the secrets of ``url`` (``None``: nothing to learn)."""
        if url:
            self._known = self._known | url_secrets(url)

    def add_app(self, app: App) -> None:
        """Learn the secrets of every URL ``app`` uses."""
        self.add_url(app.config.broker_url)
        self.add_url(app.config.store_url)
        for table in app.tables():
            self.add_url(table.store_url)
        for global_table in app.global_tables():
            self.add_url(global_table.store_url)
        self.add_secret(app.config.web_token)

    def add_secret(self, secret: str | None) -> None:
        """Learn a secret that is a whole value (the endpoint's token)."""
        if secret:
            self._known = self._known | {secret}

    def redact(self, text: str) -> str:
        """Return ``text`` with every known secret, and every URL's secrets, as ``***``."""
        return redact_text(text, self._known)


@dataclass
class _Run:
    """What every command's runner is handed (the thread running ``main``)."""

    secrets: _Secrets
    logging: LoggingSetup


def load_app(spec: str) -> App:
    """Import ``module:attribute`` and return the :class:`App` it names."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigurationError(
            f"app must be given as module:attribute, e.g. myapp:app; got {spec!r}"
        )
    # Like python -m: the working directory is importable.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import module {module_name!r}: {exc}") from exc
    app = getattr(module, attr, None)
    if not isinstance(app, App):
        raise ConfigurationError(
            f"{spec!r} is {type(app).__name__ if app is not None else 'missing'}, "
            "not a statestream App"
        )
    return app


_HELP = {
    "broker_url": "log to use: kafka://host:9092[,host2:9092] or embedded:///dir",
    "store_url": "where table state lives: leveldb:///dir, memory://, aerospike://host/ns",
    "data_dir": "directory for the embedded log and local stores",
    "commit_interval": "seconds between commits",
    "processing_guarantee": f"one of {', '.join(GUARANTEES)}",
    "partitions": "partition count for source and output topics statestream creates",
    "error_policy": f"bad records: {', '.join(ERROR_POLICIES)}",
    "dead_letter_topic": "topic for the dead_letter policy (default: {app_id}-dead-letters)",
    "max_queued": "records queued per partition before fetching pauses",
    "num_standby_replicas": "standby copies of each partition's local tables (Kafka only)",
    "acceptable_recovery_lag": "records a copy may lag and still take a partition over at once",
    "probing_rebalance_interval": "seconds between rebalances that promote caught-up warm-ups",
    "instance_id": "static group member id, stable across restarts (Kafka only)",
    "strict_keys": "true: a table key on a partition it does not hash to stops the worker",
    "web_port": "port of the HTTP endpoint (queries, /health, /metrics; 0: any free port; "
    "default: none)",
    "web_host": "address the HTTP endpoint binds to (default 127.0.0.1)",
    "web_url": "the endpoint's URL other workers redirect to (default http://host:port)",
    "query_share": "share of the time queries may take while the worker is busy (default "
    "0.02; 1: never paced)",
    "gc_threshold": "allocations between two collections of the garbage collector's youngest "
    "generation while the worker runs (default 50000; 0: Python's own setting)",
}
#: Settings read from the environment only, never a flag: a secret on a
#: command line is visible to every user of the machine (ps, /proc).
_ENV_ONLY = frozenset({"web_token"})
_TYPES: dict[str, Any] = {
    "commit_interval": float,
    "partitions": int,
    "max_queued": int,
    "num_standby_replicas": int,
    "acceptable_recovery_lag": int,
    "probing_rebalance_interval": float,
    "web_port": int,
    "query_share": float,
    "gc_threshold": int,
}


def _add_app_flags(
    parser: argparse.ArgumentParser,
    app_help: str = "the app to run, as module:attribute (e.g. myapp:app)",
    metavar: str | None = None,
) -> None:
    parser.add_argument("app", help=app_help, metavar=metavar)
    parser.epilog = (
        "environment only: STATESTREAM_WEB_TOKEN, the bearer token every request to the "
        "HTTP endpoint must carry ("
        + ("set" if os.environ.get(APP_ENV["web_token"]) else "unset")
        + "; never shown, and never a flag: a command line is visible to every user)"
    )
    for name, env in APP_ENV.items():
        if name in _ENV_ONLY:
            continue
        current = os.environ.get(env)
        shown = f"currently {redact_url(current)!r}" if current else "unset"
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=_TYPES.get(name, str),
            default=None,
            help=f"{_HELP[name]} (env {env}: {shown}; otherwise the app's setting or default)",
        )
    _add_log_flags(parser, "INFO")


def _log_levels(text: str) -> LogLevels:
    try:
        return _parse_log_levels(text)
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_log_flags(parser: argparse.ArgumentParser, default_level: str) -> None:
    """``--log-level`` and ``--log-format`` (see statestream.logs and docs/operations.md)."""
    level = env_setting("STATESTREAM_LOG_LEVEL", default_level)
    parser.add_argument(
        "--log-level",
        type=_log_levels,
        default=level,
        metavar="LEVEL[,LOGGER=LEVEL...]",
        help="log level, and levels of single loggers, e.g. INFO,kafka=DEBUG; kafka-python's "
        "loggers stay at WARNING unless named (env STATESTREAM_LOG_LEVEL; "
        f"default {default_level})",
    )
    log_format = env_setting("STATESTREAM_LOG_FORMAT", "text")
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=log_format,
        help="text lines, or one json object per line (env STATESTREAM_LOG_FORMAT; "
        f"default {log_format})",
    )


def _shown(current: str | None) -> str:
    return f"currently {redact_url(current)!r}" if current else "unset"


def _partition_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return count


def _add_topic_flags(parser: argparse.ArgumentParser) -> None:
    """The flags ``produce`` and ``consume`` share: which log, and the codecs."""
    current_url = os.environ.get("STATESTREAM_BROKER_URL") or None
    parser.add_argument(
        "--broker-url",
        default=current_url,
        help=f"{_HELP['broker_url']} (env STATESTREAM_BROKER_URL: {_shown(current_url)}; "
        "default: the embedded log in DATA_DIR/log)",
    )
    default_dir = env_setting("STATESTREAM_DATA_DIR", "./statestream-data")
    parser.add_argument(
        "--data-dir",
        default=default_dir,
        help=f"data directory of the worker, whose embedded log is used when no broker URL "
        f"is given (env STATESTREAM_DATA_DIR; default {default_dir})",
    )
    codec = env_setting("STATESTREAM_CODEC", "json")
    parser.add_argument(
        "--codec",
        default=codec,
        help=f"codec of values: {', '.join(sorted(CODECS))} "
        f"(env STATESTREAM_CODEC; default {codec})",
    )
    key_codec = os.environ.get("STATESTREAM_KEY_CODEC") or None
    parser.add_argument(
        "--key-codec",
        default=key_codec,
        help=f"codec of keys (env STATESTREAM_KEY_CODEC: {_shown(key_codec)}; "
        "default: the --codec)",
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``statestream`` command."""
    parser = argparse.ArgumentParser(
        prog="statestream",
        description="Stream processing with durable, fault-tolerant state.",
    )
    parser.add_argument("--version", action="version", version=f"statestream {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    worker = commands.add_parser(
        "worker",
        help="run an app's processors until stopped (SIGTERM/SIGINT stop it gracefully)",
        description=(
            "Run a worker of APP. Flags override the app's settings. While table partitions "
            "restore from their changelogs, a live progress bar shows on standard error if it "
            "is a terminal; log lines report progress every few seconds either way."
        ),
    )
    _add_app_flags(worker)

    tables = commands.add_parser(
        "tables",
        help="list an app's tables, changelog topics, stores and local partition states",
    )
    _add_app_flags(tables)

    inspect = commands.add_parser(
        "inspect",
        help="print the keys and values of a table's stores (read-only, without running the app)",
        description=(
            "Print the keys and values of table --table, one per line: partition, key and "
            "value, separated by tabs (escaped like consume), or with --json one object per "
            "line; a windowed table's lines have the window's start and end (ms) before the "
            "value. TARGET is the app (module:attribute: the table's store and codecs are the "
            "app's, with the settings flags below) or a store URL (decoded with --key-codec "
            "and --codec). The app is imported, not run; each store is opened, read and "
            "closed, and nothing is written to it. A LevelDB store a running worker holds is "
            "refused; stop the worker first."
        ),
    )
    _add_app_flags(inspect, "the app, as module:attribute, or a store URL", "TARGET")
    inspect.add_argument("--table", required=True, help="the table (or global table) to read")
    inspect.add_argument(
        "--partition",
        type=int,
        default=None,
        metavar="N",
        help="read partition N only (default: every partition with a store here)",
    )
    inspect.add_argument(
        "--prefix", default=None, help="only keys starting with PREFIX (str or json keys)"
    )
    inspect.add_argument(
        "--limit",
        type=int,
        default=100,
        metavar="N",
        help="print at most N entries in all (0: every entry; default 100)",
    )
    inspect.add_argument(
        "--json",
        action="store_true",
        help="print one json object per entry: partition, key, value (and start, end)",
    )
    inspect.add_argument(
        "--windowed",
        action="store_true",
        help="with a store URL: the table is windowed; its window rows are shown as stored "
        "(a hopping table's: its slices of one step). With an app, the app says",
    )
    key_codec = os.environ.get("STATESTREAM_KEY_CODEC") or None
    codec = env_setting("STATESTREAM_CODEC", "json")
    inspect.add_argument(
        "--codec",
        default=codec,
        help=f"with a store URL: codec of values, one of {', '.join(sorted(CODECS))} "
        f"(env STATESTREAM_CODEC; default {codec})",
    )
    inspect.add_argument(
        "--key-codec",
        default=key_codec,
        help=f"with a store URL: codec of keys (env STATESTREAM_KEY_CODEC: {_shown(key_codec)}; "
        "default: the --codec)",
    )

    produce = commands.add_parser(
        "produce",
        help="write lines from standard input to a topic, keyed or not",
        description=(
            "Write each line of standard input to TOPIC as one record. By default the line "
            "is the value (no key: records are spread over the partitions); with "
            "--key-separator the line is split into key and value at the first separator; "
            'with --json each line is an object {"key": ..., "value": ...}. Keyed '
            "records go to the partition Kafka's default partitioner picks. Keys and values "
            "are encoded with --key-codec and --codec (json: a line becomes a json string). "
            "On an embedded log held by a running worker, records go through the worker's "
            "local socket (statestream.sock in the log directory)."
        ),
    )
    produce.add_argument("topic", help="topic to write to")
    _add_topic_flags(produce)
    _add_log_flags(produce, "WARNING")
    current_partitions = os.environ.get("STATESTREAM_PARTITIONS") or None
    produce.add_argument(
        "--partitions",
        type=_partition_count,
        default=current_partitions,
        metavar="N",
        help="create the topic with N partitions if it does not exist; without it a missing "
        f"topic is an error (env STATESTREAM_PARTITIONS: {_shown(current_partitions)})",
    )
    current_separator = os.environ.get("STATESTREAM_KEY_SEPARATOR") or None
    inputs = produce.add_mutually_exclusive_group()
    inputs.add_argument(
        "--key-separator",
        default=current_separator,
        metavar="SEP",
        help="split each line into key and value at the first SEP "
        f"(env STATESTREAM_KEY_SEPARATOR: {_shown(current_separator)}; default: no key)",
    )
    inputs.add_argument(
        "--json",
        action="store_true",
        help='read json lines {"key": ..., "value": ...} (any json values; key optional)',
    )

    consume = commands.add_parser(
        "consume",
        help="print a topic's records (partition, offset, key, value), or follow it",
        description=(
            "Print the records of TOPIC, one per line: partition, offset, key and value, "
            "separated by tabs (tabs, newlines and backslashes in keys and values are "
            "escaped as \\t, \\n and \\\\), or with --json one json object per record. "
            "Without --follow it stops at the end the topic had when it started. On an "
            "embedded log held by a running worker it reads through the worker's local "
            "socket; on one no process holds, it holds the log while it runs (so start "
            "the worker before a consume --follow)."
        ),
    )
    consume.add_argument("topic", help="topic to read")
    _add_topic_flags(consume)
    _add_log_flags(consume, "WARNING")
    consume.add_argument(
        "--from",
        dest="start",
        choices=["beginning", "end"],
        default="beginning",
        help="start at each partition's first record kept, or after its last one "
        "(default: beginning)",
    )
    consume.add_argument(
        "--follow",
        action="store_true",
        help="keep printing new records until stopped (Ctrl-C or SIGTERM; exit code 0)",
    )
    consume.add_argument(
        "--json",
        action="store_true",
        help="print one json object per record: topic, partition, offset, timestamp (ms), "
        "key, value",
    )

    demo = commands.add_parser(
        "demo",
        help="count page views on the embedded log; stop and rerun it to see state survive",
        description=(
            "Write page-view events to an embedded log and count them per page and per "
            "user while they arrive. Stop it at any time (Ctrl-C, or even kill -9) and run "
            "it again: state is restored and counts stay exact."
        ),
    )
    default_dir = env_setting("STATESTREAM_DATA_DIR", "./statestream-data")
    demo.add_argument(
        "--data-dir",
        default=default_dir,
        help=f"directory for the demo's log and state (env STATESTREAM_DATA_DIR; "
        f"default {default_dir})",
    )
    default_events = env_setting("STATESTREAM_DEMO_EVENTS", "20000")
    demo.add_argument(
        "--events",
        type=int,
        default=int(default_events),
        help=f"events to write this run (env STATESTREAM_DEMO_EVENTS; default {default_events})",
    )
    demo.add_argument(
        "--rate", type=float, default=2000.0, help="events per second (0: unthrottled)"
    )
    _add_log_flags(demo, "WARNING")
    return parser


def _install_stop(stop: Any) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in APP_ENV if name not in _ENV_ONLY}


def _load(args: argparse.Namespace, secrets: _Secrets) -> App:
    app = load_app(args.app).with_settings(**_settings(args))
    secrets.add_app(app)
    return app


def _run_worker(args: argparse.Namespace, run: _Run) -> int:
    from statestream.worker.runner import Worker

    app = _load(args, run.secrets)
    listeners: list[object] = []
    bar = None
    if sys.stderr.isatty():
        # A person watches: restores show as a live bar (a pipe gets the log lines only).
        from statestream.worker.restore_bar import RestoreBar

        bar = RestoreBar(sys.stderr, run.logging.handler)
        listeners.append(bar)
    worker = Worker(app, listeners=listeners)
    # The hosts are enough to say which brokers; the options would only be noise.
    where = redact_url(app.config.broker_url).partition("?")[0]
    run.logging.report_outages(worker.waiting_for, where=where)
    _install_stop(worker.request_stop)
    try:
        return worker.run()
    finally:
        if bar is not None:
            bar.close()


def _run_tables(args: argparse.Namespace, run: _Run) -> int:
    from statestream.inspect import describe_global_tables, describe_tables

    app = _load(args, run.secrets)
    for line in describe_tables(app):
        print(line)
    for line in describe_global_tables(app):
        print(line)
    return 0


def _run_inspect(args: argparse.Namespace, run: _Run) -> int:
    from statestream.console import json_default, text_field
    from statestream.inspect_store import (
        AskWorker,
        Query,
        TableReader,
        app_table,
        ask_endpoint,
        url_table,
    )
    from statestream.serde import get_codec
    from statestream.tables.local import read_endpoint, status_path

    ask: AskWorker | None = None

    target = args.app
    if "://" in target:
        run.secrets.add_url(target)
        codec = get_codec(args.codec)
        key_codec = get_codec(args.key_codec) if args.key_codec else codec
        layout = url_table(target, args.table, key_codec, codec, windowed=args.windowed)
    elif ":" in target:
        app = _load(args, run.secrets)
        layout = app_table(app, args.table)
        # A store the running worker holds is asked through its endpoint.
        endpoint = read_endpoint(status_path(app.config.data_dir, app.app_id))
        if endpoint is not None:
            ask = ask_endpoint(endpoint, app.config.web_token)
    else:
        raise ConfigurationError(
            "inspect needs an app (module:attribute, e.g. myapp:app) or a store URL "
            f"(e.g. leveldb:///var/lib/app/myapp), got {target!r}"
        )
    reader = TableReader(layout, ask_worker=ask)
    if args.limit < 0:
        raise ConfigurationError(f"--limit must be >= 0 (0: every entry), got {args.limit}")
    limit = args.limit or None
    # One more than shown tells whether the limit cut anything off.
    query = Query(args.prefix, None if limit is None else limit + 1)
    for shown, entry in enumerate(reader.entries(reader.partitions(args.partition), query)):
        if shown == limit:
            print(
                f"statestream: stopped at --limit {limit}; --limit 0 prints every entry",
                file=sys.stderr,
            )
            break
        if args.json:
            item: dict[str, Any] = {"partition": entry.partition, "key": entry.key}
            if entry.window is not None:
                item["start"], item["end"] = entry.window
            item["value"] = entry.value
            print(json.dumps(item, ensure_ascii=False, default=json_default))
        else:
            window = "" if entry.window is None else "{}\t{}\t".format(*entry.window)
            print(f"{entry.partition}\t{text_field(entry.key)}\t{window}{text_field(entry.value)}")
    if reader.undecodable:
        print(
            f"statestream: warning: {reader.undecodable} keys or values did not decode with the "
            "table's codecs and are shown as raw text",
            file=sys.stderr,
        )
    return 0


def _run_produce(args: argparse.Namespace, run: _Run) -> int:
    from statestream.console import run_produce

    return run_produce(args, run.secrets.redact)


def _run_consume(args: argparse.Namespace, run: _Run) -> int:
    from statestream.console import run_consume

    return run_consume(args, run.secrets.redact, _install_stop)


def _run_demo(args: argparse.Namespace, run: _Run) -> int:
    from statestream.demo import run_demo

    if args.events < 0 or args.rate < 0:
        print("statestream: --events and --rate must be >= 0", file=sys.stderr)
        return 2
    result = run_demo(
        args.data_dir, args.events, args.rate, worker_ready=lambda w: _install_stop(w.request_stop)
    )
    return 0 if result.exact else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    args = build_parser().parse_args(argv)
    secrets = _Secrets()
    for name in ("broker_url", "store_url"):
        secrets.add_url(getattr(args, name, None))
        secrets.add_url(os.environ.get(APP_ENV[name]))
    secrets.add_secret(os.environ.get(APP_ENV["web_token"]))
    setup = configure_logging(args.log_level, args.log_format, redact=secrets.redact)
    # Every command may wait for brokers; the worker says what for (above).
    setup.report_outages()
    runners: dict[str, Callable[[argparse.Namespace, _Run], int]] = {
        "worker": _run_worker,
        "tables": _run_tables,
        "inspect": _run_inspect,
        "produce": _run_produce,
        "consume": _run_consume,
        "demo": _run_demo,
    }
    try:
        return runners[args.command](args, _Run(secrets, setup))
    except StateStreamError as exc:
        print(f"statestream: error: {secrets.redact(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("statestream: interrupted; state is intact up to the last commit", file=sys.stderr)
        return 130
    finally:
        setup.close()


if __name__ == "__main__":
    raise SystemExit(main())

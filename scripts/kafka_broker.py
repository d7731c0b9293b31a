#!/usr/bin/env python3
"""Run a real single-node Apache Kafka broker (KRaft mode) on 127.0.0.1.

Used by the integration tests (through ``tests/plugins/kafka.py``), by the
benchmarks and by hand. Stdlib only at import time; ``kafka-python`` is
imported lazily, and only by the readiness check.

The broker's jars come from Maven (``scripts/kafka/pom.xml``) and are cached
in ``.cache/kafka/libs`` at the repository root, so only the first run on a
machine downloads anything. Java and Maven must be on ``PATH``.

Library use::

    broker = start_broker()
    try:
        use(broker.bootstrap)          # "127.0.0.1:<port>"
    finally:
        broker.stop()

Command line::

    python scripts/kafka_broker.py fetch
    python scripts/kafka_broker.py start --pidfile /tmp/kafka.json   # prints bootstrap
    python scripts/kafka_broker.py stop --pidfile /tmp/kafka.json
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_CACHE_DIR",
    "POM_PATH",
    "Broker",
    "BrokerUnavailable",
    "ensure_jars",
    "external_broker",
    "main",
    "start_broker",
    "stop_pid",
    "wait_until_ready",
]

SCRIPTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = SCRIPTS_DIR.parent
POM_PATH = SCRIPTS_DIR / "kafka" / "pom.xml"
DEFAULT_CACHE_DIR = REPO_ROOT / ".cache" / "kafka"

# Written into the cache dir only after mvn copied every jar; it records the
# sha256 of the pom, so an interrupted download or an edited pom both cause
# a fresh resolve.
_MARKER_NAME = "libs.resolved.json"
_LOCK_NAME = "resolve.lock"

DEFAULT_START_TIMEOUT_S = 90.0
DEFAULT_STOP_TIMEOUT_S = 20.0
# The JVM main class of the broker; also used to recognise the process
# before signalling a PID read from a pidfile.
_MAIN_CLASS = "kafka.Kafka"
# Fresh ports are picked per attempt; another process may grab a port
# between our probe and the broker's bind, so a bind failure is retried.
_START_ATTEMPTS = 3
# Temp workdirs are named with this prefix and hold a PID file once the
# broker runs, so leftovers of a hard-killed run can be recognised.
_WORKDIR_PREFIX = "statestream-kafka-"
_WORKDIR_PID_NAME = "broker.pid"
# A prefixed temp dir with no PID file is a start that died before the
# broker ran; this old, nobody is still starting it.
_ORPHAN_AGE_S = 3600.0


class BrokerUnavailable(RuntimeError):  # noqa: N818  (the name callers know)
    """The broker cannot be provided: Java or Maven missing, jar resolution
    failed, storage formatting failed, or the broker died / never became
    ready. The message says which, and includes the tail of the relevant
    output so the cause is visible without digging for files."""


@dataclasses.dataclass
class Broker:
    """A running broker.

    ``bootstrap`` is the ``host:port`` clients connect to. For a broker this
    module started, ``pid`` is the JVM's process id, ``workdir`` holds its
    config, data and ``log_path``, and ``stop()`` ends the process. For a
    broker someone else runs (see :func:`external_broker`), ``pid``,
    ``workdir`` and ``log_path`` are ``None`` and ``stop()`` does nothing.
    """

    bootstrap: str
    pid: int | None = None
    workdir: Path | None = None
    log_path: Path | None = None
    # Whether stop() deletes workdir (True when start_broker created it).
    owns_workdir: bool = False
    _proc: subprocess.Popen[bytes] | None = dataclasses.field(
        default=None, repr=False, compare=False
    )
    _stopped: bool = dataclasses.field(default=False, repr=False, compare=False)

    @property
    def external(self) -> bool:
        """True when this object only points at a broker run elsewhere."""
        return self.pid is None

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        """Stop the broker: SIGTERM, wait up to ``timeout`` seconds for a clean
        shutdown, then SIGKILL; afterwards delete ``workdir`` if this object
        created it. Idempotent, and a no-op for an external broker."""
        if self._stopped:
            return
        self._stopped = True
        if self.pid is not None:
            if self._proc is not None:
                _stop_child(self._proc, timeout)
            else:
                stop_pid(self.pid, timeout)
        if self.owns_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, max_lines: int = 60) -> str:
        """The last ``max_lines`` lines of the broker log ('' if none)."""
        return _tail(self.log_path, max_lines)

    def to_json(self) -> dict[str, Any]:
        """The fields a pidfile records (see the ``start`` command)."""
        return {
            "pid": self.pid,
            "bootstrap": self.bootstrap,
            "workdir": str(self.workdir) if self.workdir else None,
            "log_path": str(self.log_path) if self.log_path else None,
            "owns_workdir": self.owns_workdir,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Broker:
        """Rebuild a handle from :meth:`to_json` output, e.g. in another
        process; its ``stop()`` then signals the recorded PID."""
        return cls(
            bootstrap=str(data["bootstrap"]),
            pid=int(data["pid"]) if data.get("pid") is not None else None,
            workdir=Path(data["workdir"]) if data.get("workdir") else None,
            log_path=Path(data["log_path"]) if data.get("log_path") else None,
            owns_workdir=bool(data.get("owns_workdir", False)),
        )


# --------------------------------------------------------------------- jars


def _require_tool(name: str) -> str:
    """Absolute path of executable ``name`` on PATH, else BrokerUnavailable."""
    path = shutil.which(name)
    if path is None:
        raise BrokerUnavailable(
            f"`{name}` is not on PATH; the real Kafka broker needs Java 17+ and "
            "Maven 3 (e.g. `apt-get install openjdk-17-jdk-headless maven`)"
        )
    return path


def _pom_digest(pom: Path) -> str:
    return hashlib.sha256(pom.read_bytes()).hexdigest()


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Exclusive inter-process lock, so parallel test runs (e.g. xdist
    workers) resolve once instead of racing on the same directory."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _jars_ready(cache_dir: Path, digest: str) -> bool:
    marker = cache_dir / _MARKER_NAME
    libs = cache_dir / "libs"
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(recorded, dict)
        and recorded.get("pom_sha256") == digest
        and any(libs.glob("kafka_2.13-*.jar"))
    )


def ensure_jars(cache_dir: Path | str | None = None, *, quiet: bool = True) -> Path:
    """Make sure the broker's runtime jars are in ``<cache_dir>/libs`` and
    return that directory.

    ``cache_dir`` defaults to ``.cache/kafka`` at the repository root. A
    previous complete resolve of the same pom is reused without running
    Maven; otherwise ``mvn dependency:copy-dependencies`` runs (downloading
    on a clean machine) into a scratch directory that replaces ``libs`` only
    once Maven succeeded, so a half-finished run never counts as done.

    Raises BrokerUnavailable if ``java`` or ``mvn`` is missing or Maven fails.
    """
    cache = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    cache = cache.resolve()
    _require_tool("java")  # checked here too: jars without a JVM are useless
    digest = _pom_digest(POM_PATH)
    if _jars_ready(cache, digest):
        return cache / "libs"

    mvn = _require_tool("mvn")
    with _locked(cache / _LOCK_NAME):
        # Someone else may have finished while we waited for the lock.
        if _jars_ready(cache, digest):
            return cache / "libs"
        (cache / _MARKER_NAME).unlink(missing_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="libs.partial-", dir=cache))
        try:
            cmd = [
                mvn,
                "-B",
                "-Dstyle.color=never",
                *(["-q"] if quiet else []),
                "-f",
                str(POM_PATH),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={scratch}",
                "-DincludeScope=runtime",
            ]
            proc = subprocess.run(
                cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
            )
            if proc.returncode != 0:
                output = (proc.stdout + proc.stderr).strip().splitlines()
                raise BrokerUnavailable(
                    f"resolving the Kafka jars with Maven failed (exit {proc.returncode}): "
                    + " ".join(cmd)
                    + "\n"
                    + "\n".join(output[-40:])
                )
            if not any(scratch.glob("kafka_2.13-*.jar")):
                raise BrokerUnavailable(
                    f"Maven succeeded but copied no kafka_2.13 jar into {scratch}"
                )
            libs = cache / "libs"
            shutil.rmtree(libs, ignore_errors=True)
            scratch.rename(libs)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        (cache / _MARKER_NAME).write_text(
            json.dumps({"pom_sha256": digest, "resolved_at": time.time()}) + "\n"
        )
    return cache / "libs"


# ------------------------------------------------------------------- config


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cluster_id() -> str:
    """A Kafka cluster id: a random 16-byte UUID in unpadded base64url, the
    format `kafka-storage random-uuid` prints (that tool too avoids a
    leading '-', which its argument parser would read as an option)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")
        if not cid.startswith("-"):
            return cid


def _server_properties(
    port: int, controller_port: int, data_dir: Path, extra: Mapping[str, str]
) -> dict[str, str]:
    props = {
        # One JVM acting as the whole cluster.
        "process.roles": "broker,controller",
        "node.id": "1",
        # A static one-voter quorum: works across 3.x and 4.x and needs no
        # --standalone / dynamic-quorum formatting.
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "log.dirs": str(data_dir),
        # Internal topics must fit on one broker; fewer partitions also make
        # the first consumer group / transaction start faster than the
        # default 50.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "8",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Tests want joins to complete at once, not after 3 s.
        "group.initial.rebalance.delay.ms": "0",
        "num.partitions": "1",
        # Topics exist only when a test or the library creates them, so a
        # typo in a topic name fails instead of silently creating a topic.
        "auto.create.topics.enable": "false",
        # Make compaction observable within seconds: the cleaner wakes
        # often and cleans any dirty segment. Topics still set segment.ms
        # themselves, because the active segment is never cleaned.
        "log.cleaner.backoff.ms": "500",
        "log.cleaner.min.compaction.lag.ms": "0",
        "log.cleaner.min.cleanable.ratio": "0.01",
        # The default 128 MiB dedupe buffer would take a quarter of the heap.
        "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
        "log.retention.check.interval.ms": "1000",
        "log.segment.bytes": str(16 * 1024 * 1024),
    }
    props.update(extra)
    return props


def _write_properties(path: Path, props: Mapping[str, str]) -> None:
    lines = [f"{key}={value}" for key, value in props.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# log4j2 to stdout (redirected by us into broker.log), WARN and above only,
# so the file stays short and a startup failure is near its end.
_LOG4J2_PROPERTIES = """\
status = warn
name = statestream-test-broker
appender.out.type = Console
appender.out.name = OUT
appender.out.target = SYSTEM_OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = OUT
"""


def _java_cmd(libs: Path, log4j_config: Path, jvm_opts: Sequence[str] = ()) -> list[str]:
    """``java [jvm_opts] -D... -cp <libs>/*`` (the main class follows)."""
    return [
        _require_tool("java"),
        *jvm_opts,
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j_config}",
        "-cp",
        str(libs / "*"),
    ]


def _tail(path: Path | None, max_lines: int = 60) -> str:
    if path is None:
        return ""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-max_lines:])


# -------------------------------------------------------------- readiness


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _split_bootstrap(bootstrap: str) -> tuple[str, int]:
    first = bootstrap.split(",", maxsplit=1)[0].strip()
    host, _, port = first.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"bootstrap must be host:port, got {bootstrap!r}")
    return host.strip("[]"), int(port)


def _admin_sees_broker(bootstrap: str) -> bool:
    """One readiness probe: the admin client can fetch cluster metadata that
    lists at least one broker (in KRaft the broker only shows up once it is
    registered and unfenced, i.e. able to host new topics)."""
    from kafka.admin import KafkaAdminClient  # lazy: this module is stdlib-only

    configs: dict[str, Any] = {"bootstrap_servers": bootstrap, "request_timeout_ms": 5000}
    # The bootstrap-wait setting was renamed in kafka-python 3.
    if "bootstrap_timeout_ms" in KafkaAdminClient.DEFAULT_CONFIG:
        configs["bootstrap_timeout_ms"] = 5000
    else:
        configs["api_version_auto_timeout_ms"] = 5000
    try:
        admin = KafkaAdminClient(**configs)
    except Exception:  # NoBrokersAvailable and friends: not ready yet
        return False
    try:
        cluster = admin.describe_cluster()
        admin.list_topics()
        return bool(cluster.get("brokers"))
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            admin.close()


def _require_kafka_python() -> None:
    """BrokerUnavailable unless kafka-python (the readiness probe) imports;
    checked before anything is started, not once per probe."""
    try:
        # kafka.admin, not just kafka: run as a script, this file's directory
        # is on sys.path and its kafka/ (the pom) imports as an empty
        # namespace package when kafka-python is absent.
        import kafka.admin  # noqa: F401
    except ImportError as exc:
        raise BrokerUnavailable(
            f"kafka-python is not installed in {sys.executable}; it is needed to "
            "check that the broker is ready"
        ) from exc


def _log_detail(log_path: Path | None) -> str:
    """'; log tail (<path>):\n<tail>' for error messages, or '' without a log."""
    if log_path is None:
        return ""
    return f"; log tail ({log_path}):\n{_tail(log_path)}"


def wait_until_ready(
    bootstrap: str,
    timeout: float = DEFAULT_START_TIMEOUT_S,
    *,
    proc: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
) -> None:
    """Block until the broker at ``bootstrap`` answers admin requests.

    Polls a TCP connect and then a kafka-python ``KafkaAdminClient``
    (``describe_cluster`` + ``list_topics``). Raises BrokerUnavailable if
    ``proc`` exits first or ``timeout`` seconds pass; the message carries
    the tail of ``log_path`` when given.
    """
    _require_kafka_python()
    host, port = _split_bootstrap(bootstrap)
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise BrokerUnavailable(
                f"Kafka broker exited with code {proc.returncode} before becoming ready"
                + _log_detail(log_path)
            )
        # The TCP probe is cheap and keeps kafka-python from logging
        # connection errors while the JVM is still starting.
        if _port_open(host, port) and _admin_sees_broker(bootstrap):
            return
        if time.monotonic() >= deadline:
            raise BrokerUnavailable(
                f"Kafka broker at {bootstrap} not ready after {timeout:.0f}s"
                + _log_detail(log_path)
            )
        time.sleep(0.25)


# -------------------------------------------------------------- lifecycle


def _pdeathsig_prefix(die_with_parent: bool) -> list[str]:
    """Command prefix asking the kernel to SIGTERM the broker when the
    process that started it dies, even by SIGKILL, so a killed test run
    leaks no JVM. Uses util-linux `setpriv`, which execs the JVM in place
    (the PID stays the JVM's); empty where unavailable or not wanted."""
    if not die_with_parent or not sys.platform.startswith("linux"):
        return []
    setpriv = _setpriv_with_pdeathsig()
    return [setpriv, "--pdeathsig", "TERM"] if setpriv else []


@functools.cache
def _setpriv_with_pdeathsig() -> str | None:
    """Path of a `setpriv` that knows --pdeathsig (util-linux >= 2.33)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    try:
        usage = subprocess.run(
            [setpriv, "--help"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return setpriv if "--pdeathsig" in usage.stdout + usage.stderr else None


def _format_storage(libs: Path, log4j_config: Path, props_path: Path, log_path: Path) -> None:
    cmd = [
        *_java_cmd(libs, log4j_config),
        "kafka.tools.StorageTool",
        "format",
        "--cluster-id",
        _cluster_id(),
        "--config",
        str(props_path),
    ]
    proc = subprocess.run(
        cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, check=False
    )
    with open(log_path, "a", encoding="utf-8") as fh:
        fh.write(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise BrokerUnavailable(
            f"formatting Kafka storage failed (exit {proc.returncode}):\n" + _tail(log_path, 40)
        )


def _bind_failed(log_path: Path) -> bool:
    return "Address already in use" in _tail(log_path, 400)


def start_broker(
    workdir: Path | str | None = None,
    *,
    cache_dir: Path | str | None = None,
    timeout: float = DEFAULT_START_TIMEOUT_S,
    heap: tuple[str, str] = ("256m", "512m"),
    extra_properties: Mapping[str, str] | None = None,
    jvm_args: Sequence[str] = (),
    die_with_parent: bool = True,
) -> Broker:
    """Start a single-node KRaft broker on free 127.0.0.1 ports and return
    once it serves admin requests.

    ``workdir``: where config, data and ``broker.log`` go. ``None`` (the
    default) creates a temporary directory that ``Broker.stop()`` deletes;
    a given directory is created if needed, any ``data/`` and
    ``broker.log`` from an earlier broker in it are replaced (every start
    is a fresh, empty cluster), and it is left in place on stop.
    ``cache_dir``: jar cache, see :func:`ensure_jars`.
    ``timeout``: seconds to wait for readiness.
    ``heap``: (initial, maximum) JVM heap, i.e. ``-Xms``/``-Xmx``.
    ``extra_properties``: server.properties overrides.
    ``jvm_args``: extra JVM options.
    ``die_with_parent``: on Linux, have the kernel SIGTERM the broker when
    the calling *thread* exits (so call from a long-lived thread); the CLI
    ``start`` command turns it off so the broker outlives it.

    The JVM runs in its own session/process group with stdout and stderr
    in ``<workdir>/broker.log``. Raises BrokerUnavailable (with the log
    tail) if anything fails; nothing is left running in that case.
    """
    _require_kafka_python()
    libs = ensure_jars(cache_dir)
    if workdir is None:
        _reap_stale_workdirs()
        base, owns = Path(tempfile.mkdtemp(prefix=_WORKDIR_PREFIX)), True
    else:
        base, owns = Path(workdir), False
        base.mkdir(parents=True, exist_ok=True)
    base = base.resolve()
    try:
        attempt = 1
        while True:
            try:
                return _start_once(
                    base,
                    libs,
                    owns=owns,
                    timeout=timeout,
                    heap=heap,
                    extra_properties=extra_properties or {},
                    jvm_args=jvm_args,
                    die_with_parent=die_with_parent,
                )
            except BrokerUnavailable:
                if attempt >= _START_ATTEMPTS or not _bind_failed(base / "broker.log"):
                    raise
                attempt += 1
    except BaseException:
        if owns:
            shutil.rmtree(base, ignore_errors=True)
        raise


def _start_once(
    base: Path,
    libs: Path,
    *,
    owns: bool,
    timeout: float,
    heap: tuple[str, str],
    extra_properties: Mapping[str, str],
    jvm_args: Sequence[str],
    die_with_parent: bool,
) -> Broker:
    # A retry after a port clash starts from an empty directory again.
    for child in ("data", "server.properties", "broker.log"):
        path = base / child
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    data_dir = base / "data"
    data_dir.mkdir()
    log_path = base / "broker.log"
    log4j_config = base / "log4j2.properties"
    log4j_config.write_text(_LOG4J2_PROPERTIES, encoding="utf-8")
    port = _free_port()
    controller_port = _free_port()
    while controller_port == port:
        controller_port = _free_port()
    props_path = base / "server.properties"
    _write_properties(
        props_path, _server_properties(port, controller_port, data_dir, extra_properties)
    )

    _format_storage(libs, log4j_config, props_path, log_path)

    cmd = [
        *_pdeathsig_prefix(die_with_parent),
        *_java_cmd(libs, log4j_config, [f"-Xms{heap[0]}", f"-Xmx{heap[1]}", *jvm_args]),
        _MAIN_CLASS,
        str(props_path),
    ]
    with open(log_path, "ab") as log_fh:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            cwd=base,
            # Own session: a Ctrl-C in the terminal reaches the test runner,
            # which then stops the broker cleanly, rather than killing the
            # JVM mid-test.
            start_new_session=True,
        )
    # Recorded at once, so _reap_stale_workdirs() can tell a directory in
    # use (live JVM) from one whose owner was killed.
    (base / _WORKDIR_PID_NAME).write_text(f"{proc.pid}\n")
    broker = Broker(
        bootstrap=f"127.0.0.1:{port}",
        pid=proc.pid,
        workdir=base,
        log_path=log_path,
        owns_workdir=owns,
        _proc=proc,
    )
    try:
        wait_until_ready(broker.bootstrap, timeout, proc=proc, log_path=log_path)
    except BaseException:
        # Never leave a half-started JVM behind; keep the directory (the
        # caller decides) so the retry / error message can read the log.
        _stop_child(proc, DEFAULT_STOP_TIMEOUT_S)
        raise
    return broker


def _reap_stale_workdirs() -> None:
    """Delete temp workdirs left by brokers whose owner was killed without
    running stop() (the JVM itself dies with its parent, see
    die_with_parent, but nobody removes its directory)."""
    for path in Path(tempfile.gettempdir()).glob(_WORKDIR_PREFIX + "*"):
        try:
            if not path.is_dir() or path.is_symlink():
                continue
            pid_file = path / _WORKDIR_PID_NAME
            if pid_file.exists():
                stale = not _is_broker_process(int(pid_file.read_text().strip()))
            else:
                stale = time.time() - path.stat().st_mtime > _ORPHAN_AGE_S
        except (OSError, ValueError):
            continue
        if stale:
            shutil.rmtree(path, ignore_errors=True)


def external_broker(bootstrap: str, timeout: float = 30.0) -> Broker:
    """A handle on a broker someone else runs at ``bootstrap`` (host:port),
    after checking it answers; its ``stop()`` does nothing.
    Raises BrokerUnavailable if it does not answer within ``timeout``."""
    wait_until_ready(bootstrap, timeout)
    return Broker(bootstrap=bootstrap)


def _stop_child(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Stop a JVM we started ourselves (reaping it, so no zombie remains)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


def _is_broker_process(pid: int) -> bool:
    """Whether ``pid`` is alive and (where /proc can tell) a Kafka JVM, so a
    stale pidfile never gets an unrelated process that reused the PID
    killed."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return False  # /proc works, so the process is gone
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    except OSError:
        return False
    return _MAIN_CLASS.encode() in raw.split(b"\0")


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        # A zombie has exited; only its parent can reap it.
        return stat.rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_pid(pid: int, timeout: float = DEFAULT_STOP_TIMEOUT_S) -> bool:
    """Stop the broker JVM with process id ``pid`` (not necessarily our
    child): SIGTERM, wait up to ``timeout`` s, then SIGKILL. Returns False
    without signalling anything if no Kafka broker runs under that PID."""
    if not _is_broker_process(pid):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() >= deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            kill_deadline = time.monotonic() + 5.0
            while _alive(pid) and time.monotonic() < kill_deadline:
                time.sleep(0.05)
            break
        time.sleep(0.1)
    return True


# -------------------------------------------------------------------- CLI


def _cmd_fetch(args: argparse.Namespace) -> int:
    started = time.monotonic()
    libs = ensure_jars(args.cache_dir, quiet=not args.verbose)
    print(f"{libs} ({len(list(libs.glob('*.jar')))} jars, {time.monotonic() - started:.1f}s)")
    return 0


def _read_pidfile(pidfile: Path) -> Broker | None:
    """Return the broker a pidfile describes; ``None`` if missing, empty or unreadable.

    An empty file is normal: callers often create the path with mktemp.
    """
    try:
        text = pidfile.read_text()
    except FileNotFoundError:
        return None
    if not text.strip():
        return None
    try:
        return Broker.from_json(json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:
        print(f"ignoring unreadable pidfile {pidfile}: {exc}", file=sys.stderr)
        return None


def _cmd_start(args: argparse.Namespace) -> int:
    pidfile = Path(args.pidfile)
    existing = _read_pidfile(pidfile)
    if existing is not None and existing.pid is not None and _is_broker_process(existing.pid):
        print(f"already running (pid {existing.pid}) at {existing.bootstrap}", file=sys.stderr)
        return 1
    broker = start_broker(
        args.workdir, cache_dir=args.cache_dir, timeout=args.timeout, die_with_parent=False
    )
    try:
        pidfile.parent.mkdir(parents=True, exist_ok=True)
        tmp = pidfile.with_name(pidfile.name + ".tmp")
        tmp.write_text(json.dumps(broker.to_json(), indent=2) + "\n")
        tmp.replace(pidfile)
    except BaseException:
        broker.stop()
        raise
    print(broker.bootstrap, flush=True)
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    pidfile = Path(args.pidfile)
    broker = _read_pidfile(pidfile)
    if broker is None:
        print(f"no broker recorded in {pidfile}; nothing to stop", file=sys.stderr)
        return 0
    broker.stop(timeout=args.timeout)
    pidfile.unlink(missing_ok=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--cache-dir", default=None, help=f"jar cache (default: {DEFAULT_CACHE_DIR})"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    fetch = sub.add_parser("fetch", help="resolve the broker jars into the cache and exit")
    fetch.add_argument("-v", "--verbose", action="store_true", help="show Maven's output")
    fetch.set_defaults(func=_cmd_fetch)

    start = sub.add_parser(
        "start", help="start a broker, print its bootstrap address, leave it running"
    )
    start.add_argument(
        "--pidfile", required=True, help="JSON file recording pid, bootstrap, workdir"
    )
    start.add_argument(
        "--workdir", default=None, help="broker directory (default: a temp dir removed on stop)"
    )
    start.add_argument(
        "--timeout", type=float, default=DEFAULT_START_TIMEOUT_S, help="readiness timeout, s"
    )
    start.set_defaults(func=_cmd_start)

    stop = sub.add_parser("stop", help="stop the broker recorded in a pidfile")
    stop.add_argument("--pidfile", required=True)
    stop.add_argument(
        "--timeout", type=float, default=DEFAULT_STOP_TIMEOUT_S, help="SIGTERM grace, s"
    )
    stop.set_defaults(func=_cmd_stop)

    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except BrokerUnavailable as exc:
        print(f"kafka_broker: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

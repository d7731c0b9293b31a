"""Secrets in URLs and settings print as ``***``: in reprs, errors, logs and CLI output."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from statestream.app import App
from statestream.cli import main
from statestream.config import AerospikeOptions, AppConfig, options_from_strings
from statestream.errors import StateStreamError
from statestream.log import open_transport, parse_transport_url
from statestream.log.base import TopicSpec
from statestream.log.kafka_options import KafkaOptions
from statestream.secrets import SECRET_OPTIONS, is_secret_option, redact_text, redact_url
from statestream.stores import registry
from statestream.stores.memory import MemoryStore
from statestream.stores.registry import open_store
from tests.worker.helpers import open_embedded, wait_for

pytestmark = pytest.mark.timeout(60)

#: Distinct secrets, so a leak of any one of them is caught wherever it shows.
SASL = "Sasl-Pa55word"
SSL = "Key-Pa55word"
USERINFO = "Info-Pa55word"
AERO = "Aero-Pa55word"
ALL = (SASL, SSL, USERINFO, AERO)


def assert_hidden(text: str) -> None:
    for secret in ALL:
        assert secret not in text, f"secret {secret!r} shown in: {text}"


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def kafka_url(port: int, extra: str = "") -> str:
    return (
        f"kafka://127.0.0.1:{port}?security_protocol=SASL_SSL&sasl_mechanism=PLAIN"
        f"&sasl_plain_username=app&sasl_plain_password={SASL}&ssl_password={SSL}"
        f"&bootstrap_timeout_ms=300{extra}"
    )


AEROSPIKE_URL = f"aerospike://app:{USERINFO}@127.0.0.1:3000/test?user=app&password={AERO}"


# -- redact_url ------------------------------------------------------------------------


def test_the_secret_options_of_every_config_are_known() -> None:
    for name in ("sasl_plain_password", "ssl_password", "password", "token"):
        assert name in SECRET_OPTIONS
        assert is_secret_option(name)
    assert is_secret_option("SASL_PLAIN_PASSWORD")
    assert is_secret_option("redis_password")  # a third-party store's option
    for name in ("sasl_plain_username", "user", "ssl_keyfile", "client_id", "set_prefix"):
        assert not is_secret_option(name)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "kafka://h:9092?security_protocol=SASL_SSL&sasl_plain_username=app"
            "&sasl_plain_password=secret&ssl_password=kp&linger_ms=5",
            "kafka://h:9092?security_protocol=SASL_SSL&sasl_plain_username=app"
            "&sasl_plain_password=***&ssl_password=***&linger_ms=5",
        ),
        (
            "aerospike://user:pw@db1:3000,db2:3000/ns?user=app&password=pw2&set_prefix=x.",
            "aerospike://user:***@db1:3000,db2:3000/ns?user=app&password=***&set_prefix=x.",
        ),
        ("x://h?token=abc", "x://h?token=***"),
        # Every occurrence of a repeated option.
        (
            "kafka://h?password=a&linger_ms=1&password=b",
            "kafka://h?password=***&linger_ms=1&password=***",
        ),
        # Percent-encoded values and names, and '+' (a space in a query).
        ("kafka://h?sasl_plain_password=p%40ss%26w%3D", "kafka://h?sasl_plain_password=***"),
        ("kafka://h?pass%77ord=x&a=1", "kafka://h?pass%77ord=***&a=1"),
        ("kafka://h?ssl+password=x", "kafka://h?ssl+password=x"),
        ("kafka://h?PASSWORD=x", "kafka://h?PASSWORD=***"),
        # Userinfo: percent-encoded, holding '@', or reserved characters left unencoded.
        ("aerospike://user:p%40ss@db1/ns", "aerospike://user:***@db1/ns"),
        ("aerospike://user:p@ss@db1/ns", "aerospike://user:***@db1/ns"),
        ("aerospike://user:p/ss@db1/ns", "aerospike://user:***@db1/ns"),
        ("aerospike://user:pa?ss@db1/ns?password=x", "aerospike://user:***@db1/ns?password=***"),
        ("aerospike://user:pa#ss@db1/ns", "aerospike://user:***@db1/ns"),
        ("aerospike://:pw@db1/ns", "aerospike://:***@db1/ns"),
        # A value running into a fragment is hidden whole.
        ("kafka://h?password=ab#cd", "kafka://h?password=***"),
        # A URL as an option value, as written or percent-encoded.
        (
            "kafka://h:9092?proxy_url=socks5://u:pw@proxy:1080&client_id=x",
            "kafka://h:9092?proxy_url=socks5://u:***@proxy:1080&client_id=x",
        ),
        ("kafka://h?proxy_url=socks5%3A%2F%2Fu%3Apw%40proxy", "kafka://h?proxy_url=***"),
        ("kafka://h?proxy_url=socks5%3A%2F%2Fproxy%3A1080", None),
        # Nothing secret: unchanged, byte for byte.
        ("kafka://h1:9092,h2:9092?client_id=x&linger_ms=5", None),
        ("kafka://broker:9092?sasl_plain_username=app@corp&client_id=a:b", None),
        ("kafka://h1:9092,h2:9092?sasl_plain_username=a@b", None),
        ("kafka://[::1]:9092?sasl_plain_username=a@b", None),
        ("aerospike://app@db1/ns", None),  # a user name alone is no secret
        ("aerospike://user:@db1/ns?password=", None),  # empty: nothing to hide
        ("leveldb:///var/lib/a@b:c?sync=true", None),
        ("leveldb://./dir/u:x@y", None),
        ("embedded://./statestream-data/log", None),
        ("memory://", None),
        ("", None),
    ],
)
def test_redact_url(url: str, expected: str | None) -> None:
    assert redact_url(url) == (url if expected is None else expected)


@pytest.mark.parametrize(
    "url",
    [
        "://",
        "kafka://[",
        "kafka://h?=x&&&=",
        "kafka://h?password",
        "?password=hidden",
        "kafka:/h?password=hidden",
        "a://@",
        "a://:@",
        "a://:hidden@",
        "%zz://%zz?%zz=%zz&password=%zz",
        "kafka://h\x00?password=hidden\ud800",
        "kafka://h?password=hidden%",
        "kafka" * 1000 + "://h?password=hidden",
    ],
)
def test_redact_url_never_raises_on_malformed_urls(url: str) -> None:
    redacted = redact_url(url)
    assert isinstance(redacted, str)
    assert "hidden" not in redacted


def test_redact_url_of_a_non_string_does_not_raise() -> None:
    assert redact_url(None) == "None"  # type: ignore[arg-type]


@given(st.text())
def test_redact_url_never_raises(text: str) -> None:
    assert isinstance(redact_url(text), str)


_HOSTS = st.lists(st.from_regex(r"[a-z][a-z0-9.-]{0,10}(:[1-9][0-9]{0,4})?", fullmatch=True))
_NAMES = st.from_regex(r"[a-z][a-z_]{0,12}", fullmatch=True).filter(
    lambda n: not is_secret_option(n)
)
_VALUES = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)


@given(
    st.sampled_from(["kafka", "aerospike", "leveldb", "embedded"]),
    _HOSTS,
    st.lists(st.tuples(_NAMES, _VALUES), max_size=4),
    st.sampled_from(sorted(SECRET_OPTIONS)),
    _VALUES.filter(bool),
)
def test_only_the_secret_changes(
    scheme: str, hosts: list[str], options: list[tuple[str, str]], secret_name: str, secret: str
) -> None:
    head = f"{scheme}://{','.join(hosts)}/ns"
    query = "&".join(f"{name}={quote(value, safe='')}" for name, value in options)
    url = f"{head}?{query}" if query else head
    assert redact_url(url) == url
    with_secret = f"{url}{'&' if query else '?'}{secret_name}={quote(secret, safe='')}"
    assert redact_url(with_secret) == f"{url}{'&' if query else '?'}{secret_name}=***"
    userinfo = f"{scheme}://app:{quote(secret, safe='')}@{','.join(hosts)}/ns"
    assert redact_url(userinfo) == f"{scheme}://app:***@{','.join(hosts)}/ns"


def test_redact_text_hides_given_secrets_and_urls() -> None:
    text = f"failed: {SASL} and {SASL}{SSL}; see 'kafka://h?password={AERO}' (embedded://./x)"
    assert redact_text(text, [SASL, SSL, ""]) == (
        "failed: *** and ******; see 'kafka://h?password=***' (embedded://./x)"
    )
    assert redact_text("nothing to hide", []) == "nothing to hide"
    # The longest secret goes first: a secret holding another is hidden whole.
    assert redact_text("abc-abcdef", ["abc", "abcdef"]) == "***-***"


# -- reprs -----------------------------------------------------------------------------


def test_app_config_repr_hides_secrets() -> None:
    config = AppConfig.resolve("app", broker_url=kafka_url(9092), store_url=AEROSPIKE_URL)
    shown = repr(config)
    assert_hidden(shown)
    assert "sasl_plain_password=***" in shown
    assert "app:***@127.0.0.1:3000" in shown
    assert "app_id='app'" in shown


def test_app_config_repr_hides_secrets_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STATESTREAM_BROKER_URL", kafka_url(9092))
    monkeypatch.setenv("STATESTREAM_STORE_URL", AEROSPIKE_URL)
    assert_hidden(repr(AppConfig.resolve("app")))


def test_option_reprs_hide_secrets() -> None:
    options = options_from_strings(
        KafkaOptions,
        {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "PLAIN",
            "sasl_plain_username": "app",
            "sasl_plain_password": SASL,
            "ssl_password": SSL,
        },
        "test",
    )
    assert_hidden(repr(options))
    assert "sasl_plain_username='app'" in repr(options)
    assert_hidden(repr(AerospikeOptions(user="app", password=AERO)))
    proxied = KafkaOptions(proxy_url=f"socks5://app:{USERINFO}@proxy:1080")
    assert "proxy_url='socks5://app:***@proxy:1080'" in repr(proxied)


def test_client_configs_handed_to_kafka_python_repr_without_secrets() -> None:
    options = KafkaOptions(
        security_protocol="SASL_SSL",
        sasl_mechanism="PLAIN",
        sasl_plain_username="app",
        sasl_plain_password=SASL,
        ssl_password=SSL,
        proxy_url=f"socks5://app:{USERINFO}@proxy:1080",
    )
    for config in (options.admin_config(), options.producer_config(), options.consumer_config()):
        # kafka-python logs its admin client's configuration at DEBUG level.
        assert_hidden(repr(config))
        assert_hidden(str(config))
        assert config["sasl_plain_password"] == SASL
        assert config["ssl_password"] == SSL
        assert config["proxy_url"] == f"socks5://app:{USERINFO}@proxy:1080"
        assert isinstance(config["sasl_plain_password"], str)
        assert "\0".join(["app", config["sasl_plain_password"]]).encode() == f"app\0{SASL}".encode()


def test_parsed_url_reprs_hide_secrets() -> None:
    assert_hidden(repr(parse_transport_url(kafka_url(9092))))


# -- errors ----------------------------------------------------------------------------


def _error(call: Any, *args: Any) -> str:
    with pytest.raises(StateStreamError) as info:
        call(*args)
    return str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        # A bad option next to a password.
        f"kafka://127.0.0.1:9092?sasl_plain_password={SASL}&lingr_ms=5",
        f"kafka://127.0.0.1:9092?sasl_plain_password={SASL}&linger_ms=soon",
        # An unknown scheme with a password.
        f"nosuch://u:{USERINFO}@h?password={AERO}",
        f"kafka://h:9092?sasl_plain_password={SASL}&sasl_plain_password=x",
        f"kafka://?sasl_plain_password={SASL}",
        f"kafka://127.0.0.1:9092/topic?sasl_plain_password={SASL}",
        f"kafka://app:{USERINFO}@127.0.0.1:{unused_port()}",
        f"no-scheme?sasl_plain_password={SASL}",
        f"embedded://./x?password={AERO}",
        f"embedded://host/x?password={AERO}",
        f"embedded://?password={AERO}",
    ],
)
def test_bad_broker_urls_do_not_show_secrets(url: str) -> None:
    message = _error(open_transport, url)
    assert_hidden(message)


@pytest.mark.parametrize(
    "url",
    [
        f"nosuch://h/ns?password={AERO}",
        f"no-scheme?password={AERO}",
        f"aerospike://app:{USERINFO}@db1/test",
        f"aerospike://db1/test?user=app&password={AERO}&colour=red",
        f"aerospike://db1?user=app&password={AERO}",
        f"aerospike://db1/test?password={AERO}&password=x",
        f"aerospike://db1/test?user=app&password={AERO}&ttl=-2",
        f"leveldb:///nonexistent/x?password={AERO}",
    ],
)
def test_bad_store_urls_do_not_show_secrets(url: str) -> None:
    message = _error(open_store, url, "t", 0)
    assert_hidden(message)


@dataclass(frozen=True)
class _PinOptions:
    """Settings whose secret is a number (a PIN), to check that parse errors hide it."""

    token: int = 0


def test_a_secret_option_that_does_not_parse_is_not_shown() -> None:
    message = _error(options_from_strings, _PinOptions, {"token": AERO}, "test")
    assert "token" in message
    assert_hidden(message)


# -- logs ------------------------------------------------------------------------------


@pytest.mark.parametrize("proxy", [False, True])
def test_opening_kafka_at_an_unreachable_host_logs_no_secret(
    caplog: pytest.LogCaptureFixture, proxy: bool
) -> None:
    port = unused_port()
    # With a proxy the reachability probe is skipped and kafka-python itself
    # tries (and logs) the connection.
    url = kafka_url(port, f"&proxy_url=socks5://127.0.0.1:{port}" if proxy else "")
    url = url.replace("SASL_SSL", "SASL_PLAINTEXT")
    caplog.set_level(logging.DEBUG)
    message = _error(open_transport, url)
    assert_hidden(message)
    if proxy:
        assert caplog.records, "expected kafka-python to log its attempts"
    assert_hidden(caplog.text)
    for record in caplog.records:
        assert_hidden(record.getMessage())


# -- the command line ------------------------------------------------------------------


@pytest.fixture
def run_cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., tuple[int, str, str]]:
    monkeypatch.delenv("STATESTREAM_BROKER_URL", raising=False)
    monkeypatch.delenv("STATESTREAM_STORE_URL", raising=False)

    def run(*argv: str) -> tuple[int, str, str]:
        try:
            code = main(list(argv))
        except SystemExit as exc:  # --help and bad arguments
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_tables_header_and_store_lines_hide_secrets(tmp_path: Path, run_cli: Any) -> None:
    code, out, err = run_cli(
        "tables",
        "examples.wordcount:app",
        "--data-dir",
        str(tmp_path),
        "--store-url",
        AEROSPIKE_URL,
    )
    assert code == 0, err
    assert "app 'wordcount'" in out
    assert "store aerospike://app:***@127.0.0.1:3000/test?user=app&password=***" in out
    assert "table counts: changelog wordcount-counts-changelog" in out
    assert_hidden(out + err)


def test_tables_with_an_unreachable_kafka_hides_secrets(tmp_path: Path, run_cli: Any) -> None:
    url = kafka_url(unused_port())
    code, out, err = run_cli("tables", "examples.wordcount:app", "--broker-url", url)
    assert code == 1
    assert "sasl_plain_password=***" in out
    assert "no Kafka broker reachable" in err
    assert_hidden(out + err)


def test_tables_with_a_bad_broker_url_hides_secrets(tmp_path: Path, run_cli: Any) -> None:
    url = f"embedded://{tmp_path}/log?password={AERO}"
    code, out, err = run_cli("tables", "examples.wordcount:app", "--broker-url", url)
    assert code == 1
    assert "unknown option" in err
    assert_hidden(out + err)


def test_tables_with_a_bad_store_url_hides_secrets(tmp_path: Path, run_cli: Any) -> None:
    transport = open_embedded(tmp_path)
    try:
        transport.admin().ensure_topic(TopicSpec("wordcount-counts-changelog", 1, "compact"))
    finally:
        transport.close()
    store = f"memory://?password={AERO}"
    code, out, err = run_cli(
        "tables", "examples.wordcount:app", "--data-dir", str(tmp_path), "--store-url", store
    )
    assert code == 0, err
    assert "local store unavailable" in out
    assert_hidden(out + err)


def test_an_app_setting_with_a_secret_is_hidden_in_errors(
    tmp_path: Path, run_cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The broker URL comes from the environment, not a flag: errors hide it too.
    monkeypatch.setenv("STATESTREAM_BROKER_URL", f"embedded://{tmp_path}/log?password={AERO}")
    code, out, err = run_cli("tables", "examples.wordcount:app")
    assert code == 1
    assert_hidden(out + err)


@pytest.mark.parametrize("command", ["worker", "tables", "produce"])
def test_help_hides_secrets_from_the_environment(
    command: str, run_cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATESTREAM_BROKER_URL", kafka_url(9092))
    monkeypatch.setenv("STATESTREAM_STORE_URL", AEROSPIKE_URL)
    code, out, err = run_cli(command, "--help")
    assert code == 0, err
    flat = "".join(out.split())  # argparse wraps long words anywhere
    assert "sasl_plain_password=***" in flat
    assert_hidden(flat + err)


# -- the worker ------------------------------------------------------------------------


class _PasswordMemoryStore(MemoryStore):
    """A memory store whose URL takes a password, as a remote store's would."""

    scheme = "pwmemory"

    @classmethod
    def check_url(cls, url: Any) -> None:
        pass  # takes any options

    @classmethod
    def from_url(cls, url: Any, table: str, partition: int) -> _PasswordMemoryStore:
        return cls(table, partition)


def test_worker_start_log_hides_secrets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from examples.wordcount import CountWords, SplitWords
    from statestream.worker.runner import Worker

    monkeypatch.setitem(registry.BUILTIN_STORES, "pwmemory", f"{__name__}:_PasswordMemoryStore")  # type: ignore[index]
    app = App(
        "secrets",
        [SplitWords, CountWords],
        broker_url=f"embedded://{tmp_path}/log",
        store_url=f"pwmemory://?password={AERO}",
        partitions=1,
    )
    caplog.set_level(logging.INFO)
    worker = Worker(app)
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(worker.run())
        except BaseException as exc:  # shown in the assertion below
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        wait_for(lambda: "started" in caplog.text, 20, "the worker's start log line")
    finally:
        worker.request_stop()
        thread.join(20)
    assert not thread.is_alive()
    # Every line the worker logged, not only the start line, hides the secret.
    assert_hidden(caplog.text)
    assert "store pwmemory://?password=***" in caplog.text, outcome

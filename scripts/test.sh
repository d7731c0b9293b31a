#!/usr/bin/env bash
# Set up everything the test suite needs and run it: virtualenv, packages,
# lint, type check, layer contract, a real Kafka broker, pytest.
#
#   bash scripts/test.sh [pytest args...]
#
# The broker is started by scripts/kafka_broker.py and stopped by PID when this
# script exits, however it exits. Set STATESTREAM_REQUIRE_KAFKA=1 to make a
# missing broker a failure instead of a loud skip (CI does).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
"$PYTHON" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"statestream needs Python 3.11+, found {sys.version.split()[0]}; set PYTHON=")
PY

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'

echo "== ruff"
.venv/bin/ruff check statestream tests benchmarks scripts examples
.venv/bin/ruff format --check statestream tests benchmarks scripts examples
echo "== mypy --strict"
.venv/bin/mypy statestream
echo "== import-linter"
.venv/bin/lint-imports --no-cache

PIDDIR="$(mktemp -d -t statestream-kafka.XXXXXX)"
PIDFILE="$PIDDIR/broker.json"
stop_broker() {
    .venv/bin/python scripts/kafka_broker.py stop --pidfile "$PIDFILE" || true
    rm -rf "$PIDDIR"
}
trap stop_broker EXIT

if [ -z "${STATESTREAM_TEST_KAFKA:-}" ]; then
    echo "== starting Kafka broker"
    if BOOTSTRAP="$(.venv/bin/python scripts/kafka_broker.py start --pidfile "$PIDFILE")"; then
        export STATESTREAM_TEST_KAFKA="$BOOTSTRAP"
        echo "Kafka broker at $BOOTSTRAP"
    elif [ "${STATESTREAM_REQUIRE_KAFKA:-0}" = "1" ]; then
        echo "Kafka broker failed to start and STATESTREAM_REQUIRE_KAFKA=1" >&2
        exit 1
    else
        echo "!! Kafka broker unavailable: Kafka tests will be SKIPPED" >&2
    fi
fi

echo "== pytest"
.venv/bin/python -m pytest "$@"

"""The store benchmark's Aerospike rows run on the fake client, for their shape only.

``benchmarks/bench_stores.py --aerospike-fake`` takes the code path the rows
take against a server (the same store, the same raw client calls) on the
tests' in-process fake. Its figures mean nothing, so nothing here judges
them: this checks that every row is measured, that the goals are reported
as not judged, and that the output says the client was a fake.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks" / "bench_stores.py"

pytestmark = pytest.mark.timeout(300)


def test_the_aerospike_rows_run_on_the_fake_client() -> None:
    command = [sys.executable, str(BENCH), "--aerospike-fake", "--n", "300", "--batch", "30"]
    done = subprocess.run(
        [*command, "--repeat", "1", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    rows = {(r["store"], r["operation"]): r for r in document["results"]}
    for operation in ("put", "batch_write", "get", "get_many"):
        row = rows[("aerospike-fake", operation)]
        assert row["ops_per_run"] == 300
        assert row["store_ops_per_s"] > 0
        assert row["raw_ops_per_s"] > 0
        assert row["ratio"] == pytest.approx(row["store_ops_per_s"] / row["raw_ops_per_s"])
    # A scan is not a server benchmark: no iterate row for Aerospike.
    assert ("aerospike-fake", "iterate") not in rows
    # The local stores are measured in the same run.
    assert {("memory", "put"), ("leveldb", "get_many")} <= set(rows)
    report = done.stderr
    assert "FAKE client" in report
    assert "batch_write" in report
    assert "goal >= 85%: not judged" in report
    assert "goal >= 90%: not judged" in report

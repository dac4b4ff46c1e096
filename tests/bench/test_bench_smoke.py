"""`make bench` still works: a 200-ticket data set, every scenario for a few requests against a
real `keepdesk serve`, on each database, with no errors. Timings are not looked at here."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from bench.pg import from_url, own_cluster

from bench import report, runner
from tests.support import postgres
from tests.support.services import missing


def _options(tmp_path: Path, database: str, pg_url: str | None) -> runner.Options:
    return runner.Options(
        tickets=200,
        databases=(database,),
        pg_url=pg_url,
        # One connection: what concurrency does to keepdesk is the benchmark's to report, and
        # this test is about the benchmark's own plumbing.
        concurrency=(1,),
        scale=0.02,  # 20 requests a scenario
        time_limit=60,
        mails=6,
        root=tmp_path / "data",
        log_dir=tmp_path / "logs",
        ceiling_requests=(20, 20),
        warmup=2,
    )


def _every_scenario_ran_clean(db: dict[str, Any]) -> None:
    for round_ in db["rounds"]:
        for name, entry in round_["scenarios"].items():
            if "missing" in entry:
                continue
            assert entry["errors"] == 0, (name, entry.get("error_samples"))
            assert entry["completed"] >= 20, (name, entry)
        for kind in ("json", "table"):
            assert round_["ceiling"][kind]["rps"] > 0
    names = {n for r in db["rounds"] for n, e in r["scenarios"].items() if "missing" not in e}
    assert {"api_list", "api_list_agent", "api_get", "api_create", "api_reply"} <= names
    assert db["mail"]["in_process"]["outcomes"].get("ingested") == 6


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_small_benchmark_runs_every_scenario_without_errors(
    tmp_path: Path, database: str, pg_server: postgres.PostgresServer | None
) -> None:
    pg_url = None
    if database == "postgresql":
        if pg_server is None:
            missing("no PostgreSQL: set KEEPDESK_TEST_POSTGRES_URL or apt install postgresql")
        assert pg_server is not None
        pg_url = pg_server.url("postgres")
        # Each test run builds its own data set on the shared server.
        from_url(pg_url).drop("keepdesk_bench_200")

    results = runner.run(_options(tmp_path, database, pg_url))

    db = results["databases"][database]
    assert not db["dataset"]["reused"]
    _every_scenario_ran_clean(db)
    assert "| API list, 50 newest (agent) |" in report.markdown(results)

    quick = replace(
        _options(tmp_path, database, pg_url),
        concurrency=(1,),
        mails=0,
        only=frozenset({"api_get"}),
    )
    again = runner.run(quick)
    assert again["databases"][database]["dataset"]["reused"], "the cached data set is reused"


def test_the_benchmark_never_clears_a_folder_that_is_not_its_cluster(tmp_path: Path) -> None:
    if postgres.find_bin_dir() is None:
        missing("no PostgreSQL server binaries: apt install postgresql")
    precious = tmp_path / "precious.txt"
    precious.write_text("someone's work")
    with pytest.raises(FileExistsError, match=r"precious\.txt"):
        own_cluster(tmp_path)
    assert precious.read_text() == "someone's work"

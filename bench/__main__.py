"""`python -m bench`: build (or reuse) the data set, run every scenario, write the results.

    python -m bench                         # 100,000 tickets, SQLite and PostgreSQL
    python -m bench --tickets 1000000       # the big run
    python -m bench --databases sqlite --only api_list,web_queue_team

See docs/benchmarks.md for what each scenario does and how to read the ratios.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from bench import report, runner, store

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
RESULTS = Path(__file__).resolve().parent / "results"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("--tickets", type=int, default=100_000, help="data set size [100000]")
    p.add_argument(
        "--databases",
        default="sqlite,postgresql",
        help="comma-separated: sqlite, postgresql [both]",
    )
    p.add_argument(
        "--pg-url",
        help="a PostgreSQL server to use (its database is only used to connect; the bench "
        "creates keepdesk_bench_* databases). Default: KEEPDESK_BENCH_POSTGRES_URL, else a "
        "cluster of its own under bench/data/postgres",
    )
    p.add_argument("--rebuild", action="store_true", help="rebuild the data set even if cached")
    p.add_argument(
        "--analyze",
        action="store_true",
        help="run ANALYZE on the SQLite data set (keepdesk itself never does; default off)",
    )
    p.add_argument("--scale", type=float, default=1.0, help="multiply every request count")
    p.add_argument("--time-limit", type=float, default=10.0, help="seconds per measurement")
    p.add_argument("--mails", type=int, default=300, help="mails per ingest batch (0: skip)")
    p.add_argument("--concurrency", default="1,16", help="comma-separated levels [1,16]")
    p.add_argument(
        "--processes",
        type=int,
        default=os.cpu_count() or 1,
        help="keepdesk serve --processes [one per CPU]",
    )
    p.add_argument("--only", default="", help="comma-separated scenario names")
    p.add_argument("--data", type=Path, default=store.DATA, help="cache folder [bench/data]")
    p.add_argument("--results", type=Path, default=RESULTS, help="output [bench/results]")
    p.add_argument(
        "--update-docs", action="store_true", help=f"write the headline into {DOCS.name}"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    options = runner.Options(
        tickets=args.tickets,
        databases=tuple(d.strip() for d in args.databases.split(",") if d.strip()),
        pg_url=args.pg_url,
        rebuild=args.rebuild,
        analyze=args.analyze,
        concurrency=tuple(int(c) for c in args.concurrency.split(",")),
        processes=args.processes,
        scale=args.scale,
        time_limit=args.time_limit,
        mails=args.mails,
        only=frozenset(n.strip() for n in args.only.split(",") if n.strip()),
        root=args.data,
        log_dir=args.data / "logs",
    )
    unknown = set(options.databases) - {"sqlite", "postgresql"}
    if unknown:
        sys.stderr.write(f"error: unknown database {', '.join(sorted(unknown))}\n")
        return 2
    results = runner.run(options)
    json_path, md_path = report.write(results, args.results)
    if args.update_docs:
        report.update_docs(results, DOCS)
    sys.stdout.write(report.markdown(results) + "\n")
    sys.stdout.write(f"\nresults: {md_path} and {json_path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

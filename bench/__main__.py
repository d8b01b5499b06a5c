"""Run the benchmark: ``python -m bench [--quick] [--only N,N]``.

Every figure is measured in the same run on the same machine, so that ratios cancel the
machine's speed. ``--quick`` runs a tenth of the sizes (the CI smoke test).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from bench import delivery, end_to_end, measure, push
from bench.env import BenchEnv, Results, configure_bench_logging

OUT = Path(__file__).resolve().parents[1] / "bench-results"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the sizes")
    parser.add_argument("--only", default="", help="comma-separated measurement numbers")
    args = parser.parse_args()
    configure_bench_logging()
    only = {int(n) for n in args.only.split(",") if n}
    tenth = 10 if args.quick else 1
    results = Results()
    logs = OUT / "logs"
    started = time.perf_counter()
    print(
        f"mailintake benchmark ({'quick' if args.quick else 'full'}) on {os.cpu_count()} "
        "cores; figures as they come:",
        flush=True,
    )
    with BenchEnv() as env:

        def wanted(number: int) -> bool:
            return not only or number in only

        if wanted(1) or wanted(2):
            measure.raw_limits(env, results, 10_000 // tenth)
        if wanted(2):
            measure.fetcher_alone(env, results)
        if wanted(3):
            rate = end_to_end.end_to_end(env, results, 10_000 // tenth, logs)
            end_to_end.first_sync_large(env, results, 100_000 // tenth, rate, logs)
            end_to_end.store_scale_out(env, results, 20, 1000 // tenth, logs)
        if wanted(4):
            measure.many_mailboxes(env, results, 20, 1000 // tenth, logs)
        if wanted(5):
            measure.incremental(env, results, (1000, 100_000 // tenth), polls=5)
        if wanted(6):
            measure.latency(
                env,
                results,
                samples=20 // (2 if args.quick else 1),
                interval_samples=0 if args.quick else 10,
                logs=logs,
            )
        if wanted(7):
            measure.large_mail(env, results, 50 * 1024 * 1024 // tenth, logs)
        if wanted(8):
            measure.scheduler_scale(
                env, results, 20_000 // tenth, seconds=30 if args.quick else 90, logs=logs
            )
        if wanted(9):
            measure.store_alone(env, results, 50_000 // tenth, logs)
        if wanted(10):
            delivery.exactly_once(env, results, 3000 // tenth, logs)
        if wanted(11):
            push.push_latency(
                env,
                results,
                200 // tenth,
                rate=5.0,
                seconds=80 // (4 if args.quick else 1),
                logs=logs,
            )
        if wanted(12):
            push.watch_scale(
                env, results, 1000 // tenth, seconds=30 if args.quick else 120, logs=logs
            )
    path = results.write(OUT, args.quick)
    print(f"\n{results.table()}\n\nwritten to {path} in {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``make bench`` / ``python -m bench.run``: measures every registered row and prints one table.

Usage:
    python -m bench.run [--only ROW[,ROW...]] [--quick] [--reps N] [--list] [--results-dir DIR] [--keep]
                         [--workdir DIR]

The same table is written as JSON to ``bench/results/bench-<UTC timestamp>.json`` with every
sample. Exit status: 0 when no row failed with an error (a row that misses its goal still exits
0: the table is the verdict; see ``bench/README.md``), 1 otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback

from tabulate import tabulate

# TensorFlow's C++ INFO/WARNING lines would bury the table (the bench imports TF in-process).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Importing a row module registers its rows; table order is this import order.
from bench import rows_preprocess, rows_beam_workers, rows_training, rows_pipeline  # noqa: F401
from bench.harness import REPO_ROOT, ROWS, Context, Goal, Result, fmt, spread_text

HEADERS = ["row", "A vs B", "unit", "A", "B", "A/B", "goal", "result", "reps A/B",
           "A min/med/max", "B min/med/max", "accuracy"]


def _value(xs: list[float]) -> str:
    import statistics

    return fmt(statistics.median(xs)) if xs else ""


def table_rows(results: list[Result]) -> list[list[str]]:
    out = []
    for r in results:
        verdict = {True: "PASS", False: "FAIL", None: "info"}[r.passed] if r.status == "ok" else r.status
        out.append([
            r.name, r.compared, r.unit, _value(r.a), _value(r.b),
            "" if r.ratio is None else f"{r.ratio:.3g}", str(r.goal), verdict,
            f"{len(r.a)}/{len(r.b)}" + (" pairs" if r.paired else ""), spread_text(r.a), spread_text(r.b), r.accuracy,
        ])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated row names (see --list)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions: 3 for fast rows, 1 for slow ones")
    parser.add_argument("--reps", type=int, metavar="N",
                        help="N repetitions per side for every row (rows that cap theirs keep the cap); "
                             "to look closer at one row, with --only")
    parser.add_argument("--list", action="store_true", help="list the rows and exit")
    parser.add_argument("--results-dir", default=os.path.join(REPO_ROOT, "bench", "results"))
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (data, outputs, worker logs)")
    parser.add_argument("--workdir", metavar="DIR",
                        help="scratch folder to use and keep (created if missing); a later run given the same "
                             "folder reuses what is made only once, such as the demo's pretrained backbone")
    args = parser.parse_args(argv)

    if args.list:
        print(tabulate([[r.name, "slow" if r.slow else "fast", r.description] for r in ROWS.values()],
                       headers=["row", "kind", "measures"]))
        return 0
    names = [n for n in args.only.split(",") if n] or list(ROWS)
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        parser.error(f"unknown row(s) {', '.join(unknown)}; known: {', '.join(ROWS)}")

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    started = time.perf_counter()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    if args.workdir:
        workdir = os.path.abspath(args.workdir)
        os.makedirs(workdir, exist_ok=True)
    else:
        workdir = tempfile.mkdtemp(prefix="kfp-finetune-bench-")
    if args.reps is not None and args.reps < 1:
        parser.error(f"--reps must be at least 1, got {args.reps}")
    ctx = Context(quick=args.quick, workdir=workdir, log=log, reps=args.reps)
    results: list[Result] = []
    try:
        for name in names:
            log(f"[{time.perf_counter() - started:6.0f} s] {name} ...")
            t = time.perf_counter()
            try:
                result = ROWS[name].fn(ctx)
            except Exception as e:  # one broken row must not hide the others' numbers
                log(traceback.format_exc())
                result = Result(name=name, compared=ROWS[name].description, unit="", goal=Goal(), status="error",
                                notes=f"error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            result.seconds = time.perf_counter() - t
            results.append(result)
    finally:
        if args.keep or args.workdir:
            log(f"scratch folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    total = time.perf_counter() - started

    print(tabulate(table_rows(results), headers=HEADERS, disable_numparse=True))
    print()
    for r in results:
        if r.notes:
            print(f"- {r.name}: {r.notes}")
    print(f"\n{len(results)} rows in {total:.0f} s ({'quick' if args.quick else 'full'} repetitions) on "
          f"{os.cpu_count()} CPU(s); A/B is the ratio of the medians "
          f"(of rows decided pair by pair, marked 'pairs' in reps A/B: the median of the pairs' A/B).")

    os.makedirs(args.results_dir, exist_ok=True)
    path = os.path.join(args.results_dir, f"bench-{stamp}.json")
    with open(path, "w") as f:
        json.dump({
            "timestamp": stamp, "seconds": round(total, 1), "quick": args.quick, "reps": args.reps,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
            "columns": HEADERS, "table": table_rows(results), "rows": [r.to_json() for r in results],
        }, f, indent=2)
    print(f"results: {os.path.relpath(path, os.getcwd())}")
    return 1 if any(r.status == "error" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

"""Rows of the whole pipeline: kfp.local against the four step functions in one process, and the
fixed cost every step process pays (interpreter start and imports)."""

from __future__ import annotations

import os
import statistics
import sys
from typing import Any

from bench.harness import Context, Goal, Result, interleave, row, time_command



def pipeline_params(ctx: Context, registry_uri: str) -> dict[str, Any]:
    """The demo: its data (digits 5-9), a backbone pretrained on digits 0-4 (shared with the
    fine-tuning rows) and its parameters (the two-phase recipe, 10 + 15 epochs), with a floor of 0
    so push always runs on both sides."""
    from bench.rows_training import demo_task
    from pipelines.demo import DEMO_PARAMS

    task = demo_task(ctx, DEMO_PARAMS["image_size"])
    return {**DEMO_PARAMS, "data_uri": os.path.join(task["root"], "target"), "registry_uri": registry_uri,
            "base_weights": task["weights"], "min_accuracy": 0.0}


def _pipeline_samples(ctx: Context) -> dict[str, Any]:
    kfp_runs: list[dict[str, Any]] = []
    direct_runs: list[dict[str, Any]] = []

    def side(kind: str, runs: list[dict[str, Any]]) -> float:
        out = ctx.fresh_dir(kind)
        # A fresh registry per run: no champion to score, identical work on both sides.
        r = ctx.run_worker(kind, {"out_dir": out, "params": pipeline_params(ctx, f"{out}/registry")})
        if not r["pushed"]:
            raise RuntimeError(f"{kind}: nothing was pushed, so the two sides did not do the same work")
        runs.append(r)
        ctx.log(f"  {kind}: {r['process_seconds']:.1f} s, accuracy {r['accuracy']:.3f}")
        return r["process_seconds"]

    # A pair trains the demo model twice (about 3.5 minutes): one pair keeps make bench under 15 minutes.
    a, b = interleave(1, lambda: side("kfp-pipeline", kfp_runs), lambda: side("direct-pipeline", direct_runs))
    return {"a": a, "b": b, "kfp": kfp_runs, "direct": direct_runs}


def _import_row(ctx: Context, name: str, module: str) -> Result:
    # Slow-row repetitions: importing TensorFlow takes 5-12 s on 2 busy cores.
    reps = ctx.reps(fast=False)
    a, b = interleave(reps, lambda: time_command([sys.executable, "-c", f"import {module}"]),
                      lambda: time_command([sys.executable, "-c", "pass"]))
    ctx.memo("import-costs", lambda: {})[module] = statistics.median(a)
    return Result(
        name=name,
        compared=f"python -c 'import {module}' vs python -c 'pass'",
        unit="s",
        goal=Goal(),
        a=a,
        b=b,
        notes=f"Fixed cost of a fresh step process that needs {module} (each kfp.local step and the preprocess worker are one).",
    )


@row("import_tensorflow", "fresh process importing tensorflow vs an empty one", slow=True)
def import_tensorflow(ctx: Context) -> Result:
    return _import_row(ctx, "import_tensorflow", "tensorflow")


@row("import_tft_beam", "fresh process importing tensorflow_transform.beam vs an empty one", slow=True)
def import_tft_beam(ctx: Context) -> Result:
    return _import_row(ctx, "import_tft_beam", "tensorflow_transform.beam")


@row("import_kfp", "fresh process importing kfp vs an empty one", slow=True)
def import_kfp(ctx: Context) -> Result:
    return _import_row(ctx, "import_kfp", "kfp")


@row("pipeline_overhead", "whole pipeline through kfp.local vs the four step functions in one process", slow=True)
def pipeline_overhead(ctx: Context) -> Result:
    s = _pipeline_samples(ctx)
    steps = {k: statistics.median(r["steps"][k] for r in s["direct"]) for k in s["direct"][0]["steps"]}
    extra = statistics.median(s["a"]) - statistics.median(s["b"])
    imports = ctx.memo("import-costs", lambda: {})
    fixed = ""
    if imports:
        fixed = (" Per step process, kfp.local pays an interpreter start plus imports: "
                 + ", ".join(f"{k} {v:.1f} s" for k, v in imports.items()) + " (import_* rows).")
    return Result(
        name="pipeline_overhead",
        compared="run_local (kfp.local) vs step functions in one process",
        unit="s",
        goal=Goal("<=", 1.15),
        a=s["a"],
        b=s["b"],
        accuracy=f"test acc A {s['kfp'][-1]['accuracy']:.3f} / B {s['direct'][-1]['accuracy']:.3f}",
        notes=(f"The demo (digits 5-9, MobileNetV2 0.35 pretrained on digits 0-4, 48 px, its two-phase recipe with "
               f"10 + 15 epochs); both sides take the same parameters through the same "
               f"settings code; each side a fresh process, wall time. kfp.local costs {extra:+.1f} s "
               f"(goal: under 15%). One-process step times (median): "
               + ", ".join(f"{k} {v:.1f} s" for k, v in steps.items()) + "." + fixed),
    )

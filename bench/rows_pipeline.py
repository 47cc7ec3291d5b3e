"""Rows of the whole pipeline: kfp.local against the four step functions in one process, and the
fixed cost of a fresh process that imports TensorFlow, tf.Transform's Beam API or kfp."""

from __future__ import annotations

import os
import statistics
import sys
from typing import Any

from bench.harness import Context, Goal, Result, interleave, row, time_command

OVERHEAD_GOAL = Goal("<=", 1.15)
# Pairs of pipeline_overhead in a full run: each trains the demo model twice (about 100 s on 2
# quiet cores). Two, and a third only when the first two fall on both sides of the goal, keep
# make bench under 15 minutes; --quick runs one, --reps N exactly N.
FIRST_PAIRS = 2


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
        ctx.log(f"  {kind}: {r['process_seconds']:.1f} s, accuracy {r['accuracy']:.3f}, training phases "
                + ", ".join(f"{k} {v:.1f} s" for k, v in r["phase_seconds"].items()))
        return r["process_seconds"]

    def pairs(n: int) -> tuple[list[float], list[float]]:
        return interleave(n, lambda: side("kfp-pipeline", kfp_runs), lambda: side("direct-pipeline", direct_runs))

    if ctx.reps_override is not None or ctx.quick:
        a, b = pairs(ctx.reps(fast=False))
        rule = "--reps" if ctx.reps_override is not None else "--quick"
    else:
        a, b = pairs(FIRST_PAIRS)
        rule = f"{FIRST_PAIRS}, and one more when those fall on both sides of the goal"
        if len({OVERHEAD_GOAL.check(r) for r in pair_ratios(a, b)}) > 1:
            ctx.log(f"  the first {FIRST_PAIRS} pairs fall on both sides of the goal: one more pair")
            more_a, more_b = pairs(1)
            a, b = a + more_a, b + more_b
    return {"a": a, "b": b, "kfp": kfp_runs, "direct": direct_runs, "rule": rule}


def _import_row(ctx: Context, name: str, module: str, note: str) -> Result:
    # Slow-row repetitions: importing TensorFlow takes 5-12 s on 2 busy cores.
    reps = ctx.reps(fast=False)
    a, b = interleave(reps, lambda: time_command([sys.executable, "-c", f"import {module}"]),
                      lambda: time_command([sys.executable, "-c", "pass"]))
    return Result(
        name=name,
        compared=f"python -c 'import {module}' vs python -c 'pass'",
        unit="s",
        goal=Goal(),
        a=a,
        b=b,
        notes=f"Wall time of the whole process, its exit included. {note}",
    )


@row("import_tensorflow", "fresh process importing tensorflow vs an empty one", slow=True)
def import_tensorflow(ctx: Context) -> Result:
    return _import_row(ctx, "import_tensorflow", "tensorflow", (
        "What the finetune and evaluate step processes pay before their work (Keras comes with it), plus the "
        "interpreter's teardown after it (about 0.9 s on 2 cores), which a step process skips "
        "(components.step_errors.end_process_quickly)."))


@row("import_tft_beam", "fresh process importing tensorflow_transform.beam vs an empty one", slow=True)
def import_tft_beam(ctx: Context) -> Result:
    return _import_row(ctx, "import_tft_beam", "tensorflow_transform.beam", (
        "What the preprocess step's Beam worker process pays before its work (it leaves with os._exit, "
        "without the teardown)."))


@row("import_kfp", "fresh process importing kfp vs an empty one", slow=True)
def import_kfp(ctx: Context) -> Result:
    return _import_row(ctx, "import_kfp", "kfp", (
        "What the process that runs run_local (kfp-finetune run-local) pays. A step process imports only "
        "kfp.dsl's executor, with _KFP_RUNTIME=true set by the compiled command, which skips kfp's client "
        "(kubernetes, requests): its whole start takes about 0.05-0.1 s (pipeline_overhead's notes)."))


def step_breakdown(kfp_runs: list[dict[str, Any]], direct_runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per step, medians over the runs of each side: the kfp.local task's phases (``launch``,
    ``body``, ``exit``, ``after``, ``total``: ``bench.timeline.TaskTiming``), the same step called
    in one process (``direct``) and ``extra`` = total - direct. The finetune step adds
    ``imports`` / ``direct_imports``: its time before its own clock starts (``finetune_seconds``),
    i.e. importing Keras and TensorFlow, in its task's body and in the one-process call. Then
    ``start``: before the first task (kfp side: the process's imports and ``run_local`` up to
    ``Running pipeline``, with its ``compile``; one-process side: its imports).

    Args:
        kfp_runs: ``bench.workers kfp-pipeline`` results (``tasks``, ``imports``, ``before_run``,
            ``compile``, ``finetune_seconds``).
        direct_runs: ``bench.workers direct-pipeline`` results (``steps``, ``finetune_seconds``).

    Returns:
        ``{step: {field: seconds}}`` in the order the tasks ran, then ``"start"``.

    Raises:
        KeyError: a task the one-process side has no step for (the pipeline changed).
    """
    med = statistics.median
    out: dict[str, dict[str, float]] = {}
    for name in [t["name"] for t in kfp_runs[0]["tasks"]]:
        tasks = [next(t for t in r["tasks"] if t["name"] == name) for r in kfp_runs]
        part = {k: med(t[k] for t in tasks) for k in ("launch", "body", "exit", "after")}
        part["total"] = med(t["launch"] + t["body"] + t["exit"] for t in tasks)
        part["direct"] = med(r["steps"][name] for r in direct_runs)
        part["extra"] = part["total"] - part["direct"]
        if name == "finetune":
            part["imports"] = med(t["body"] - r["finetune_seconds"] for t, r in zip(tasks, kfp_runs))
            part["direct_imports"] = med(r["steps"][name] - r["finetune_seconds"] for r in direct_runs)
        out[name] = part
    start = med(r["imports"] + r["before_run"] for r in kfp_runs)
    direct_start = med(r["steps"]["imports"] for r in direct_runs)
    out["start"] = {"total": start, "compile": med(r["compile"] for r in kfp_runs), "direct": direct_start,
                    "extra": start - direct_start}
    return out


def pair_ratios(a: list[float], b: list[float]) -> list[float]:
    """A/B of each interleaved pair (A's i-th sample over B's i-th)."""
    return [x / y for x, y in zip(a, b)]


def same_training_ratios(a: list[float], b: list[float], kfp_runs: list[dict[str, Any]],
                         direct_runs: list[dict[str, Any]]) -> list[float]:
    """A/B of each pair with A's training phases (``phase_seconds``: head and fine-tune) taken
    at B's duration: what remains of A - B is what the two ways of running differ in, without
    the training-speed changes that other load on the machine causes between the two runs.

    Args:
        a, b: The pairs' wall seconds.
        kfp_runs, direct_runs: The same runs' results, in the same order.

    Returns:
        One ratio per pair.
    """
    def training(r: dict[str, Any]) -> float:
        return sum(r["phase_seconds"].values())

    return [(x - training(k) + training(d)) / y for x, y, k, d in zip(a, b, kfp_runs, direct_runs)]


def _ratios_text(ratios: list[float]) -> str:
    return ", ".join(f"{r:.3f}" for r in ratios) + (f" (range {min(ratios):.3f}-{max(ratios):.3f})" if len(ratios) > 1 else "")


def _breakdown_text(parts: dict[str, dict[str, float]]) -> str:
    tasks = {name: p for name, p in parts.items() if name != "start"}
    steps = "; ".join(f"{name} {p['total']:.1f} vs {p['direct']:.1f} s ({p['extra']:+.1f})" for name, p in tasks.items())
    start = parts["start"]
    ft, ev = tasks["finetune"], tasks["evaluate"]
    return (f"{steps}. Each task's process: start (sh, interpreter, kfp.dsl.executor_main; the executor sets "
            f"_KFP_RUNTIME, so kfp's client is not imported) "
            + ", ".join(f"{p['launch']:.2f}" for p in tasks.values()) + " s, exit (interpreter teardown, "
            "outputs read) " + ", ".join(f"{p['exit']:.2f}" for p in tasks.values()) + " s; Keras + TensorFlow "
            f"import {ft['imports']:.1f} s in the finetune process ({ft['direct_imports']:.1f} s in the one process, "
            f"which pays it once, in its finetune call) and again in the evaluate process, whose body takes "
            f"{ev['body']:.1f} s against {ev['direct']:.1f} s with TensorFlow already loaded; kfp.local between tasks "
            + f"{sum(p['after'] for p in tasks.values()):.2f} s in all; before the first task {start['total']:.2f} s "
            f"(imports, compile {start['compile']:.2f} s, kfp.local setup) vs {start['direct']:.2f} s of imports")


@row("pipeline_overhead", "whole pipeline through kfp.local vs the four step functions in one process", slow=True)
def pipeline_overhead(ctx: Context) -> Result:
    s = _pipeline_samples(ctx)
    extra = statistics.median(x - y for x, y in zip(s["a"], s["b"]))
    parts = step_breakdown(s["kfp"], s["direct"])
    fine_tune = [statistics.median(r["phase_seconds"]["fine_tune"] for r in runs) for runs in (s["kfp"], s["direct"])]
    return Result(
        name="pipeline_overhead",
        compared="run_local (kfp.local) vs step functions in one process",
        unit="s",
        goal=OVERHEAD_GOAL,
        a=s["a"],
        b=s["b"],
        accuracy=f"test acc A {s['kfp'][-1]['accuracy']:.3f} / B {s['direct'][-1]['accuracy']:.3f}",
        notes=(f"The demo (digits 5-9, MobileNetV2 0.35 pretrained on digits 0-4, 48 px, its two-phase recipe with "
               f"10 + 15 epochs); both sides take the same parameters through the same settings code; each side a "
               f"fresh process, wall time; {len(s['a'])} interleaved pair(s) ({s['rule']}). A/B of each pair: {_ratios_text(pair_ratios(s['a'], s['b']))}; with A's training "
               f"phases at B's duration (noise check: training speed varies with other load): "
               f"{_ratios_text(same_training_ratios(s['a'], s['b'], s['kfp'], s['direct']))}. kfp.local adds "
               f"{extra:+.1f} s (median of the pairs); fine-tune phase A {fine_tune[0]:.1f} s / B {fine_tune[1]:.1f} s. "
               f"Per step, kfp.local task vs the same call in one process (medians): {_breakdown_text(parts)}."),
        details={"kfp": s["kfp"], "direct": s["direct"]},
        paired=True,  # the pairs decide (the third breaks a tie): A/B is the median of the pairs' ratios
    )

"""Trials per hour: where a search's wall time goes, and its whole-process wall against P2.

For each task of ``bench/peers.py`` asked for (``tabular`` and the ``demo`` CNN by default):

1. Whole-process walls, interleaved (autotune, P2, autotune, P2, ...) ``--repeats`` times,
   through peers.py's own ``run_one``: ``autotune search`` through the CLI entry point with a
   cold analysis cache, and P2 (the plain Optuna script: TPE, median pruner, the same trials and
   data) as peers.py's worker process. Medians and the ratio of the medians. Each autotune
   run's study file then says, without any profiler, how its wall splits into before the first
   trial, the trials (and within each, ``fine_tune``'s own ``seconds``) and after the last one.
2. One in-process ``autotune.search`` under cProfile (in a fresh process, with the CLI's
   settings and its closing summary), split into load, analysis, the trials (fit, storage and
   Optuna, latency, flips, checkpoint, other) and the end (leaderboard, export and its
   ``torch.export``, report and charts, settling the study file). cProfile slows Python-heavy
   parts more than torch kernels: read its shares, not its seconds, against the walls.
3. Imports: a fresh interpreter's ``import autotune.api`` and ``import autotune.cli``, and
   ``-X importtime`` of a short CLI search (``IMPORTTIME_TRIALS`` trials: both stages) for the
   top offenders and for which heavy packages a search imports.

Tasks are built (and the demo cached) by peers.py before anything is timed; nothing downloads.
One torch thread everywhere.

Run: python bench/throughput.py [--tasks tabular demo] [--trials 30] [--repeats 3]
         [--workdir DIR] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import peers

SEED = 0
"""Every repeat runs the same seed: on one thread each run does the same work, so the spread
between repeats is the machine's."""
TARGET_RATIO = {"tabular": 2.0, "demo": 1.3}
"""The issue's limits on autotune's whole-process wall over P2's (reported, not tuned toward)."""
OUTSIDE_FIT_TARGET = {"demo": 0.10}
"""The issue's limit on a trial's wall spent outside ``fine_tune``."""
HEAVY = (
    "shap", "matplotlib", "plotly", "pandas", "sklearn", "scipy", "torch_pruning",
    "torch._dynamo", "sympy", "optuna.importance",
)  # fmt: skip
"""Packages whose import is slow enough to matter in a small search."""
IMPORTTIME_TRIALS = 6
"""The ``-X importtime`` search: three trials a stage, so that the report's per-stage parameter
importances (which need two completed trials a stage) import what they import."""
IMPORT_REPEATS = 3
TOP_IMPORTS = 10
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
"""What peers.timed gives every process: the import timings get the same."""

API, CLI = "autotune/api.py", "autotune/cli.py"
RUNNER, OBJECTIVE = "autotune/search/runner.py", "autotune/search/objective.py"
EXPORT, REPORT = "autotune/results/export.py", "autotune/results/report.py"
MAKER = "autotune/trial/maker.py"
DEPLOY, CHARTS = "autotune/results/deploy.py", "autotune/results/charts.py"
COMMIT = ("~", "<method 'commit' of 'sqlite3.Connection' objects>")


# --- Whole-process walls ------------------------------------------------------------------------

_STAMPS: list[tuple[float, float]] = []
"""(start, end) epoch seconds of every process peers.timed ran, in order."""
_peers_timed = peers.timed


def _stamped(command: list[str], log: Path, **extra_env: str) -> tuple[int, float]:
    start = time.time()
    rc, wall = _peers_timed(command, log, **extra_env)
    _STAMPS.append((start, start + wall))
    return rc, wall


peers.timed = _stamped  # run_one's processes, stamped so the study's timestamps line up


def run_method(
    method: str, task: str, spec_path: Path, args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    """One peers.py run (its process wall, then peers.py's untimed measurement); for autotune,
    plus the split its study file gives."""
    _STAMPS.clear()
    record = peers.run_one(method, task, spec_path, SEED, peer_args(args), work, None)
    if record.get("rc") == 0 and method == "autotune" and _STAMPS:
        start, end = _STAMPS[0]
        record["timeline"] = timeline(work / f"{task}-autotune-s{SEED}", start, end)
    return record


def peer_args(args: argparse.Namespace) -> argparse.Namespace:
    """What peers.run_one reads of its own command line: its defaults, our trials."""
    return argparse.Namespace(
        trials=args.trials, max_epochs=peers.MAX_EPOCHS, patience=peers.PATIENCE, quick=False
    )


def timeline(out: Path, start: float, end: float) -> dict[str, Any]:
    """Split one finished autotune process's wall by its study's trial timestamps: before the
    first trial, the trials (each one's ``fine_tune`` seconds as it recorded them, which include
    its pruner reports), the gaps between trials, and after the last."""
    import optuna

    from autotune.search.study import load_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = load_study(None, out)
    trials = [
        t
        for t in study.get_trials(deepcopy=False)
        if not t.user_attrs.get("baseline") and t.datetime_start and t.datetime_complete
    ]
    if not trials:
        return {}
    first = min(t.datetime_start.timestamp() for t in trials)  # type: ignore[union-attr]
    last = max(t.datetime_complete.timestamp() for t in trials)  # type: ignore[union-attr]
    walls = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials]  # type: ignore[operator]
    fits = [float(t.user_attrs.get("seconds") or 0.0) for t in trials]
    outside = [1 - f / w for f, w in zip(fits, walls, strict=True) if f > 0 and w > 0]
    epochs = sum(int(t.user_attrs.get("epochs") or 0) for t in trials)
    return {
        "before": first - start,
        "span": last - first,
        "trial_walls": sum(walls),
        "fit": sum(fits),
        "after": end - last,
        "trials": len(trials),
        "outside_shares": outside,
        "epochs": epochs,
    }


# --- The profiled search ------------------------------------------------------------------------


def profile_worker(args: argparse.Namespace) -> None:
    """In its own process: one ``autotune.search`` with the CLI's settings and its summary,
    under cProfile; the stats to ``--stats``, the wall and heavy imports to ``--result``."""
    import autotune.cli
    from autotune.api import search
    from autotune.load.job import DataSpec, ModelSpec

    spec = json.loads(Path(args.task_file).read_text())
    model = ModelSpec(spec["model"], arch=spec.get("arch"), num_classes=spec.get("num_classes"))
    before = set(sys.modules)
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    result = search(
        model, DataSpec(spec["data"]), trials=args.trials, out=args.out, seed=SEED, threads=1
    )
    summary = getattr(autotune.cli, "_summary", None)
    if summary is not None:  # what `autotune search` prints at the end
        summary(result)
    profile.disable()
    wall = time.perf_counter() - start
    profile.dump_stats(args.stats)
    trials = [t for t in result.study.trials if not t.user_attrs.get("baseline")]
    Path(args.result).write_text(
        json.dumps(
            {
                "wall_s": wall,
                "trials": len(trials),
                "heavy": sorted(m for m in set(sys.modules) - before if m in HEAVY),
            }
        )
    )


def profile_search(
    task: str, spec_path: Path, args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    """Run ``profile_worker`` on a task (cold analysis cache) and split its profile."""
    tag = f"{task}-profile"
    stats, result, out = work / f"{tag}.prof", work / f"{tag}.json", work / tag
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--profile-worker"]
    command += ["--task-file", str(spec_path), "--trials", str(args.trials)]
    command += ["--out", str(out), "--stats", str(stats), "--result", str(result)]
    cache = peers.cold_cache(work / f"{tag}-cache")
    rc, wall = _stamped(command, work / f"{tag}.log", AUTOTUNE_CACHE_DIR=str(cache))
    if rc != 0 or not stats.is_file():
        return {"error": peers.tail(work / f"{tag}.log"), "process_s": wall}
    info = json.loads(result.read_text())
    return {**info, "process_s": wall, **split_profile(Profile(stats), info["wall_s"])}


class Profile:
    """Cumulative seconds of functions in a cProfile dump, optionally only through some callers."""

    def __init__(self, path: Path) -> None:
        self.stats: dict[Any, Any] = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]

    def __call__(
        self, file: str, name: str, callers: tuple[tuple[str, str], ...] | None = None
    ) -> float:
        total = 0.0
        for (f, _, n), (_, _, _, cumulative, by) in self.stats.items():
            if not (f.endswith(file) and n == name):
                continue
            if callers is None:
                total += cumulative
                continue
            for (cf, _, cn), timing in by.items():
                if any(cf.endswith(a) and cn == b for a, b in callers):
                    total += timing[3]
        return total

    def calls(self, file: str, name: str) -> int:
        return sum(v[1] for (f, _, n), v in self.stats.items() if f.endswith(file) and n == name)


def split_profile(p: Profile, wall: float) -> dict[str, Any]:
    """The search's phases, and its trials' parts, as disjoint (label, seconds) rows; each
    table's last row is what is left of its total."""
    stage2 = p(OBJECTIVE, "_slimmer")  # ranks the adapted parent: analysis, not a trial's work
    trials = p(RUNNER, "_trials") - stage2
    on_epoch = p(OBJECTIVE, "on_epoch")
    in_run = ((OBJECTIVE, "_run"),)
    fit = p(MAKER, "fit", ((OBJECTIVE, "_run"), (OBJECTIVE, "_retry_smaller"))) - on_epoch
    storage = {
        "pruner: report + should_prune every epoch (objective on_epoch)": on_epoch,
        "trial record writes (search/record.py record, from objective._run)": p(
            "autotune/search/record.py", "record", in_run
        ),
        "constraints (Trial.set_constraint)": p("optuna/trial/_trial.py", "set_constraint", in_run),
        "sampling the configuration (objective._configure: space.suggest, stage record)": (
            p(OBJECTIVE, "_configure") - stage2
        ),
        "Optuna around the objective: ask (TPE), tell, the loop's storage checks": (
            p(RUNNER, "_trials") - p(OBJECTIVE, "__call__") - p(RUNNER, "_after")
        ),
    }
    latency = p("autotune/trial/cost.py", "measure", in_run)
    flips = p(OBJECTIVE, "_count_flips")
    checkpoint = p(OBJECTIVE, "_keep_if_best")
    rest = trials - fit - sum(storage.values()) - latency - flips - checkpoint
    trial_rows: list[tuple[str, float]] = [
        ("fit (trial/fit.py fine_tune, less its on_epoch calls)", fit),
        ("storage and Optuna", sum(storage.values())),
        *((f"  {k}", v) for k, v in storage.items()),
        ("latency (trial/cost.py measure)", latency),
        ("flips (objective._count_flips: predictions + count_flips)", flips),
        ("checkpoint (objective._keep_if_best)", checkpoint),
        (
            "  of which torch.save",
            p("torch/serialization.py", "save", ((OBJECTIVE, "_keep_if_best"),)),
        ),
        ("other", rest),
        ("  of which building the model (maker.build: copy, prune, freeze)",
         p(MAKER, "build", in_run)),
        ("  of which the live leaderboard (Search._after)", p(RUNNER, "_after")),
    ]  # fmt: skip
    finish = p(API, "_finish")
    from_finish = ((API, "_finish"),)
    leaderboard = p(EXPORT, "write_leaderboard", from_finish)
    export = p(EXPORT, "export_trial", from_finish)
    publish = p(API, "_publish")
    phases = {
        "data and model load (api.make_job)": p(API, "make_job"),
        "set-up (Search.__post_init__: device data, reference predictions)": p(
            RUNNER, "__post_init__"
        ),
        "study file (Search.open)": p(RUNNER, "open"),
        "analysis and the source's cost (Search.prepare)": p(RUNNER, "prepare"),
        "stage 2's analysis of the adapted parent (objective._slimmer)": stage2,
        "baseline and seed trials (add_baseline, add_seeds)": p(RUNNER, "add_baseline")
        + p(RUNNER, "add_seeds"),
        "trials (Search._trials, less stage 2's analysis)": trials,
        "end: leaderboard.csv (write_leaderboard)": leaderboard,
        "end: export (export_trial)": export,
        "end: report, charts, dashboard files (api._publish)": publish,
        "end: the rest of api._finish (finalists, prune_checkpoints)": (
            finish - leaderboard - export - publish
        ),
        "end: settling the study file (study_file.settle)": p(
            "autotune/search/study_file.py", "settle"
        ),
        "end: the CLI's summary (cli._summary)": p(CLI, "_summary"),
    }
    in_export = ((EXPORT, "export_trial"),)
    detail = {
        "end: export (export_trial)": [
            ("  of which torch.export (deploy._save_program)", p(DEPLOY, "_save_program")),
            ("  of which rebuilding the trial's model (export.rebuild)", p(EXPORT, "rebuild")),
            ("  of which its own write_leaderboard", p(EXPORT, "write_leaderboard", in_export)),
        ],
        "end: report, charts, dashboard files (api._publish)": [
            ("  of which analysis charts (charts.plot_analysis)",
             p(CHARTS, "plot_analysis", ((API, "_publish"),))),
            ("  of which the report (report.write_report)", p(REPORT, "write_report")),
            ("    of which its PNGs (charts.plot_study, matplotlib)",
             p(CHARTS, "plot_study") + p(REPORT, "_pngs")),  # report._pngs before d5090d6
            ("    of which parameter importances (report._importances)",
             p(REPORT, "_importances")),
        ],
    }  # fmt: skip
    phase_rows: list[tuple[str, float]] = []
    for label, seconds in phases.items():
        phase_rows.append((label, seconds))
        phase_rows += detail.get(label, [])
    phase_rows.append(("other (space choice, display set-up, ...)", wall - sum(phases.values())))
    return {
        "phases": phase_rows,
        "trial_parts": trial_rows,
        "trials_s": trials,
        "fit_s": fit,
        "fine_tune_s": fit + on_epoch,
        "commits": (p(*COMMIT), p.calls(*COMMIT)),
        "heavy_s": {m: p(f"{m.replace('.', '/')}/__init__.py", "<module>") for m in HEAVY},
    }


# --- Imports ------------------------------------------------------------------------------------

IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)")


def fresh(code: str) -> tuple[float, float]:
    """A fresh interpreter's in-process seconds for ``code``, and its whole-process wall."""
    timed = f"import time; t = time.perf_counter(); {code}; print(time.perf_counter() - t)"
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", timed], capture_output=True, text=True, check=True,
        env={**os.environ, **ENV},
    )  # fmt: skip
    return float(done.stdout), time.perf_counter() - start


def import_times() -> list[tuple[str, float]]:
    """Medians over IMPORT_REPEATS fresh interpreters, interleaved."""
    codes = {
        "interpreter start and exit (`python -c pass`, whole process)": "pass",
        "`import torch`": "import torch",
        "`import optuna`": "import optuna",
        "`import autotune.api` (torch included)": "import autotune.api",
        "`import autotune.cli` (what `autotune search` imports before it parses)": (
            "import autotune.cli"
        ),
    }
    runs: dict[str, list[float]] = {k: [] for k in codes}
    whole: list[float] = []
    for _ in range(IMPORT_REPEATS):
        for label, code in codes.items():
            inside, outside = fresh(code)
            runs[label].append(outside if code == "pass" else inside)
            if code == "import autotune.cli":
                whole.append(outside)
    rows = [(k, statistics.median(v)) for k, v in runs.items()]
    rows.append(("`python -c 'import autotune.cli'`, whole process", statistics.median(whole)))
    return rows


def parse_importtime(text: str) -> list[tuple[int, float, str]]:
    """``-X importtime`` lines as (level, cumulative seconds, module), in the order printed
    (a module after the modules it imported)."""
    found = []
    for line in text.splitlines():
        match = IMPORT_LINE.search(line)
        if match:
            _, cumulative, indent, name = match.groups()
            found.append((len(indent) // 2, int(cumulative) / 1e6, name))
    return found


def parents(entries: list[tuple[int, float, str]]) -> list[int | None]:
    """The index of the module that imported each entry (None at level 0): importtime prints a
    module after its children, so a module at level L adopts the pending ones at L + 1."""
    parent: list[int | None] = [None] * len(entries)
    pending: dict[int, list[int]] = {}
    for i, (level, _, _) in enumerate(entries):
        for child in pending.pop(level + 1, []):
            parent[child] = i
        pending.setdefault(level, []).append(i)
    return parent


def heavy_imports(entries: list[tuple[int, float, str]]) -> dict[str, tuple[float, str]]:
    """For each HEAVY package imported: the seconds of its outermost entries (the package and
    any of its submodules imported apart from it, as Optuna's lazy ``optuna.importance`` is),
    and the level-0 import that pulled in the largest of them (an import made at run time by a
    function prints at level 0: then that is the package's own name)."""
    parent = parents(entries)

    def inside(i: int, package: str) -> bool:
        return entries[i][2] == package or entries[i][2].startswith(package + ".")

    def ancestors(i: int) -> list[int]:
        chain = []
        up = parent[i]
        while up is not None:
            chain.append(up)
            up = parent[up]
        return chain

    found: dict[str, tuple[float, str]] = {}
    for package in HEAVY:
        tops = [
            i
            for i in range(len(entries))
            if inside(i, package) and not any(inside(a, package) for a in ancestors(i))
        ]
        if tops:
            largest = max(tops, key=lambda i: entries[i][1])
            root = ([largest, *ancestors(largest)])[-1]
            found[package] = (sum(entries[i][1] for i in tops), entries[root][2])
    return found


def lazy_imports(entries: list[tuple[int, float, str]]) -> list[tuple[int, float, str]]:
    """The level-0 imports printed after ``autotune.cli``'s: made while the command ran."""
    last = max(
        (i for i, e in enumerate(entries) if e[0] == 0 and e[2] == "autotune.cli"), default=-1
    )
    return sorted((e for e in entries[last + 1 :] if e[0] == 0), key=lambda e: -e[1])


def packages(entries: list[tuple[int, float, str]]) -> list[tuple[int, float, str]]:
    """Top-level packages (no dot in the name) at any depth, slowest first."""
    return sorted((e for e in entries if "." not in e[2]), key=lambda e: -e[1])


def startup_importtime() -> list[tuple[int, float, str]]:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import autotune.cli"],
        capture_output=True, text=True, check=True, env={**os.environ, **ENV},
    )  # fmt: skip
    return parse_importtime(done.stderr)


def search_importtime(task: str, spec_path: Path, work: Path) -> dict[str, Any]:
    """A short CLI search, as peers.py starts it, under ``-X importtime``."""
    spec = json.loads(spec_path.read_text())
    tag = f"{task}-importtime"
    command = peers.search_command(spec, work / tag, IMPORTTIME_TRIALS, SEED)
    cache = peers.cold_cache(work / f"{tag}-cache")
    log = work / f"{tag}.log"
    rc, _ = _stamped(command, log, PYTHONPROFILEIMPORTTIME="1", AUTOTUNE_CACHE_DIR=str(cache))
    if rc != 0:
        return {"error": peers.tail(log), "command": command}
    return {"entries": parse_importtime(log.read_text(errors="replace")), "command": command}


# --- The report ---------------------------------------------------------------------------------


def git(*words: str) -> str:
    return subprocess.run(
        ["git", *words], capture_output=True, text=True, cwd=peers.BENCH.parent
    ).stdout.strip()


def _med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _s(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _pct(part: float | None, whole: float | None) -> str:
    return "n/a" if part is None or not whole else f"{100 * part / whole:.0f}%"


def task_lines(
    task: str,
    runs: list[dict[str, Any]],
    profiled: dict[str, Any],
    imports: dict[str, Any],
    args: argparse.Namespace,
) -> tuple[list[str], list[str]]:
    """The Markdown of one task, and its lines for the targets."""
    ok = {m: [r for r in runs if r["method"] == m and r.get("rc") == 0] for m in ("autotune", "p2")}
    lines = ["", f"**{task}**", ""]
    lines += ["| repeat | autotune s | P2 s | autotune / P2 |", "| --- | ---: | ---: | ---: |"]
    for i in range(args.repeats):
        at = next((r for r in runs if r["method"] == "autotune" and r["repeat"] == i), {})
        p2 = next((r for r in runs if r["method"] == "p2" and r["repeat"] == i), {})
        a = at.get("wall_s") if at.get("rc") == 0 else None
        b = p2.get("wall_s") if p2.get("rc") == 0 else None
        ratio = f"{a / b:.2f}" if a and b else "n/a"
        lines.append(f"| {i + 1} | {_s(a)} | {_s(b)} | {ratio} |")
    at_med = _med([r["wall_s"] for r in ok["autotune"]])
    p2_med = _med([r["wall_s"] for r in ok["p2"]])
    ratio = at_med / p2_med if at_med and p2_med else None
    lines.append(f"| **median** | **{_s(at_med)}** | **{_s(p2_med)}** | **{_s(ratio, 2)}** |")
    acc = {m: _med([r["test_accuracy"] for r in ok[m] if r.get("test_accuracy") is not None])
           for m in ok}  # fmt: skip
    failed = [f"{r['method']} repeat {r['repeat'] + 1}: {r.get('error', '')[-200:]}"
              for r in runs if r.get("rc") != 0]  # fmt: skip
    lines += [
        "",
        f"Test accuracy (a check that both did their work): autotune "
        f"{_s(_pct_value(acc['autotune']))}%, P2 {_s(_pct_value(acc['p2']))}%."
        + (f" Failed: {'; '.join(failed)}." if failed else ""),
    ]
    # The unprofiled split, from each autotune run's study file.
    tl = [r["timeline"] for r in ok["autotune"] if r.get("timeline")]
    if tl:

        def med(key: str) -> float | None:
            return _med([t[key] for t in tl])

        shares = [s for t in tl for s in t["outside_shares"]]
        wall = at_med
        in_trials = med("trial_walls")
        lines += [
            "",
            f"The autotune runs' walls split by their study files' timestamps (no profiler; "
            f"medians of {len(tl)} runs):",
            "",
            "| part | s | share of the wall |",
            "| --- | ---: | ---: |",
            f"| process start to the first trial: interpreter, imports, load, analysis, study, "
            f"baseline | {_s(med('before'))} | {_pct(med('before'), wall)} |",
            f"| the trials, first start to last end | {_s(med('span'))} | "
            f"{_pct(med('span'), wall)} |",
            f"| of which inside the trials' fine_tune (their recorded `seconds`) | "
            f"{_s(med('fit'))} | {_pct(med('fit'), wall)} |",
            f"| of which inside trials, outside fine_tune | "
            f"{_s(_sub(in_trials, med('fit')))} | {_pct(_sub(in_trials, med('fit')), wall)} |",
            f"| of which between trials (the loop, callbacks) | "
            f"{_s(_sub(med('span'), in_trials))} | {_pct(_sub(med('span'), in_trials), wall)} |",
            f"| last trial's end to process exit: export, report, settle, summary | "
            f"{_s(med('after'))} | {_pct(med('after'), wall)} |",
            "",
            f"Per trial, the share of its wall (Optuna's start to complete) outside fine_tune: "
            f"median {_pct(_med(shares), 1)}, max {_pct(max(shares) if shares else None, 1)}; "
            f"{sum(s > 0.10 for s in shares)} of {len(shares)} trials above 10%. "
            f"Trials per hour: {_s(3600 * tl[0]['trials'] / wall if wall else None, 0)} "
            f"whole process ({_s(3600 * args.trials / p2_med if p2_med else None, 0)} for P2). "
            f"The trials' fine_tune alone ({_s(med('fit'))} s, {tl[0]['epochs']} epochs in "
            f"{tl[0]['trials']} trials) is {_s(_ratio(med('fit'), p2_med), 2)}x P2's whole "
            "process.",
        ]
    # The profiled split.
    if "error" in profiled:
        lines += ["", f"Profiled search failed: {profiled['error']}"]
    elif profiled:
        wall = profiled["wall_s"]
        lines += [
            "",
            f"Profiled in-process `autotune.search` + the CLI's summary (cProfile, "
            f"{profiled['trials']} trials, cold cache): {wall:.1f} s "
            f"({profiled['process_s']:.1f} s whole process).",
            "",
            "| phase | s | share |",
            "| --- | ---: | ---: |",
        ]
        lines += [f"| {k} | {v:.2f} | {_pct(v, wall)} |" for k, v in profiled["phases"]]
        trials_s, n = profiled["trials_s"], max(1, profiled["trials"])
        commit_s, commits = profiled["commits"]
        lines += [
            "",
            f"The trials' {trials_s:.1f} s ({1000 * trials_s / n:.0f} ms a trial on average):",
            "",
            "| part of the trials | s | share | ms a trial |",
            "| --- | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {k} | {v:.2f} | {_pct(v, trials_s)} | {1000 * v / n:.0f} |"
            for k, v in profiled["trial_parts"]
        ]
        lines += [
            "",
            f"Fit {_pct(profiled['fit_s'], trials_s)} of the trials' time, outside it "
            f"{_pct(trials_s - profiled['fit_s'], trials_s)} (outside fine_tune with its "
            "on_epoch calls counted as inside: "
            f"{_pct(trials_s - profiled['fine_tune_s'], trials_s)}). "
            f"SQLite commits over the whole search: {commits} taking {commit_s:.2f} s. "
            "Heavy packages the search imported after `import autotune.cli`, with their "
            "import's seconds under the profiler (inside the phases above): "
            + (
                ", ".join(f"{m} {profiled['heavy_s'].get(m, 0.0):.2f}" for m in profiled["heavy"])
                or "none"
            )
            + ".",
        ]
    # Imports of this task's search.
    found = imports.get("entries")
    if found:
        top = lazy_imports(found)[:TOP_IMPORTS]
        lines += [
            "",
            f"`-X importtime` of `{shlex.join(['autotune', *imports['command'][1:]])}` "
            f"({IMPORTTIME_TRIALS} trials): imports made at run time, after start-up, "
            "slowest first (s, cumulative, under importtime): "
            + ", ".join(f"`{name}` {c:.2f}" for _, c, name in top)
            + ".",
        ]
        heavy = heavy_imports(found)
        start = imports.get("startup", {})
        lines += ["", "| heavy package | imported by the search | s | pulled in by | at start-up |",
                  "| --- | --- | ---: | --- | --- |"]  # fmt: skip
        for name in HEAVY:
            if name in heavy:
                c, via = heavy[name]
                at_start = "yes" if name in start else "no"
                own = via == name or via.startswith(name + ".")
                how = f"a run-time import of `{via}`" if own else f"`{via}`"
                lines.append(f"| {name} | yes | {c:.2f} | {how} | {at_start} |")
            else:
                lines.append(f"| {name} | no | | | {'yes' if name in start else 'no'} |")
    elif imports.get("error"):
        lines += ["", f"`-X importtime` search failed: {imports['error']}"]
    targets = []
    limit = TARGET_RATIO.get(task)
    if limit is not None and ratio is not None:
        targets.append(
            f"- {task}: whole-process wall {ratio:.2f}x P2's (limit {limit}x): "
            f"**{'met' if ratio <= limit else 'not met'}**"
        )
    limit = OUTSIDE_FIT_TARGET.get(task)
    if limit is not None and tl:
        shares = [s for t in tl for s in t["outside_shares"]]
        over = sum(s > limit for s in shares)
        prof = ""
        if profiled and "trials_s" in profiled:
            outside = profiled["trials_s"] - profiled["fit_s"]
            prof = (
                f"; under the profiler {_pct(outside, profiled['trials_s'])} of the trials' "
                "time is outside the training itself"
            )
        targets.append(
            f"- {task}: time outside fine_tune <= {100 * limit:.0f}% of each trial's wall: "
            f"{over} of {len(shares)} trials above it (median {_pct(_med(shares), 1)}){prof}: "
            f"**{'met' if shares and over == 0 else 'not met'}**"
        )
    return lines, targets


def _pct_value(value: float | None) -> float | None:
    return None if value is None else 100 * value


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def import_lines(rows: list[tuple[str, float]], startup: list[tuple[int, float, str]]) -> list[str]:
    top = [e for e in packages(startup) if e[2] != "autotune"][:TOP_IMPORTS]
    lines = [
        "",
        f"**Process start and imports** (fresh interpreters, medians of {IMPORT_REPEATS}, "
        "in-process timer unless said):",
        "",
        "| what | s |",
        "| --- | ---: |",
    ]
    lines += [f"| {k} | {v:.2f} |" for k, v in rows]
    lines += [
        "",
        "`python -X importtime -c 'import autotune.cli'`: the packages it imports, slowest first "
        "(s, cumulative with what each imports first, under importtime): "
        + ", ".join(f"`{n}` {c:.2f}" for _, c, n in top)
        + ".",
    ]
    return lines


# --- The driver ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=peers.TASKS, default=["tabular", "demo"])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, help="keep tasks, logs, studies and profiles here")
    parser.add_argument("--write", type=Path, help="append the result to this Markdown file")
    # Internal: the profiled search's own process.
    parser.add_argument("--profile-worker", action="store_true", help=argparse.SUPPRESS)
    for name in ("--task-file", "--out", "--stats", "--result"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.profile_worker:
        return profile_worker(args)

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--", "autotune").splitlines()
    command = shlex.join(["python", "bench/throughput.py", *sys.argv[1:]])
    work = args.workdir or Path(tempfile.mkdtemp(prefix="autotune-throughput-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    _say(f"at {commit[:7]}{' (autotune/ has uncommitted changes)' if dirty else ''}; work {work}")
    specs = peers.build_tasks(args.tasks, work)  # untimed; the demo is cached here

    _say("import timings...")
    import_rows = import_times()
    startup = startup_importtime()

    runs: dict[str, list[dict[str, Any]]] = {t: [] for t in args.tasks}
    for task in args.tasks:
        for i in range(args.repeats):  # interleaved: machine noise hits both alike
            for method in ("autotune", "p2"):
                record = {**run_method(method, task, specs[task], args, work), "repeat": i}
                runs[task].append(record)
                _say(f"{task} repeat {i + 1} {method}: rc {record.get('rc')}, "
                    f"wall {record.get('wall_s', 0):.1f}s")  # fmt: skip
    profiles, imports = {}, {}
    for task in args.tasks:
        _say(f"{task}: profiled search...")
        profiles[task] = profile_search(task, specs[task], args, work)
        _say(f"{task}: -X importtime search...")
        imports[task] = search_importtime(task, specs[task], work)
        imports[task]["startup"] = heavy_imports(startup)
    at_end = git("rev-parse", "HEAD")

    lines = [
        f"### Trials per hour: where a search's wall goes, against P2 "
        f"({time.strftime('%Y-%m-%d')})",
        "",
        f"Command: `{command}`  ",
        f"At commit `{commit[:7]}`"
        + (f" with uncommitted changes in {len(dirty)} file(s) under autotune/ (other sessions' "
           "work in progress)" if dirty else "")
        + (f"; HEAD moved to `{at_end[:7]}` during the run" if at_end != commit else "")
        + ".  ",
        f"Machine: {peers.machine()}. **Timed on a shared machine** (2 cores, other sessions' "
        "work running beside it): absolute seconds are noisy; the interleaved ratios are the "
        f"numbers to read. Seed {SEED} in every repeat (one thread: the same work each time), "
        f"{args.trials} trials, {args.repeats} interleaved repeats; whole run "
        f"{(time.perf_counter() - started) / 60:.1f} min.",
    ]  # fmt: skip
    lines += import_lines(import_rows, startup)
    targets: list[str] = []
    for task in args.tasks:
        task_md, task_targets = task_lines(task, runs[task], profiles[task], imports[task], args)
        lines += task_md
        targets += task_targets
    lines += ["", "Targets from the issue (reported, never tuned toward):", "", *targets]
    from _shared import emit  # it imports autotune's internals: only here, never in workers

    emit(lines, args.write)
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()

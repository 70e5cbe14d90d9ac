"""The leaderboard: trial rows from a study, rendered by rich (live or final) or as a DataFrame."""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import optuna
from rich.console import Console, ConsoleOptions, RenderResult
from rich.jupyter import JupyterMixin
from rich.table import Table
from rich.text import Text

from autotune.config import METRICS
from autotune.results.cells import (
    Column,
    count,
    duration,
    fit_table,
    fmt,
    format_params,
    gain,
    latency,
    share,
)
from autotune.results.rows import COUNTS, ROW_STATES, TrialRow, row_of, with_export_latency
from autotune.results.study_data import pareto_setting, size_front
from autotune.search.display import output_console
from autotune.search.record import TrialRecord
from autotune.search.selection import BEST_EXPORT, exported_trial
from autotune.search.study import LIMITS
from autotune.search.trials import retried

if TYPE_CHECKING:
    import pandas as pd


COLUMNS: tuple[Column[Leaderboard, TrialRow], ...] = (
    # Adding a column is one entry: its header, its priority and how a row reads in it.
    Column("#", 0, lambda b, r: str(b.rank(r))),
    Column("trial", 1, lambda b, r: str(r.number)),
    Column("state", 2, lambda b, r: _state(r, b.pareto is not None), "left"),
    Column("{metric}", 3, lambda b, r: fmt(r.value)),
    Column("gain", 4, lambda b, r: "" if r.state == "BASELINE" else gain(r.gain)),
    Column("fixed/broken", 7, lambda b, r: "" if r.flips is None else "/".join(map(str, r.flips))),
    Column("size", 5, lambda b, r: b._relative(r, "total")),
    Column("MACs", 8, lambda b, r: b._relative(r, "macs")),
    Column("latency", 9, lambda b, r: _latency(r) if b.timed else ""),
    Column("trained", 10, lambda b, r: "" if r.total is None else count(r.trainable or 0)),
    Column("epochs", 11, lambda b, r: "" if r.epochs is None else str(r.epochs)),
    Column("time", 12, lambda b, r: "" if r.seconds is None else duration(r.seconds)),
    Column("parameters{reference}", 6, lambda b, r: _differing(b, r), "left", 20),
)

LEGEND = {
    "size": "parameters, share of the source's",
    "exp": "exported to best/",
    "ok": "trained",
    "src": "the source model",
    "over": "over budget",
    "*": "Pareto front",
    "slims N": "a copy of trial N's trained model, slimmed",
    "prune": "share of channels removed",
}


def _state(row: TrialRow, marked: bool = False) -> str:
    """The short word for ``row``'s state; with ``marked`` (a --pareto study, whose title says
    so), a ``*`` on the front."""
    short = "src" if row.state == "BASELINE" else ("ok" if row.feasible else "over")
    short = "exp" if row.exported else short
    return short + ("*" if marked and row.front else "")


def _latency(row: TrialRow) -> str:
    source = row.state == "BASELINE"
    return latency(row.latency_ratio, row.latency_ratio_spread, row.latency_ms, source)


def _differing(board: Leaderboard, row: TrialRow) -> str:
    """The parameters of ``row`` that differ from the reference trial's (all, for it)."""
    ref = board.reference
    params = row.params
    if ref is not None and row is not ref:
        params = {k: v for k, v in row.params.items() if ref.params.get(k, object()) != v}
    text = format_params(params) if params or ref in (None, row) else "="
    return (f"slims {row.parent}: " if row.parent is not None else "") + text


@dataclass(repr=False)
class Leaderboard(JupyterMixin):
    """Every trial of a study, best first; renders as a rich table plus a progress line.

    In a notebook it renders as that table in the cell's output (rich's Jupyter support); in a
    script, ``print`` shows it as plain text (``__str__``).
    """

    rows: list[TrialRow]
    metric: str
    direction: str
    """``maximize`` or ``minimize``."""
    started: float | None = None
    """``time.time()`` when this search started: shown as elapsed time while live."""
    planned: int | None = None
    """Trials planned (baseline excluded)."""
    top: int = 10
    pareto: str | None = None
    """The size objective of a Pareto study (``params`` or ``macs``)."""

    @classmethod
    def from_study(cls, study: optuna.Study, metric: str, **kwargs: Any) -> Leaderboard:
        direction = METRICS[metric]
        trials = study.get_trials(deepcopy=False)
        base = next((t for t in trials if TrialRecord.from_trial(t).baseline), None)
        baseline = base.values[0] if base is not None and base.values else None
        # The front the report draws: a --pareto study's own, else accuracy against size.
        front = frozenset(p[2] for p in size_front(study))
        if len(study.directions) > 1:
            kwargs.setdefault("pareto", pareto_setting(study))
        limits, exported = study.user_attrs.get(LIMITS), exported_trial(study)
        again = frozenset(retried(trials))
        rows = [row_of(t, baseline, metric, front, limits, exported, again) for t in trials]
        measured = study.user_attrs.get(BEST_EXPORT, {}).get("latency_ms")
        rows = [with_export_latency(r, measured) if r.exported else r for r in rows]
        return cls(rows, metric, direction, **kwargs)

    @property
    def baseline(self) -> TrialRow | None:
        return next((r for r in self.rows if r.state == "BASELINE"), None)

    def ranked(self) -> list[TrialRow]:
        """Completed trials (and the baseline), best first; those over budget after the rest."""
        done = [r for r in self.rows if r.state in ("COMPLETE", "BASELINE") and r.value is not None]
        # As the search ranks them (``search.study.rank_key``): equal metrics by the other score.
        return sorted(done, key=lambda r: (not r.feasible, *(-x for x in r.score or ()), r.number))

    def counts(self) -> dict[str, int]:
        states = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", *ROW_STATES)
        return {state: sum(r.state == state for r in self.rows) for state in states}

    def finished(self) -> int:
        """Trials that ran to an end and count toward ``--trials``: complete, pruned or failed
        (not the baseline, nor those run again or not run: ``TrialRow.state``)."""
        c = self.counts()
        return c["COMPLETE"] + c["PRUNED"] + c["FAIL"]

    def progress_line(self) -> str:
        c = self.counts()
        finished = self.finished()
        done = f"{finished} done"
        if self.planned is not None and finished <= self.planned:
            done = f"{finished}/{self.planned} done"
        elif self.planned is not None:  # a continued study holds more than this command asks
            done += f" ({self.planned} asked)"
        untrained = sum(r.untrained for r in self.rows)
        line = f"trials {done}: {c['COMPLETE']} complete, {c['PRUNED'] - untrained} stopped early, "
        if untrained:  # pruned by Optuna's count, yet never trained: not "stopped early"
            line += f"{untrained} not trained, "
        line += f"{c['FAIL']} failed, {c['RUNNING']} running"
        if c["INTERRUPTED"]:  # not counted toward --trials: each is run again
            line += f", {c['INTERRUPTED']} interrupted and run again"
        if c["ORPHANED"]:  # running no more: the next run fails it (``search.trials``)
            line += f", {c['ORPHANED']} whose worker died"
        if c["RETRIED"]:  # failed, not counted: its retry counts in its place
            line += f", {c['RETRIED']} retried after its worker died"
        if c["SURPLUS"]:  # two workers took the study's last trial at once: one stopped
            line += f", {c['SURPLUS']} not run (two workers took the same one)"
        if self.started is not None:
            line += f" | elapsed {duration(time.time() - self.started)}"
        best = self.best()
        if best is not None:
            line += f" | best {self.metric} {fmt(best.value)} (trial {best.number})"
        return line

    def best(self) -> TrialRow | None:
        """The best trained trial within the budgets."""
        return next((r for r in self.ranked() if r.feasible and r.state != "BASELINE"), None)

    def shown(self) -> list[TrialRow]:
        """The rows of the table: the ``top`` ranked, the exported trial and the baseline."""
        shown = self.ranked()[: self.top]
        exported = next((r for r in self.rows if r.exported), None)
        for row in (exported, self.baseline):
            if row is not None and row not in shown:
                shown.append(row)
        return shown

    def rank(self, row: TrialRow) -> int:
        return self._ranks[row.number]

    @cached_property
    def _ranks(self) -> dict[int, int]:
        return {r.number: i + 1 for i, r in enumerate(self.ranked())}

    @cached_property
    def timed(self) -> bool:
        """Whether any trial was timed (a latency budget or front): else no latency column,
        where the source's own timing would stand alone."""
        return any(r.latency_ratio is not None for r in self.rows if r.state != "BASELINE")

    @cached_property
    def reference(self) -> TrialRow | None:
        """The first trained trial: the others' parameters are shown where they differ from it."""
        return min(
            (r for r in self.rows if r.state == "COMPLETE" and r.params),
            key=lambda r: r.number,
            default=None,
        )

    def table(self, width: int = 160) -> Table:
        """The leaderboard in ``width`` cells: the less important columns are left out rather
        than any number cut, and the parameters take one line per trial from 120 cells on."""
        title = f"autotune leaderboard: validation {self.metric}"
        if self.pareto:
            title += f" vs {self.pareto} (Pareto front marked *)"
        shown = self.shown()
        styles = [self._style(r) for r in shown]
        ref = "" if self.reference is None else f" vs trial {self.reference.number}"
        fields = {"metric": self.metric, "reference": ref}
        table = Table(title=title, title_justify="left")
        return fit_table(table, COLUMNS, self, shown, styles, fields, width)

    def _style(self, row: TrialRow) -> str:
        """The source dimmed, trials over budget red, the exported one bold green, the top one
        bold."""
        if row.state == "BASELINE":
            return "dim"
        if not row.feasible:
            return "red"
        if row.exported:
            return "bold green"
        return "bold" if self.rank(row) == 1 else ""

    def legend(self) -> Text:
        """What the short words mean (those in the table), and where the rest of the trials are."""
        shown = self.shown()
        used = {"size", *(_state(r) for r in shown)}
        if self.pareto and any(r.front for r in shown):
            used.add("*")
        if any(r.parent is not None for r in shown):
            used.add("slims N")
        if any("prune" in r.params for r in shown):
            used.add("prune")
        parts = [f"{short}: {meaning}" for short, meaning in LEGEND.items() if short in used]
        ranked = len(self.ranked())
        if ranked > self.top:
            parts.append(f"top {self.top} of {ranked}: --top N for more, all in leaderboard.csv")
        return Text(" · ".join(parts), style="dim")

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.table(options.max_width)
        yield self.legend()
        yield Text(self.progress_line())

    def __str__(self) -> str:
        """The table, legend and progress line that ``autotune show`` prints, as plain text:
        ``print(result.leaderboard)`` in a script shows the table, not every row's fields."""
        shown = output_console()  # the terminal's width; 160 columns in a log or a pipe
        text = io.StringIO()
        Console(file=text, width=shown.width, soft_wrap=shown.soft_wrap, color_system=None).print(
            self
        )
        return text.getvalue().rstrip("\n")  # print adds its own

    def __repr__(self) -> str:
        best = self.best()
        top = "none trained" if best is None else f"best trial {best.number}"
        return f"<Leaderboard: {len(self.rows)} trials, validation {self.metric}, {top}>"

    def plain_line(self, row: TrialRow) -> str:
        """One finished trial as a log line (CI logs, pipes)."""
        parts = [f"trial {row.number:>3} {row.state.lower():<8} {self.metric}={fmt(row.value)}"]
        if row.gain is not None:
            parts.append(f"gain={gain(row.gain)}")
        if row.total is not None:
            parts.append(f"params={self._relative(row, 'total', '{}({})')}")
        if row.latency_ratio is not None:
            parts.append(f"latency={row.latency_ratio:.2f}x±{row.latency_ratio_spread or 0:.2f}")
        if row.epochs is not None:
            parts.append(f"epochs={row.epochs}")
        if row.seconds is not None:
            parts.append(f"time={duration(row.seconds)}")
        if row.parent is not None:
            parts.append(f"slims={row.parent}")
        if row.params:
            parts.append(format_params(row.params))
        if row.note:
            parts.append(f"({row.note})")
        return " ".join(parts)

    def _relative(self, row: TrialRow, what: str, template: str = "{} {}") -> str:
        """A count with its share of the source model's (the baseline's)."""
        base = self.baseline
        original = getattr(base, what) if base is not None else None
        return share(getattr(row, what), original, template)

    def records(self) -> list[dict[str, Any]]:
        """All trials, ranked ones first, one dict each: the rows of ``leaderboard.csv``."""
        ranked = self.ranked()
        rest = [r for r in self.rows if r not in ranked]
        return [
            {"rank": i + 1 if i < len(ranked) else None, **row.as_dict()}
            for i, row in enumerate(ranked + rest)
        ]

    def to_csv(self) -> str:
        """``records`` as CSV: a column for every key any row has, empty where it has none."""
        records = self.records()
        out = io.StringIO()
        columns = list(dict.fromkeys(k for r in records for k in r))
        writer = csv.DictWriter(out, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        return out.getvalue()

    def to_frame(self) -> pd.DataFrame:
        """All trials, ranked ones first, as a pandas DataFrame; whole numbers (``rank``,
        ``epochs``, ``parent``, an integer parameter) in nullable integer columns."""
        import pandas as pd

        records = self.records()
        frame = pd.DataFrame.from_records(records)
        # Some rows have none (a trial not ranked, not staged, not trained): nullable, else
        # pandas makes the column floats (1.0, 2.0, NaN).
        for column in frame.columns:
            given = [r[column] for r in records if r.get(column) is not None]
            ints = all(isinstance(v, int) and not isinstance(v, bool) for v in given)
            if column in ("rank", *COUNTS) or (given and ints):
                frame[column] = frame[column].astype("Int64")
        return frame

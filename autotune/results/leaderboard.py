"""The leaderboard: trial rows from a study, rendered by rich (live or final) or as a DataFrame."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial
from rich.console import Console, ConsoleOptions, RenderResult
from rich.jupyter import JupyterMixin
from rich.table import Table
from rich.text import Text

from autotune.config import METRICS, sign

if TYPE_CHECKING:
    import pandas as pd

KEY_PARAMS = (
    "prune",
    "drop_features",
    "importance",
    "lr",
    "optimizer",
    "batch_size",
    "unfreeze",
    "unfreeze_order",
    "loss",
    "dropout",
    "weight_decay",
)
_SHORT = {
    "batch_size": "bs",
    "weight_decay": "wd",
    "optimizer": "opt",
    "unfreeze_order": "order",
    "drop_features": "drop",
    "importance": "rank",
}


@dataclass(frozen=True)
class TrialRow:
    """One trial as the leaderboard shows it."""

    number: int
    state: str
    """COMPLETE, PRUNED, FAIL, RUNNING or BASELINE."""
    value: float | None
    """The validation metric (the best epoch's; the last reported one for a pruned trial)."""
    gain: float | None
    """``value`` minus the baseline's, signed so that positive is better."""
    trainable: int | None
    total: int | None
    epochs: int | None
    seconds: float | None
    params: dict[str, Any]
    note: str = ""
    """Why it failed or stopped early."""
    macs: int | None = None
    """Multiply-accumulates per sample of the trial's model."""
    latency_ms: float | None = None
    """Measured forward time of a 32-sample batch."""
    feasible: bool = True
    """Within the search's budgets (``--max-params``, ``--max-macs``)."""
    front: bool = False
    """On the Pareto front (``--pareto`` studies)."""
    stage: int | None = None
    """1: tuning the full model, 2: slimming ``parent`` (staged searches); 0 unstaged."""
    parent: int | None = None
    """The stage-1 trial a stage-2 trial slimmed."""
    flips: tuple[int, int] | None = None
    """(fixed, broken): validation errors of the source model this one fixed, and samples the
    source got right that this one gets wrong (negative flips)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "trial": self.number,
            "state": self.state,
            "value": self.value,
            "gain": self.gain,
            "trainable_params": self.trainable,
            "total_params": self.total,
            "macs": self.macs,
            "latency_ms": self.latency_ms,
            "feasible": self.feasible,
            "pareto_front": self.front,
            "stage": self.stage,
            "parent": self.parent,
            "fixed": None if self.flips is None else self.flips[0],
            "broken": None if self.flips is None else self.flips[1],
            "epochs": self.epochs,
            "seconds": self.seconds,
            **{f"param_{k}": v for k, v in self.params.items()},
            "note": self.note,
        }


def row_of(
    trial: FrozenTrial, baseline: float | None, metric: str, front: frozenset[int] = frozenset()
) -> TrialRow:
    attrs = trial.user_attrs
    state = "BASELINE" if attrs.get("baseline") else trial.state.name
    # The metric is the first objective; a Pareto study's second is the model's size.
    value = trial.values[0] if trial.values else None
    if value is None and trial.intermediate_values:
        value = trial.intermediate_values[max(trial.intermediate_values)]
    gain = None if value is None or baseline is None else sign(metric) * (value - baseline)
    seconds = attrs.get("seconds")
    if seconds is None and trial.datetime_complete and trial.datetime_start:
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
    return TrialRow(
        number=trial.number,
        state=state,
        value=value,
        gain=gain,
        trainable=attrs.get("trainable_params"),
        total=attrs.get("total_params"),
        epochs=attrs.get("epochs", len(trial.intermediate_values) or None),
        seconds=seconds,
        params=dict(trial.params),
        note=attrs.get("fail_reason") or attrs.get("stop_reason", ""),
        macs=attrs.get("macs"),
        latency_ms=attrs.get("latency_ms"),
        feasible=all(v <= 0 for v in trial.constraints.values()),
        front=trial.number in front,
        stage=attrs.get("stage"),
        parent=attrs.get("parent"),
        flips=(attrs["fixed"], attrs["broken"]) if "broken" in attrs else None,
    )


@dataclass
class Leaderboard(JupyterMixin):
    """Every trial of a study, best first; renders as a rich table plus a progress line.

    In a notebook it renders as that table in the cell's output (rich's Jupyter support).
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
    running: dict[int, str] = field(default_factory=dict)
    """Trial number -> what it is doing now (live mode)."""
    pareto: str | None = None
    """The size objective of a Pareto study (``params`` or ``macs``)."""

    @classmethod
    def from_study(cls, study: optuna.Study, metric: str, **kwargs: Any) -> Leaderboard:
        direction = METRICS[metric]
        trials = study.get_trials(deepcopy=False)
        base = next((t for t in trials if t.user_attrs.get("baseline")), None)
        baseline = base.values[0] if base is not None and base.values else None
        front: frozenset[int] = frozenset()
        if len(study.directions) > 1:
            front = frozenset(t.number for t in study.best_trials)
            kwargs.setdefault(
                "pareto", study.user_attrs.get("autotune", {}).get("settings", {}).get("pareto")
            )
        rows = [row_of(t, baseline, metric, front) for t in trials]
        return cls(rows, metric, direction, **kwargs)

    @property
    def baseline(self) -> TrialRow | None:
        return next((r for r in self.rows if r.state == "BASELINE"), None)

    def ranked(self) -> list[TrialRow]:
        """Completed trials (and the baseline), best first; those over budget after the rest."""
        done = [r for r in self.rows if r.state in ("COMPLETE", "BASELINE") and r.value is not None]
        s = sign(self.metric)
        return sorted(done, key=lambda r: (not r.feasible, -s * (r.value or 0.0), r.number))

    def counts(self) -> dict[str, int]:
        counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0, "RUNNING": 0}
        for r in self.rows:
            if r.state in counts:
                counts[r.state] += 1
        return counts

    def progress_line(self) -> str:
        c = self.counts()
        finished = c["COMPLETE"] + c["PRUNED"] + c["FAIL"]
        planned = f"/{self.planned}" if self.planned is not None else ""
        line = (
            f"trials {finished}{planned} done: {c['COMPLETE']} complete, {c['PRUNED']} pruned, "
            f"{c['FAIL']} failed, {c['RUNNING']} running"
        )
        if self.started is not None:
            line += f" | elapsed {_duration(time.time() - self.started)}"
        best = [r for r in self.ranked() if r.feasible][:1]
        if best and best[0].value is not None:
            line += f" | best {self.metric} {_fmt(best[0].value)} (trial {best[0].number})"
        return line

    def table(self) -> Table:
        title = f"autotune leaderboard: validation {self.metric}"
        if self.pareto:
            title += f" vs {self.pareto} (Pareto front marked *)"
        table = Table(title=title, title_justify="left")
        for name in (
            "#",
            "trial",
            "state",
            self.metric,
            "gain",
            "fixed/broken",
            "trained",
            "size",
            "MACs",
            "latency",
            "epochs",
            "time",
        ):
            table.add_column(name, justify="left" if name == "state" else "right", no_wrap=True)
        table.add_column("key parameters", overflow="fold", ratio=1, min_width=20)
        ranked = self.ranked()
        shown = ranked[: self.top]
        baseline = self.baseline
        if baseline is not None and baseline not in shown:
            shown.append(baseline)
        for row in shown:
            rank = ranked.index(row) + 1
            style = "dim" if row.state == "BASELINE" else ("bold green" if rank == 1 else "")
            if not row.feasible:
                style = "red"
            state = row.state.lower() + ("*" if row.front else "")
            table.add_row(
                str(rank),
                str(row.number),
                state if row.feasible else f"{state} (over budget)",
                _fmt(row.value),
                "" if row.state == "BASELINE" else _gain(row.gain),
                "" if row.flips is None else f"{row.flips[0]}/{row.flips[1]}",
                _params(row),
                self._relative(row, "total"),
                self._relative(row, "macs"),
                "" if row.latency_ms is None else f"{row.latency_ms:.1f}ms",
                "" if row.epochs is None else str(row.epochs),
                "" if row.seconds is None else _duration(row.seconds),
                (f"slims {row.parent}: " if row.parent is not None else "")
                + format_params(row.params),
                style=style,
            )
        return table

    def _relative(self, row: TrialRow, what: str) -> str:
        """A count with its share of the source model's (the baseline's)."""
        value = getattr(row, what)
        if value is None:
            return ""
        base = self.baseline
        original = getattr(base, what) if base is not None else None
        share = f" ({value / original:.0%})" if original else ""
        return f"{_count(value)}{share}"

    def plain_line(self, row: TrialRow) -> str:
        """One finished trial as a log line (CI logs, pipes)."""
        parts = [f"trial {row.number:>3} {row.state.lower():<8} {self.metric}={_fmt(row.value)}"]
        if row.gain is not None:
            parts.append(f"gain={_gain(row.gain)}")
        if row.total is not None:
            parts.append(f"params={self._relative(row, 'total').replace(' ', '')}")
        if row.epochs is not None:
            parts.append(f"epochs={row.epochs}")
        if row.seconds is not None:
            parts.append(f"time={_duration(row.seconds)}")
        if row.parent is not None:
            parts.append(f"slims={row.parent}")
        if row.params:
            parts.append(format_params(row.params))
        if row.note:
            parts.append(f"({row.note})")
        return " ".join(parts)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.table()
        for number, doing in sorted(self.running.items()):
            yield Text(f"trial {number}: {doing}", style="cyan")
        yield Text(self.progress_line())

    def to_frame(self) -> pd.DataFrame:
        """All trials, ranked ones first, as a pandas DataFrame."""
        import pandas as pd

        ranked = self.ranked()
        rest = [r for r in self.rows if r not in ranked]
        records = []
        for i, row in enumerate(ranked + rest):
            records.append({"rank": i + 1 if i < len(ranked) else None, **row.as_dict()})
        return pd.DataFrame.from_records(records)


def format_params(params: dict[str, Any]) -> str:
    shown = []
    for key in KEY_PARAMS:
        if key in params:
            shown.append(f"{_SHORT.get(key, key)}={_fmt(params[key])}")
    shown += [f"{k}={_fmt(v)}" for k, v in params.items() if k not in KEY_PARAMS]
    return " ".join(shown)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return (
            f"{value:.4g}"
            if abs(value) < 1e-2 or abs(value) >= 1e4
            else f"{value:.4f}".rstrip("0").rstrip(".")
        )
    return str(value)


def _gain(gain: float | None) -> str:
    return "" if gain is None else f"{gain:+.4f}"


def _params(row: TrialRow) -> str:
    """Parameters trained (the size column has the total)."""
    return "" if row.total is None else _count(row.trainable or 0)


def _count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else (f"{n / 1e3:.1f}k" if n >= 1e3 else str(n))


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"

"""The ``autotune`` command line: parses arguments and calls the library, nothing more."""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import shlex
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from autotune import config
from autotune.errors import AutotuneError, redacted
from autotune.interrupts import Terminated, exit_code, stop_on_termination
from autotune.search.display import output_console
from autotune.search.outage import Outage, outage

app = typer.Typer(
    help="Find how to fine-tune and slim a trained PyTorch model for the data you now care about.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},  # -h as most tools take it
)
console = output_console()  # as autotune.search's: in a log, whole lines and 160-column tables
errors = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])
BAD_INPUT = 2
"""Exit code of an expected mistake (bad input or settings), reported in one line."""
NO_RESULT = 3
"""Exit code of a search that ran but completed no trial (the baseline aside), exported
nothing, or stopped on failures in a row: its leaderboard and report say why."""
OUTAGE = 4
"""Exit code of a full disk or a lost storage (``search.outage``), reported in one line: the
finished trials are kept, and the same command goes on from them."""


def flag(*names: str, **kwargs: Any) -> Any:
    """``typer.Option`` for an on/off switch: typer's help would show it as ``<bool>``, as if it
    took a value (``--verbose true`` is then refused as an extra argument)."""
    return typer.Option(*names, metavar="", **kwargs)


def _print_version(value: bool) -> None:
    if not value:
        return
    # The package's version is this constant too (pyproject's dynamic version): one source.
    console.print(f"autotune {config.VERSION}", highlight=False)
    raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        flag(
            "--version",
            callback=_print_version,
            is_eager=True,  # answered before a command is looked for, as --help is
            help="Print autotune's version and exit.",
        ),
    ] = False,
) -> None:
    """Options of ``autotune`` itself, before any command (``--version``); the --help text is
    ``Typer(help=...)``'s."""


def friendly(command: F) -> F:
    """Expected mistakes end with one clear line and exit code 2, not a traceback; a full disk
    or a lost storage with one line and exit code 4."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with _outages_told_once():
                return command(*args, **kwargs)
        except AutotuneError as e:
            code, message = (OUTAGE if isinstance(e, Outage) else BAD_INPUT), str(e)
        except Exception as e:
            lost = outage(e)
            if lost is None:
                raise
            code, message = OUTAGE, str(lost)
        # Escaped: a message may hold brackets (pip install 'autotune[onnx]') that are not markup.
        text = escape(redacted(message))
        errors.print(f"[red]error:[/red] {text}", highlight=False, soft_wrap=True)
        raise typer.Exit(code)

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def _outages_told_once() -> Iterator[None]:
    """Keep a lost storage to the one line ``friendly`` prints: without this, Optuna's
    heartbeat thread and SQLAlchemy's connection pool each print their own traceback of it."""
    before = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is None or outage(args.exc_value) is None:
            before(args)

    quiet = logging.NullHandler()
    pool = logging.getLogger("sqlalchemy")
    threading.excepthook = hook
    pool.addHandler(quiet)
    try:
        yield
    finally:
        threading.excepthook = before
        pool.removeHandler(quiet)


Model = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Model file (TorchScript, .pt2, state_dict, pickled module) or 'demo'.",
        rich_help_panel="Model and data",
    ),
]
Data = Annotated[
    str | None,
    typer.Option(
        "--data",
        "-d",
        help="Tensors file (.pt/.npz), CSV, image folder, sklearn:NAME or demo.",
        rich_help_panel="Model and data",
    ),
]
Arch = Annotated[
    str | None,
    typer.Option(
        help="Architecture of a state_dict: torchvision:NAME or package.module:ClassName.",
        rich_help_panel="Model and data",
    ),
]
NumClasses = Annotated[
    int | None, typer.Option(help="num_classes passed to --arch.", rich_help_panel="Model and data")
]
Trust = Annotated[
    bool,
    flag(
        "--trust-model",
        help="Allow loading a pickled module, or a .pt2 that unpickles: runs code from the file.",
        rich_help_panel="Model and data",
    ),
]
Code = Annotated[
    Path | None,
    typer.Option(
        help="Python file defining the model's classes.", rich_help_panel="Model and data"
    ),
]
Target = Annotated[
    str | None,
    typer.Option(
        help="Label column of a CSV file (default: target, else label).",
        rich_help_panel="Model and data",
    ),
]
ValFraction = Annotated[
    float,
    typer.Option(
        help="Share of training data held out for validation when the data has no validation "
        "split.",
        rich_help_panel="Model and data",
    ),
]
ImageSize = Annotated[
    int | None,
    typer.Option(
        help="Images of a folder: shorter side resized to this, then the centre square cropped.",
        rich_help_panel="Model and data",
    ),
]
Normalize = Annotated[
    str | None,
    typer.Option(
        help="Image folder normalisation: imagenet, none or MEAN,STD (default: what the model "
        "says, else none).",
        rich_help_panel="Model and data",
    ),
]
LoaderWorkers = Annotated[
    int | None,
    typer.Option(
        help="DataLoader worker processes for data too large to hold (default: up to 4, one "
        "core left to training).",
        rich_help_panel="Model and data",
    ),
]
ExportPreprocessing = Annotated[
    bool,
    flag(
        "--export-preprocessing",
        help="Put the input normalisation inside model.pt2 (and model.onnx): they then take "
        "images in [0, 1].",
        rich_help_panel="Model and data",
    ),
]
ExportFormats = Annotated[
    list[str] | None,
    typer.Option(
        "--export",
        metavar="FORMAT",
        help="Also write the model in this format: onnx (model.onnx with a dynamic batch size, "
        "checked with onnxruntime; needs autotune's onnx extra).",
        rich_help_panel="Output",
    ),
]
Space = Annotated[
    str,
    typer.Option(
        help="Search space: auto (vision for conv nets, tabular for feature vectors), a shipped "
        "name (default: fine-tuning only, vision, tabular) or a YAML path.",
        rich_help_panel="Search",
    ),
]
Trials = Annotated[
    int,
    typer.Option(
        help="Trials in the study, the baseline not counted; a re-run runs only the missing ones.",
        rich_help_panel="Search",
    ),
]
Epochs = Annotated[
    int | None,
    typer.Option(help="Max epochs per trial (default: from the space).", rich_help_panel="Search"),
]
Patience = Annotated[
    int | None,
    typer.Option(
        help="Epochs without improvement before a trial stops (default: from the space).",
        rich_help_panel="Search",
    ),
]
Metric = Annotated[
    config.Metric,
    typer.Option(
        help="Validation metric: accuracy (maximised) or loss (minimised).",
        rich_help_panel="Search",
    ),
]
Seed = Annotated[
    int, typer.Option(help="Seed of the sampler and of every trial.", rich_help_panel="Search")
]
Pruner = Annotated[config.Pruner, typer.Option(help="Trial pruner.", rich_help_panel="Search")]
Device = Annotated[
    str,
    typer.Option(help="auto (CUDA when available), cpu, cuda, cuda:N.", rich_help_panel="Hardware"),
]
Threads = Annotated[
    int,
    typer.Option(
        help="torch threads on CPU; one is fastest for small models on few cores.",
        rich_help_panel="Hardware",
    ),
]
Out = Annotated[
    Path | None,
    typer.Option(help="Output folder (default: runs/<study name>).", rich_help_panel="Output"),
]
Storage = Annotated[
    str | None,
    typer.Option(
        help="Optuna storage: sqlite:///f.db, postgresql://..., or a journal file path "
        "(default: the journal file OUT/study.journal).",
        rich_help_panel="Workers",
    ),
]
StudyName = Annotated[
    str | None,
    typer.Option(help="Study name (default: the model file's stem).", rich_help_panel="Workers"),
]
DEFAULT_OUT = Path("runs/demo")
"""The folder ``show``, ``export``, ``report`` and ``dashboard`` read when given none: the
demo's."""
OUT_HELP = f"Output folder of a search (default: {DEFAULT_OUT})."
# None when the user gave no folder: ``_search_out`` then says so rather than name runs/demo as
# if they had typed it.
SearchOut = Annotated[Path | None, typer.Argument(help=OUT_HELP, show_default=False)]
Verbose = Annotated[
    bool, flag("--verbose", help="Keep Optuna's own log lines.", rich_help_panel="Output")
]
MaxParams = Annotated[
    str | None,
    typer.Option(
        help="Parameter budget: a fraction of the source model (0.5, 50%) or a count (1.5M).",
        rich_help_panel="Budgets",
    ),
]
MaxMacs = Annotated[
    str | None,
    typer.Option(
        help="Multiply-accumulates per sample budget, like --max-params.", rich_help_panel="Budgets"
    ),
]
MaxFlips = Annotated[
    str | None,
    typer.Option(
        help="Negative-flip budget: validation samples the source got right that a model may get "
        "wrong, as a rate (0.01, 1%) or a count (5). Trials over it are never exported.",
        rich_help_panel="Budgets",
    ),
]
MaxLatency = Annotated[
    str | None,
    typer.Option(
        help="Latency budget: a ratio of the source model's (0.5x), timed alternately with it, "
        "or milliseconds per batch (5ms). Trials over it are never exported; without it or "
        "--pareto latency, trials are not timed.",
        rich_help_panel="Budgets",
    ),
]
LatencyBatch = Annotated[
    int,
    typer.Option(
        help="Samples in the batch latency is timed on (on the search's device).",
        rich_help_panel="Budgets",
    ),
]
Pareto = Annotated[
    config.ParetoAxis | None,
    typer.Option(
        help="Find the Pareto front of the metric vs model size (params, macs), negative flips, "
        "or latency (a ratio of the source's).",
        rich_help_panel="Budgets",
    ),
]


@app.command()
@friendly
def search(
    model: Model,
    data: Data = None,
    arch: Arch = None,
    num_classes: NumClasses = None,
    trust_model: Trust = False,
    code: Code = None,
    target: Target = None,
    val_fraction: ValFraction = 0.2,
    image_size: ImageSize = None,
    normalize: Normalize = None,
    loader_workers: LoaderWorkers = None,
    export_preprocessing: ExportPreprocessing = False,
    export_formats: ExportFormats = None,
    space: Space = "auto",
    trials: Trials = 20,
    epochs: Epochs = None,
    patience: Patience = None,
    metric: Metric = "accuracy",
    seed: Seed = 0,
    pruner: Pruner = "median",
    device: Device = "auto",
    threads: Threads = 1,
    out: Out = None,
    storage: Storage = None,
    study_name: StudyName = None,
    verbose: Verbose = False,
    max_params: MaxParams = None,
    max_macs: MaxMacs = None,
    max_flips: MaxFlips = None,
    max_latency: MaxLatency = None,
    latency_batch: LatencyBatch = 32,
    pareto: Pareto = None,
    refit: Annotated[
        bool,
        flag(
            "--refit",
            help="Export the chosen configuration trained again on training + validation data "
            "for its best epoch count (its validation score is then not held out).",
            rich_help_panel="Output",
        ),
    ] = False,
    select: Annotated[
        config.SelectRule,
        typer.Option(
            help="Without a size or latency budget, export the smallest model whose validation "
            "accuracy is within one standard error of the best (simplest, default: a small "
            "validation split cannot tell them apart), or the best on validation (top).",
            rich_help_panel="Output",
        ),
    ] = "simplest",
    finalists: Annotated[
        int,
        typer.Option(
            help="Train the top N trials (and the standard recipe) again with 2 fresh seeds and "
            "export the best on the mean validation score; 0 (default): --select decides.",
            rich_help_panel="Output",
        ),
    ] = 0,
    timeout: Annotated[
        float | None,
        typer.Option(
            help="Start no new trial after this many seconds; finished ones are kept. A "
            "staged search starts slimming at half of it, if half the trials are not done.",
            rich_help_panel="Search",
        ),
    ] = None,
    checkpoint_every: Annotated[
        float | None,
        typer.Option(
            help="Save a trial's training state every this many minutes (in-trial checkpoints), "
            "so that a trial stopped by a signal (SLURM, Kubernetes, a spot machine) continues "
            "where it stopped in the next run instead of from epoch 0. Off by default.",
            rich_help_panel="Search",
        ),
    ] = None,
    checkpoint_store: Annotated[
        Path | None,
        typer.Option(
            help="A folder every machine of the search mounts (NFS, Lustre, a mounted bucket): "
            "in-trial checkpoints are copied there, so that a trial stopped on one machine "
            "continues from its checkpoint in a run on any other.",
            rich_help_panel="Workers",
        ),
    ] = None,
    amp: Annotated[
        config.AmpMode,
        typer.Option(
            help="Mixed precision: auto is bf16/fp16 on CUDA, off on the CPU.",
            rich_help_panel="Hardware",
        ),
    ] = "auto",
    channels_last: Annotated[
        config.Switch,
        typer.Option(
            help="Conv nets in channels-last memory format: auto is on with CUDA.",
            rich_help_panel="Hardware",
        ),
    ] = "auto",
    workers: Annotated[
        int,
        typer.Option(
            help="Processes running trials on this machine, sharing the study and --threads; "
            "the first exports.",
            rich_help_panel="Workers",
        ),
    ] = 1,
    devices: Annotated[
        str | None,
        typer.Option(
            help="One worker per CUDA device listed, e.g. 0,1 (overrides --device).",
            rich_help_panel="Workers",
        ),
    ] = None,
    allow_changes: Annotated[
        bool,
        flag(
            "--allow-changes",
            help="Continue a study made with other settings (epochs, seed, budgets...); the new "
            "ones then apply to its old trials too.",
            rich_help_panel="Search",
        ),
    ] = False,
) -> None:
    """Search how to fine-tune and slim MODEL on DATA; export the best model and its config."""
    from autotune.api import search as run_search

    stop_on_termination()  # a scheduler's SIGTERM writes the results as a Ctrl-C does

    model_spec, data_spec = _specs(
        model, data, arch, num_classes, trust_model, code, target, val_fraction, image_size,
        normalize, loader_workers,
    )  # fmt: skip
    command = redacted(shlex.join(["autotune", *sys.argv[1:]]))
    try:
        result = run_search(
            model_spec,
            data_spec,
            space=space,
            trials=trials,
            out=out,
            console=console,
            command=command,
            max_epochs=epochs,
            patience=patience,
            metric=metric,
            seed=seed,
            pruner=pruner,
            device=device,
            threads=threads,
            storage=storage,
            study_name=study_name,
            verbose=verbose,
            max_params=max_params,
            max_macs=max_macs,
            max_flips=max_flips,
            max_latency=max_latency,
            latency_batch=latency_batch,
            pareto=pareto,
            refit=refit,
            select=select,
            finalists=finalists,
            timeout=timeout,
            checkpoint_every=checkpoint_every,
            checkpoint_store=checkpoint_store,
            export_preprocessing=export_preprocessing,
            export=tuple(export_formats or ()),
            amp=amp,
            channels_last=channels_last,
            workers=workers,
            devices=devices,
            allow_changes=allow_changes,
        )
    except KeyboardInterrupt as stop:
        what = f"stopped by {stop.args[0]}" if isinstance(stop, Terminated) else "interrupted"
        errors.print(
            f"{what}: finished trials are stored, and the leaderboard, best model and report "
            "written from them; run the same command to continue",
            soft_wrap=True,  # whole in a log, as friendly's error line: stderr wraps at 80
        )
        raise typer.Exit(exit_code(stop)) from None
    _summary(result)
    # A machine that does not export (machine 0 does) succeeded when its trials did.
    if result.search.stopped or (result.best is None and result.search.exports):
        raise typer.Exit(NO_RESULT)


@app.command()
@friendly
def demo(
    trials: Trials = 20,
    epochs: Epochs = None,
    out: Out = None,
    seed: Seed = 0,
    device: Device = "auto",
) -> None:
    """Run the built-in demo: tune and slim a digits CNN for rotated, blurred digits."""
    search(
        model="demo",
        data="demo",
        space="vision",
        trials=trials,
        epochs=epochs,
        out=out,
        seed=seed,
        device=device,
    )


@app.command()
@friendly
def analyze(
    model: Model,
    data: Data = None,
    arch: Arch = None,
    num_classes: NumClasses = None,
    trust_model: Trust = False,
    code: Code = None,
    target: Target = None,
    val_fraction: ValFraction = 0.2,
    image_size: ImageSize = None,
    normalize: Normalize = None,
    method: Annotated[config.Method, typer.Option(help="Importance method.")] = "shap",
    samples: Annotated[int, typer.Option(help="Validation samples explained.")] = 128,
    background: Annotated[
        int, typer.Option(help="Random unit coalitions shap integrates from.")
    ] = 32,
    nsamples: Annotated[
        int, typer.Option(help="Expected-gradient samples per explained sample.")
    ] = 16,
    explainer: Annotated[
        config.Explainer,
        typer.Option(help="shap's engine: expected gradients, or DeepLIFT (deep)."),
    ] = "gradient",
    seed: Seed = 0,
    threads: Threads = 1,
    out: Annotated[
        Path, typer.Option(help="Folder for the JSON rankings and the PNG charts.")
    ] = Path("runs/analysis"),
    cache: Annotated[bool, flag(help="Reuse a cached analysis of this model and data.")] = True,
) -> None:
    """Rank MODEL's channels, layers and input features on DATA; save JSON and charts."""
    from autotune.api import analyze as run_analyze
    from autotune.paths import check_writable, remove_made
    from autotune.rank.analysis import tables
    from autotune.results.charts import plot_analysis

    model_spec, data_spec = _specs(
        model, data, arch, num_classes, trust_model, code, target, val_fraction, image_size,
        normalize,
    )  # fmt: skip
    made = check_writable(out)  # before the analysis, not after it: it may take minutes
    try:
        with console.status(f"{method} analysis"):
            result = run_analyze(
                model_spec,
                data_spec,
                method=method,
                samples=samples,
                background=background,
                nsamples=nsamples,
                seed=seed,
                explainer=explainer,
                threads=threads,
                cache=cache,
            )
    except BaseException:
        remove_made(out, made)  # a refused analysis leaves no empty folder behind
        raise
    path = out / f"{method}.json"
    result.save(path)
    for table in tables(result):
        console.print(table)
    charts = plot_analysis(result, out)
    took = "from the cache" if result.meta.get("cached") else f"in {result.meta['seconds']:.1f}s"
    console.print(
        f"{method} analysis of {result.meta['samples']} samples {took}: wrote "
        f"{', '.join(str(p) for p in [path, *charts])}",
        highlight=False,
    )


@app.command()
@friendly
def show(
    out: SearchOut = None,
    storage: Storage = None,
    study_name: StudyName = None,
    top: Annotated[int, typer.Option(help="Rows to show.")] = 20,
) -> None:
    """Print the leaderboard of an existing study."""
    from autotune.results.leaderboard import Leaderboard
    from autotune.search.study import load_study, study_record

    if top < 1:
        raise AutotuneError(f"--top {top} shows no rows: give 1 or more")
    out = _search_out(out, storage, "autotune show OUT")
    study = load_study(storage, out, study_name)
    metric = study_record(study)["settings"]["metric"]
    board = Leaderboard.from_study(study, metric, top=top)
    console.print(board)


@app.command()
@friendly
def export(
    out: Annotated[Path | None, typer.Option(help=OUT_HELP, show_default=False)] = None,
    trial: Annotated[int | None, typer.Option(help="Trial to export (default: the best).")] = None,
    to: Annotated[
        Path | None, typer.Option(help="Folder to write (default: OUT/trial_N or OUT/best).")
    ] = None,
    retrain: Annotated[
        bool,
        flag(
            "--retrain",
            help="Retrain from the stored parameters even when the trial's weights were saved.",
        ),
    ] = False,
    storage: Storage = None,
    study_name: StudyName = None,
    device: Annotated[
        str, typer.Option(help="Device to rebuild on; cpu reproduces exactly.")
    ] = "cpu",
    export_preprocessing: ExportPreprocessing = False,
    export_formats: ExportFormats = None,
    trust_model: Trust = False,
    code: Code = None,
) -> None:
    """Rebuild a trial's model from its stored parameters and export it with its config.

    Trust is asked again: a model file that unpickles, or code the study names (``--code``,
    an ``--arch`` outside torchvision), needs ``--trust-model`` or ``--code`` on this command
    too, whatever the study recorded, since a study folder may come from anyone."""
    from autotune.config import SearchSettings
    from autotune.load.job import Job
    from autotune.paths import check_writable, export_dir, remove_made
    from autotune.results.export import Workspace, export_trial
    from autotune.results.onnx_export import export_formats as checked_formats
    from autotune.results.pick import over_budgets, pick_trial
    from autotune.results.summary import file_lines
    from autotune.search.study import load_study, space_of, study_record
    from autotune.trial.devices import resolve_device

    if to is not None and to.exists() and not to.is_dir():
        raise AutotuneError(f"--to {str(to)!r} is a file: choose a folder to export into")
    out = _search_out(out, storage, "autotune export --out OUT", writes=True)
    if out.exists() and not out.is_dir():  # with --storage, nothing else looks at it first
        raise AutotuneError(f"--out {str(out)!r} is a file: pass the output folder of a search")
    formats = checked_formats(tuple(export_formats or ()))  # before the model loads
    resolve_device(device)  # as is --device gpu
    study = load_study(storage, out, study_name)
    pick_trial(study, trial)  # a trial with nothing to export: refused before the model loads
    # Where export_trial writes: a folder it cannot make is refused before the rebuild, and
    # the folders made to check it go again if the export stops before writing into them.
    if to is None:
        folder, flag = export_dir(out, trial), "the export folder"
        fix = "pass --to FOLDER to export elsewhere"
    else:
        folder, flag, fix = to, "--to", "choose a folder you can write to"
    made = check_writable(folder, flag, fix)
    try:
        record = study_record(study)
        with console.status("loading the model and data"):
            job = Job.from_record(
                record, trust_model=trust_model, code=str(code) if code is not None else None
            )
        stored = record["settings"]
        settings = SearchSettings(
            out=out, storage=storage, study_name=study.study_name, device=device, **stored,
            export_preprocessing=export_preprocessing, export=formats,
        )  # fmt: skip
        rebuild = Workspace.create(job, space_of(record), settings, study, saved=not retrain)
        with console.status(f"rebuilding trial {trial if trial is not None else 'best'}"):
            result = export_trial(rebuild, study, trial, to)
    except BaseException:
        remove_made(folder, made)
        raise
    metrics = result.config["metrics"]
    console.print(
        f"trial {result.trial}: val {metrics['metric']} {metrics['val_' + metrics['metric']]:.4f} "
        f"(study: {(study.trials[result.trial].values or [float('nan')])[0]:.4f}; reproduced: "
        f"{metrics['reproduces_study_value']}) -> {result.folder}",
        highlight=False,
    )
    for line in file_lines(result.config):  # as under a search's summary
        console.print(line, highlight=False)
    if over := over_budgets(study, study.trials[result.trial]):
        console.print(f"note: trial {result.trial} is over the search's budgets ({over})")


@app.command()
@friendly
def report(
    out: SearchOut = None,
    storage: Storage = None,
    study_name: StudyName = None,
) -> None:
    """Write OUT/report.html (self-contained, offline) and PNGs of the key plots."""
    from autotune.results.report import write_report

    out = _search_out(out, storage, "autotune report OUT", writes=True)
    with console.status("writing the report"):
        written = write_report(out, storage, study_name)
    console.print(f"wrote {written.html} and {len(written.pngs)} PNGs in {out / 'report'}")


@app.command()
@friendly
def dashboard(
    out: SearchOut = None,
    storage: Storage = None,
    study_name: StudyName = None,
    host: Annotated[str, typer.Option(help="Address to serve on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on (1 to 65535).")] = 8080,
) -> None:
    """Serve optuna-dashboard on a search's study, with its plots and exported files."""
    from optuna_dashboard import run_server

    from autotune.paths import artifacts_dir
    from autotune.results.artifacts import artifact_store
    from autotune.search.storage import open_storage
    from autotune.search.study import load_study

    if not 1 <= port <= 65535:
        raise AutotuneError(f"--port {port!r} is not a port: choose one from 1 to 65535")
    try:  # a name that does not resolve is the host's fault, not the port's
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise AutotuneError(f"--host {host!r} cannot be resolved ({e.strerror}): {HOST_FIX}") from e
    # With --storage and no folder, the default folder may be another search's (the demo's):
    # its files would be shown as this study's, and the dashboard would upload into it.
    own_files = out is not None or storage is None
    out = _search_out(out, storage, "autotune dashboard OUT")
    study = load_study(storage, out, study_name)  # checks the study is there before serving
    store = artifact_store(out) if own_files and artifacts_dir(out).is_dir() else None
    url = f"http://{host}:{port}/dashboard/"
    console.print(f"optuna-dashboard for study {study.study_name!r}: {url}  (Ctrl+C stops it)")
    if not own_files:
        console.print(
            "note: no output folder was given, so the study's attached files (analysis, exported "
            "model) are not served: name the folder its search wrote, as in "
            "`autotune dashboard OUT --storage ...`",
            highlight=False,
        )
    try:
        run_server(open_storage(storage, out), host=host, port=port, artifact_store=store)
    except OSError as e:
        if isinstance(e, socket.gaierror) or e.errno == errno.EADDRNOTAVAIL:
            raise AutotuneError(f"cannot serve on --host {host!r}: {e}; {HOST_FIX}") from e
        raise AutotuneError(f"cannot serve on {host}:{port}: {e}; choose another --port") from e


def _search_out(out: Path | None, storage: str | None, usage: str, writes: bool = False) -> Path:
    """``out``, else ``DEFAULT_OUT`` where it holds the study file, or where ``--storage`` holds
    the study and the command only reads. A command that ``writes`` (a report, an export) with
    ``--storage`` needs a folder named: the default may be another search's (the demo's). A
    default the user never typed is said as one, with ``usage`` showing how to give a folder; a
    folder they gave is left to the command's own checks, which name it as given."""
    from autotune.paths import study_file

    if out is not None:
        return out
    if (storage is None and study_file(DEFAULT_OUT).is_file()) or (storage and not writes):
        return DEFAULT_OUT
    default = str(DEFAULT_OUT)
    if storage is not None:
        # The default is not called wrong: a search of the demo model with --storage and no
        # --out wrote there, and nothing in the folder says which study's search it was.
        raise AutotuneError(
            f"no output folder was given for the study in --storage: name the folder its search "
            f"wrote, as in `{usage} --storage ...` (the default {default!r} is not assumed: it "
            "may be another search's)"
        )
    if DEFAULT_OUT.is_dir():  # output of a search whose study is in a --storage, say
        raise AutotuneError(
            f"the default folder {default!r} holds no study file {str(study_file(DEFAULT_OUT))!r} "
            f"(no folder was given): name the output folder of a search and, where its study is "
            f"kept elsewhere, the study's --storage, as in `{usage} --storage ...`"
        )
    storage_too = "" if writes else ", or the study's --storage"
    raise AutotuneError(
        f"no search output in the default folder {default!r} (no folder was given): "
        f"name the output folder of a search, as in `{usage}`{storage_too}"
    )


HOST_FIX = (
    "give an address or name of this machine, e.g. 127.0.0.1 (this machine only) or 0.0.0.0 "
    "(every interface)"
)


def _specs(
    model: str,
    data: str | None,
    arch: str | None,
    num_classes: int | None,
    trust_model: bool,
    code: Path | None,
    target: str | None,
    val_fraction: float,
    image_size: int | None,
    normalize: str | None = None,
    workers: int | None = None,
) -> tuple[Any, Any]:
    """The model and data specs of the options every model-and-data command shares."""
    from autotune.load.job import DataSpec, ModelSpec

    if data is None:
        if model != "demo":
            raise AutotuneError("--data is missing: pass the data to work on (see --help)")
        data = "demo"
    model_spec = ModelSpec(model, arch, num_classes, trust_model, str(code) if code else None)
    data_spec = DataSpec(
        data, target, val_fraction, image_size=image_size, normalize=normalize, workers=workers
    )
    return model_spec, data_spec


def _summary(result: Any) -> None:
    from autotune.results.summary import summary_lines

    console.print(result.leaderboard)
    best = result.best
    if not result.search.exports:
        console.print("this machine's trials are done; machine 0 exports the study's best")
        return
    if best is None:
        return  # the search said why
    for line in summary_lines(best, result.leaderboard.best()):
        console.print(line, highlight=False)
    if result.report is not None:
        console.print(f"report: {result.report}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()

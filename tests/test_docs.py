"""The documentation: every code example in README.md and docs/ runs, and --help is grouped.

Each page's fenced blocks run in order in one empty folder: ``python`` blocks as scripts,
``bash`` blocks in bash with this environment's ``autotune`` on the PATH, ``yaml`` blocks are
read as search spaces. A block right after ``<!-- file: NAME -->`` is written to NAME instead
(a space file, a model class), and one after ``<!-- not run: REASON -->`` is skipped for the
reason given (a database server, a GPU, a command that serves until stopped). ``text`` blocks
are output. The user's own files that a page names (its photos, tensors, CSV) are made here,
tiny, by ``FIXTURES``. To stay quick, every search runs at most 6 trials of 3 epochs:
``--trials``/``trials=`` and ``--epochs``/``max_epochs=`` are capped (all alike, so a page's
commands still continue each other's studies), nothing else is changed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from autotune.cli import app
from autotune.search.space import load_space

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(
    r"(?:<!-- (?P<mark>not run|file): (?P<arg>[^>]*?) -->\n)?^```(?P<lang>\w*)[^\n]*\n"
    r"(?P<code>.*?)^```$",
    re.M | re.S,
)
RUN = {"python", "bash", "yaml"}
SHOWN = {"text", ""}
# Runs inside every python block: searches from the API are capped like the commands.
CAP_API = """
import autotune, autotune.api
def _capped(search):
    def capped(*args, **kwargs):
        kwargs["trials"] = min(kwargs.get("trials", 20), 6)
        kwargs["max_epochs"] = 3
        return search(*args, **kwargs)
    return capped
autotune.search = autotune.api.search = _capped(autotune.api.search)
"""


def blocks(page: Path) -> list[tuple[str, str, str | None, str | None]]:
    """(language, code, mark, its argument) of every fenced block of ``page``."""
    found = FENCE.finditer(page.read_text())
    return [(m["lang"], m["code"], m["mark"], m["arg"]) for m in found]


def capped(command: str) -> str:
    """A shell block with every search capped at 6 trials of 3 epochs (every one of them, so
    that a page's commands still continue each other's studies)."""
    command = re.sub(r"--trials \d+", "--trials 6", command)
    command = re.sub(r"--epochs \d+", "--epochs 3", command)
    return re.sub(r"(autotune (?:search|demo))\b", r"\1 --trials 6 --epochs 3", command)


def image_folder(folder: Path) -> None:
    """An ImageFolder of 2 classes, 12 small PNGs each."""
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    for label in ("cat", "dog"):
        (folder / label).mkdir(parents=True)
        for i in range(12):
            pixels = torch.randint(0, 256, (24, 24, 3), generator=gen, dtype=torch.uint8)
            Image.fromarray(pixels.numpy()).save(folder / label / f"{i}.png")


def tensors_file(path: Path) -> None:
    """x_train, y_train, x_test, y_test of the 8-feature, 3-class task the .pt2 reads."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(120, 8, generator=gen), torch.randint(0, 3, (120,), generator=gen)
    torch.save({"x_train": x[:90], "y_train": y[:90], "x_test": x[90:], "y_test": y[90:]}, path)


def csv_file(path: Path) -> None:
    """scikit-learn's wine data as a CSV with its label column named ``cultivar``."""
    from sklearn.datasets import load_wine

    frame = load_wine(as_frame=True).frame.rename(columns={"target": "cultivar"})
    frame.to_csv(path, index=False)


def examples(folder: Path) -> None:
    """The repository's examples/, for pages that name them as run from the repository's root."""
    shutil.copytree(ROOT / "examples", folder)


FIXTURES: dict[str, Callable[[Path], None]] = {
    "examples": examples,
    "photos": image_folder,
    "data.pt": tensors_file,
    "wine.csv": csv_file,
}


def run_page(page: Path, folder: Path) -> None:
    for name, make in FIXTURES.items():
        make(folder / name)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    # The page's own files and its copy of examples/ import from its folder; the package is
    # the installed one (the source tree lacks the search spaces a wheel maps into it).
    env["PYTHONPATH"] = str(folder)
    for lang, code, mark, arg in blocks(page):
        if mark == "file":
            (folder / arg).write_text(code)
        elif mark == "not run" or lang not in RUN:
            continue
        elif lang == "yaml":
            load_space(yaml.safe_load(code))
        else:
            argv = [sys.executable, "-c", CAP_API + code] if lang == "python" else ["bash", "-e"]
            stdin = capped(code) if lang == "bash" else None
            done = subprocess.run(
                argv, cwd=folder, env=env, input=stdin, capture_output=True, text=True
            )
            assert done.returncode == 0, f"{page.name}: {code}\n{done.stdout}\n{done.stderr}"


def test_every_block_is_run_written_or_says_why_not() -> None:
    for page in PAGES:
        for lang, _code, mark, arg in blocks(page):
            assert lang in RUN | SHOWN, f"{page.name}: a ```{lang} block runs nowhere"
            assert mark is None or arg.strip(), f"{page.name}: a {mark} mark without a reason"


def runnable(page: Path) -> bool:
    return any(lang in RUN for lang, *_ in blocks(page))


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_examples_of_each_page_run(page: Path, tmp_path: Path) -> None:
    if not runnable(page):
        pytest.skip("no runnable example")
    run_page(page, tmp_path)


def test_the_readmes_test_install_has_what_the_pages_run() -> None:
    """The README's test command installs its extras and runs every page, deploy.md's
    ``--export onnx`` among them: those extras must hold the onnx extra's packages, or the
    tests of a fresh clone fail on a missing onnxruntime."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    readme = (ROOT / "README.md").read_text()
    test_install = re.search(r"pip install '\.\[([^\]]*)\]' && \.venv/bin/pytest", readme)
    assert test_install, "README.md: no 'pip install .[EXTRAS] && .venv/bin/pytest' command"
    name = re.compile(r"[A-Za-z0-9_.-]+")

    def packages(extra: str) -> set[str]:
        """The packages an extra installs, through the extras it names of autotune itself."""
        found: set[str] = set()
        for req in extras[extra]:
            if named := re.fullmatch(r"autotune\[([^\]]*)\]", req):
                found |= set().union(*map(packages, named[1].split(",")))
            else:
                found.add(name.match(req)[0])
        return found

    installed = set().union(*map(packages, test_install[1].split(",")))
    pages_export_onnx = any(
        "--export onnx" in code
        for page in PAGES
        for lang, code, mark, _ in blocks(page)
        if lang in RUN and mark != "not run"
    )
    assert pages_export_onnx, "no page runs --export onnx: this test can go"
    missing = packages("onnx") - installed
    assert not missing, f"the README's test install lacks {sorted(missing)}"


def test_help_groups_the_options_under_headings() -> None:
    shown = CliRunner().invoke(app, ["search", "--help"], env={"COLUMNS": "200"}).output
    panels: dict[str, list[str]] = {}
    panel = ""
    for line in shown.splitlines():
        if line.startswith("╭─ "):
            panel = line.removeprefix("╭─ ").split(" ─")[0]
        elif found := re.search(r"│ [* ]*(--[a-z-]+)", line):
            panels.setdefault(panel, []).append(found[1])
    where = {option: name for name, options in panels.items() for option in options}
    assert {"Model and data", "Search", "Budgets", "Output", "Hardware", "Workers"} <= set(panels)
    for option, heading in [("--model", "Model and data"), ("--trials", "Search"),
                            ("--max-params", "Budgets"), ("--out", "Output"),
                            ("--device", "Hardware"), ("--workers", "Workers")]:  # fmt: skip
        assert where[option] == heading, option

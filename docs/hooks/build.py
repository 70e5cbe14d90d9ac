"""MkDocs hook: the pages made at build time from what the repository holds.

- ``docs/reference/cli.md`` holds the marker below; it is replaced by what ``typer autotune.cli
  utils docs`` prints, so the page always matches ``autotune --help``.
- ``<!-- include: FILE -->`` is replaced by FILE of the repository's root (``docs/benchmarks.md``
  shows BENCHMARKS.md, ``docs/changelog.md`` CHANGELOG.md): one copy of each, which the
  benchmarks append to. Their links into ``docs/`` are written for the repository, and are
  rewritten here to the site's root.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

MARKER = "<!-- generated: autotune CLI reference -->"
INCLUDE = re.compile(r"<!-- include: ([\w.]+) -->")
ROOT = Path(__file__).parent.parent.parent


def cli_reference() -> str:
    """The Markdown reference of every ``autotune`` command, headings one level down."""
    import typer
    from typer.cli import get_docs_for_click

    from autotune.cli import app

    command = typer.main.get_command(app)
    text = get_docs_for_click(obj=command, ctx=typer.Context(command), name="autotune")
    # Typer titles the app with "#"; the page has its own title, so every heading goes down one.
    lines = text.splitlines()[1:]
    lines = ["#" + line if line.startswith("#") else line for line in lines]
    # Typer's page lists the help option by its default name, not the app's help_option_names.
    names = "`" + ", ".join(app.info.context_settings["help_option_names"]) + "`"
    lines = [line.replace("* `--help`:", f"* {names}:") for line in lines]
    return "\n".join(_literal_brackets(lines)) + "\n"


def _literal_brackets(lines: list[str]) -> list[str]:
    """The lines with each ``<`` of the help texts escaped: Markdown passes ``runs/<study name>``
    through as an HTML tag, which a browser hides. Code spans and fenced blocks show it as is."""
    fenced = False
    out = []
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and "<" in line:
            parts = line.split("`")  # the even parts are outside code spans
            line = "`".join(p if i % 2 else p.replace("<", "&lt;") for i, p in enumerate(parts))
        out.append(line)
    return out


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, cli_reference())

    def include(found: re.Match[str]) -> str:
        return (ROOT / found[1]).read_text().replace("](docs/", "](")

    return INCLUDE.sub(include, markdown)

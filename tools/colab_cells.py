"""The first two cells of every chapter: the Open-in-Colab badge and the Colab install cell.

Why: both repeat the repository URL and branch, which live in ``pyproject.toml``
(``project.urls.Repository``) and ``_config.yml`` (``repository.branch``). This module writes
them from there, and ``tests/test_publishing.py`` fails when a chapter's cells differ.

The install cell pins Colab's own torch in the same ``pip install`` command
(``torch==<installed version>``), so the resolver can keep it or fail, never replace it with
a CPU or other CUDA build; there is no ``--upgrade``, so satisfied dependencies stay as Colab
has them.

Usage: python tools/colab_cells.py check   (exit 1 and list the chapters that differ)
       python tools/colab_cells.py sync    (rewrite cells 1 and 2 of the chapters that differ)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
COLAB = "https://colab.research.google.com"
BADGE_IMAGE = f"{COLAB}/assets/colab-badge.svg"
BADGE_RE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")
HIDE_INPUT = "hide-input"
# chapters that need something else than the default install (extras, committed files)
NO_HUB = {"06_results.ipynb", "08_beyond_linear.ipynb"}
CLONES_REPOSITORY = {"06_results.ipynb", "08_beyond_linear.ipynb"}


def repository_url(root: Path = ROOT) -> str:
    """The one repository URL: ``project.urls.Repository`` in pyproject.toml."""
    with open(root / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["urls"]["Repository"]


def branch(root: Path = ROOT) -> str:
    """The branch the book's links point at: ``repository.branch`` in _config.yml."""
    return yaml.safe_load((root / "_config.yml").read_text())["repository"]["branch"]


def chapters(root: Path = ROOT) -> list[Path]:
    """Every chapter notebook (assignments are built by otter and have no such cells)."""
    return sorted((root / "book").glob("*.ipynb"))


def badge(notebook: Path, root: Path = ROOT) -> str:
    """The Markdown badge that opens this notebook, from the branch the book points at."""
    repo = repository_url(root).removeprefix("https://github.com/")
    path = notebook.resolve().relative_to(root).as_posix()
    return f"[![Open In Colab]({BADGE_IMAGE})]({COLAB}/github/{repo}/blob/{branch(root)}/{path})"


def install_source(notebook: Path, root: Path = ROOT) -> str:
    """The source of the Colab install cell of this notebook."""
    url, ref = repository_url(root), branch(root)
    extras = "" if notebook.name in NO_HUB else "[hub]"
    clone = notebook.name in CLONES_REPOSITORY
    lines = [
        "# Colab only: install the companion package (does nothing elsewhere). Colab's torch is",
        "# pinned in the same command, so pip keeps it (metanb needs torch>=2.1,<3).",
        *(["import os"] if clone else []),
        "import sys",
        "",
        'if "google.colab" in sys.modules:',
        "    import subprocess",
        "    from importlib.metadata import version",
        "",
        "    subprocess.run(",
        '        [sys.executable, "-m", "pip", "install", "-q",',
        f'         "metanb{extras} @ git+{url}@{ref}",',
        "         f\"torch=={version('torch')}\"],",
        "        check=True,",
        "    )",
    ]
    if clone:  # the page reads the committed results under book/results
        lines += [
            f'    subprocess.run(["git", "clone", "-q", "--depth", "1", "--branch", "{ref}",',
            f'                    "{url}", "/content/metanb"], check=True)',
            '    os.chdir("/content/metanb/book")',
        ]
    return "\n".join(lines)


def differences(notebook: Path, root: Path = ROOT) -> list[str]:
    """What is wrong with the first two cells of a chapter (empty: they are as generated)."""
    cells = nbformat.read(notebook, as_version=4).cells
    if len(cells) < 2 or cells[0].cell_type != "markdown" or cells[1].cell_type != "code":
        return ["the first two cells are not a title cell and a code cell"]
    problems = []
    if badge(notebook, root) not in cells[0].source:
        problems.append(f"cell 1 lacks the badge {badge(notebook, root)}")
    if cells[1].source != install_source(notebook, root):
        problems.append("cell 2 is not the generated Colab install cell")
    if HIDE_INPUT not in cells[1].metadata.get("tags", []):
        problems.append(f"cell 2 is not tagged {HIDE_INPUT}")
    return problems


def sync(notebook: Path, root: Path = ROOT) -> bool:
    """Rewrite cells 1-2 in place (read right before writing; other cells untouched)."""
    from metanb.io import atomic_write_text

    nb = nbformat.read(notebook, as_version=4)
    title, install = nb.cells[0], nb.cells[1]
    before = (title.source, install.source, list(install.metadata.get("tags", [])))
    if BADGE_RE.search(title.source):
        title.source = BADGE_RE.sub(lambda _: badge(notebook, root), title.source, count=1)
    else:  # right under the first (title) line
        head, _, rest = title.source.partition("\n")
        title.source = f"{head}\n\n{badge(notebook, root)}\n{rest}"
    install.source = install_source(notebook, root)
    tags = install.metadata.setdefault("tags", [])
    if HIDE_INPUT not in tags:
        tags.append(HIDE_INPUT)
    if before == (title.source, install.source, list(tags)):
        return False
    atomic_write_text(notebook, nbformat.writes(nb) + "\n")
    return True


def main(argv: list[str]) -> int:
    if argv not in (["check"], ["sync"]):
        print("usage: python tools/colab_cells.py check|sync", file=sys.stderr)
        return 2
    bad = 0
    for notebook in chapters():
        if argv == ["sync"]:
            if sync(notebook):
                print(f"rewrote {notebook.relative_to(ROOT)}")
        else:
            for problem in differences(notebook):
                bad += 1
                print(f"{notebook.relative_to(ROOT)}: {problem}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

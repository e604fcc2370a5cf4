"""Publishing: one version and one repository URL everywhere, workflows that run what the README
says, the Colab cells, offline math, and a wheel that installs beside an existing torch."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib.metadata import version as installed_version
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import metanb

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import book_cache  # noqa: E402
import colab_cells  # noqa: E402
import launch_buttons  # noqa: E402
import offline_math  # noqa: E402

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
URL = PYPROJECT["project"]["urls"]["Repository"]
OWNER, NAME = URL.removeprefix("https://github.com/").split("/")
PAGES = f"https://{OWNER}.github.io/{NAME}/"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
WORKFLOWS = ROOT / ".github" / "workflows"


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def workflow(name: str) -> dict:
    wf = load_yaml(WORKFLOWS / name)
    wf["on"] = wf.pop(True, wf.get("on"))  # YAML 1.1 reads the key `on` as True
    return wf


def run_steps(wf: dict) -> list[str]:
    return [step["run"] for job in wf["jobs"].values() for step in job.get("steps", [])
            if "run" in step]


def uses(wf: dict) -> list[str]:
    return [step["uses"].split("@")[0] for job in wf["jobs"].values()
            for step in job.get("steps", []) if "uses" in step]


def python_classifiers() -> list[str]:
    prefix = "Programming Language :: Python :: 3."
    return [c.removeprefix("Programming Language :: Python :: ")
            for c in PYPROJECT["project"]["classifiers"] if c.startswith(prefix)]


# -- one version, one repository URL -------------------------------------------------------

def test_the_version_lives_in_metanb_init_only():
    assert "version" not in PYPROJECT["project"]
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "metanb.__version__"}
    citation = load_yaml(ROOT / "CITATION.cff")
    assert citation["version"] == metanb.__version__
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog
    assert re.search(rf"^## \[{re.escape(metanb.__version__)}\] - \d{{4}}-\d\d-\d\d$", changelog,
                     re.M)
    assert f"badge/version-{metanb.__version__}-" in (ROOT / "README.md").read_text()


def test_every_repository_url_is_the_one_in_pyproject():
    urls = PYPROJECT["project"]["urls"]
    assert urls["Homepage"] == PAGES
    assert all(u.startswith((URL, PAGES)) for u in urls.values())
    assert load_yaml(ROOT / "_config.yml")["repository"]["url"] == URL
    citation = load_yaml(ROOT / "CITATION.cff")
    assert (citation["repository-code"], citation["url"]) == (URL, PAGES)
    texts = {p.name: p.read_text() for p in [ROOT / "README.md", ROOT / "CHANGELOG.md",
                                             ROOT / "CITATION.cff"]}
    for notebook in colab_cells.chapters():  # only the badge and install cells are ours
        cells = nbformat.read(notebook, as_version=4).cells[:2]
        texts[notebook.name] = "\n".join(cell.source for cell in cells)
    for name, text in texts.items():
        # links that look like this project's (same owner or same name) must be exactly it
        for pattern in (r"github\.com/([\w.-]+)/([\w.-]+)", r"https://([\w-]+)\.github\.io/([\w.-]+)"):
            for owner, repo in re.findall(pattern, text):
                repo = repo.removesuffix(".git")
                if owner == OWNER or repo == NAME:
                    assert (owner, repo) == (OWNER, NAME), name
        assert URL in text or PAGES in text, name
    readme = texts["README.md"]
    for badge in re.findall(r"actions/workflows/([\w.-]+)/badge\.svg", readme):
        assert (WORKFLOWS / badge).is_file(), badge
    assert PAGES in readme


def test_environment_yml_has_the_pins_of_pyproject():
    conda = {"torch": "pytorch"}
    env = load_yaml(ROOT / "environment.yml")
    specs = {}
    for dep in env["dependencies"]:
        if isinstance(dep, str) and dep not in ("pip",) and not dep.startswith("python="):
            name, spec = re.match(r"([\w.-]+)(.*)", dep).groups()
            specs[canonicalize_name(name)] = spec
    wanted = [*PYPROJECT["project"]["dependencies"],
              *PYPROJECT["project"]["optional-dependencies"]["hub"]]
    for line in wanted:
        req = Requirement(line)
        name = canonicalize_name(conda.get(req.name, req.name))
        assert name in specs, name
        assert sorted(specs[name].split(",")) == sorted(str(req.specifier).split(",")), name
    pip = next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]
    assert len(pip) == 1 and pip[0].startswith('-e ".[')
    assert set(re.search(r"\[(.*)\]", pip[0]).group(1).split(",")) == set(
        PYPROJECT["project"]["optional-dependencies"])  # every extra, as `make install`


# -- Colab ---------------------------------------------------------------------------------

def test_every_chapter_has_the_generated_badge_and_install_cell():
    found = colab_cells.chapters()
    assert len(found) >= 6
    for notebook in found:
        assert colab_cells.differences(notebook) == [], notebook.name
        source = nbformat.read(notebook, as_version=4).cells[1].source
        assert "--upgrade" not in source and " -U" not in source and "--force" not in source
        assert "f\"torch=={version('torch')}\"" in source
        assert f"git+{URL}@main" in source


def test_the_install_cell_keeps_the_installed_torch():
    """The cell's requirements, resolved against this environment, are met by its torch."""
    source = colab_cells.install_source(ROOT / "book" / "01_lora_and_retraining.ipynb")
    assert 'if "google.colab" in sys.modules:' in source
    pin = Requirement(f"torch=={installed_version('torch')}")
    assert pin.specifier.contains(installed_version("torch"), prereleases=True)
    ranged = next(Requirement(d) for d in PYPROJECT["project"]["dependencies"]
                  if d.startswith("torch"))
    assert ranged.specifier.contains(installed_version("torch").split("+")[0])


def test_sync_rewrites_only_the_first_two_cells(tmp_path):
    for name in ("pyproject.toml", "_config.yml"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "book").mkdir()
    notebook = tmp_path / "book" / "07_new.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# 7. New\n\nText."),
                nbformat.v4.new_code_cell('!pip install --upgrade "metanb @ git+https://x/y"'),
                nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["remove-input"]})]
    nbformat.write(nb, notebook)
    problems = colab_cells.differences(notebook, tmp_path)
    assert len(problems) == 3 and "lacks the badge" in problems[0]
    assert colab_cells.sync(notebook, tmp_path) is True
    assert colab_cells.differences(notebook, tmp_path) == []
    cells = nbformat.read(notebook, as_version=4).cells
    assert cells[0].source.startswith("# 7. New\n\n[![Open In Colab]")
    assert "/blob/main/book/07_new.ipynb)" in cells[0].source
    assert (cells[2].source, cells[2].metadata) == ("x = 1", {"tags": ["remove-input"]})
    assert colab_cells.sync(notebook, tmp_path) is False  # idempotent: no second write


def test_assignment_pages_have_no_launch_button_and_chapters_do():
    config = load_yaml(ROOT / "_config.yml")
    patterns = config["sphinx"]["config"]["launch_buttons_exclude"]
    toc = (ROOT / "_toc.yml").read_text()
    pages = re.findall(r"file: (\S+)", toc)
    assignments = [p for p in pages if p.startswith("book/assignments/") and p.count("/") == 2
                   and not p.endswith("/index")]
    assert len(assignments) == 3
    assert all(launch_buttons.is_excluded(p, patterns) for p in assignments)
    chapters = [f"book/{p.stem}" for p in colab_cells.chapters()]
    assert chapters and not any(launch_buttons.is_excluded(p, patterns) for p in chapters)
    assert config["launch_buttons"]["colab_url"] == colab_cells.COLAB


# -- offline math and the launch-button filter in a real (tiny) build ----------------------

def test_offline_math_switch_sets_the_local_mathjax_path_or_leaves_the_cdn():
    on = SimpleNamespace(offline_math=True, html_static_path=["_static"], mathjax_path="cdn")
    offline_math._use_vendored_mathjax(None, on)
    assert on.mathjax_path == "mathjax/tex-chtml.js"
    assert (Path(on.html_static_path[1]) / on.mathjax_path).is_file()
    assert on.html_static_path[0] == "_static"
    off = SimpleNamespace(offline_math=False, html_static_path=[], mathjax_path="cdn")
    offline_math._use_vendored_mathjax(None, off)
    assert (off.mathjax_path, off.html_static_path) == ("cdn", [])


def test_offline_math_without_the_vendor_package_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(offline_math, "VENDOR_PACKAGE", "no-such-mathjax-package")
    with pytest.raises(Exception, match=r"^offline_math is on but no-such-mathjax-package is "
                       r"not installed \(pip install -e '\.\[book\]'\)$"):
        offline_math.vendored_static_dir()


def test_a_tiny_book_serves_its_own_mathjax_and_no_colab_on_assignments(tmp_path):
    real = load_yaml(ROOT / "_config.yml")
    config = {
        "title": "tiny",
        "only_build_toc_files": True,
        "execute": {"execute_notebooks": "off"},
        "parse": real["parse"],
        "sphinx": {"local_extensions": real["sphinx"]["local_extensions"],
                   "config": {k: real["sphinx"]["config"][k] for k in
                              ("offline_math", "launch_buttons_exclude", "mathjax3_config")}},
        "repository": real["repository"],
        "launch_buttons": real["launch_buttons"],
        "html": {"use_repository_button": True},
    }
    assert config["sphinx"]["config"]["offline_math"] is True
    (tmp_path / "_config.yml").write_text(yaml.safe_dump(config))
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/ch\nchapters:\n"
                                       "  - file: book/assignments/a\n")
    shutil.copytree(ROOT / "tools", tmp_path / "tools",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "book" / "assignments").mkdir(parents=True)
    for path, text in [("book/ch.ipynb", "# Chapter\n\nInline $k \\in \\R^d$."),
                       ("book/assignments/a.ipynb", "# Assignment\n\n$$x^2$$")]:
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}
        nb.cells = [nbformat.v4.new_markdown_cell(text), nbformat.v4.new_code_cell("1 + 1")]
        nbformat.write(nb, tmp_path / path)
    build = subprocess.run(
        [sys.executable, "-c", "from jupyter_book.cli.main import main; main()",
         "build", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    html = tmp_path / "_build" / "html"
    chapter = (html / "book" / "ch.html").read_text()
    assignment = (html / "book" / "assignments" / "a.html").read_text()
    assert (html / "_static" / "mathjax" / "tex-chtml.js").is_file()
    assert (html / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()
    for page in (chapter, assignment):
        assert re.search(r'<script[^>]*src="\.\./(\.\./)?_static/mathjax/tex-chtml\.js', page)
        assert "cdn.jsdelivr.net/npm/mathjax" not in page
        assert '"R": "\\\\mathbb{R}"' in page  # the book's macros still reach MathJax
    colab = f"{colab_cells.COLAB}/github/{OWNER}/{NAME}/blob/main/book/ch.ipynb"
    assert colab in chapter and "fa-rocket" in chapter
    assert colab_cells.COLAB not in assignment and "fa-rocket" not in assignment


# -- workflows, Makefile, notebook cache -----------------------------------------------------

def test_tests_workflow_runs_make_test_on_oldest_and_newest_python():
    wf = workflow("tests.yml")
    assert set(wf["on"]) >= {"push", "pull_request"}
    assert run_steps(wf) == ["make test"]
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("make test")
    versions = python_classifiers()
    oldest = PYPROJECT["project"]["requires-python"].removeprefix(">=")
    assert versions[0] == oldest
    matrix = wf["jobs"]["test"]["strategy"]["matrix"]["python"]
    assert matrix == [versions[0], versions[-1]]
    assert wf["jobs"]["test"]["runs-on"] == "ubuntu-latest"
    assert workflow("weekly.yml")["jobs"]["test"]["strategy"]["matrix"]["python"] == matrix


def test_book_workflow_deploys_to_pages_with_a_cached_execution():
    wf = workflow("book.yml")
    assert {"actions/upload-pages-artifact", "actions/deploy-pages", "actions/cache"} <= set(
        uses(wf))
    assert "make book" in run_steps(wf)
    cache = next(s for s in wf["jobs"]["build"]["steps"]
                 if s.get("uses", "").startswith("actions/cache"))
    assert cache["with"]["path"] == "_build/.jupyter_cache"
    assert "hashFiles('book/**/*.ipynb')" in cache["with"]["key"]
    assert "steps.inputs.outputs.key" in cache["with"]["key"]
    assert any("tools/book_cache.py key" in r for r in run_steps(wf))
    assert wf["jobs"]["deploy"]["permissions"] == {"pages": "write", "id-token": "write"}
    assert load_yaml(ROOT / "_config.yml")["execute"]["execute_notebooks"] == "cache"


def test_every_workflow_cancels_stale_runs_and_uses_the_cpu_torch_index():
    names = sorted(p.name for p in WORKFLOWS.glob("*.yml"))
    assert names == ["book.yml", "release.yml", "tests.yml", "weekly.yml"]
    assert "schedule" in workflow("weekly.yml")["on"]
    for name in names:
        wf = workflow(name)
        group = wf["concurrency"]["group"]
        assert "${{ github.ref }}" in group
        # a release is never cancelled half-uploaded; everything else gives way to a new push
        assert wf["concurrency"]["cancel-in-progress"] is (name != "release.yml")
        envs = [wf.get("env", {}), *(job.get("env", {}) for job in wf["jobs"].values())]
        assert CPU_INDEX in [env.get("TORCH_INDEX") for env in envs], name
    assert f"TORCH_INDEX={CPU_INDEX}" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("index", ["", CPU_INDEX])
def test_makefile_takes_torch_from_the_index_variable(tmp_path, index):
    dry = subprocess.run(["make", "-n", "-B", "-C", str(ROOT), "install",
                          f"VENV={tmp_path / 'venv'}", f"TORCH_INDEX={index}"],
                         capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    torch_line = next(line for line in dry.stdout.splitlines() if "torch==2.13.0" in line)
    words = torch_line.split()
    assert words[words.index("torch==2.13.0") + 1:] == (["--index-url", index] if index else [])


def test_book_cache_is_dropped_when_the_package_changes(tmp_path):
    (tmp_path / "metanb" / "__pycache__").mkdir(parents=True)
    (tmp_path / "metanb" / "a.py").write_text("x = 1\n")
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    key = book_cache.inputs_key(tmp_path)
    (tmp_path / "metanb" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "book" / "results" / "quick" / "work").mkdir(parents=True)
    (tmp_path / "book" / "results" / "quick" / "work" / "step.pt").write_bytes(b"\1")
    assert book_cache.inputs_key(tmp_path) == key  # caches and runs in progress do not count
    cache = tmp_path / "_build" / ".jupyter_cache"
    assert book_cache.sync(cache, tmp_path) is False  # no cache yet: nothing to drop
    (cache / "global.db").write_bytes(b"db")
    assert book_cache.sync(cache, tmp_path) is False and (cache / "global.db").exists()
    (tmp_path / "book" / "results" / "quick" / "results.jsonl").write_text("{}\n")
    assert book_cache.inputs_key(tmp_path) != key
    assert book_cache.sync(cache, tmp_path) is True and not (cache / "global.db").exists()
    assert (cache / book_cache.KEY_FILE).read_text() == book_cache.inputs_key(tmp_path) + "\n"


# -- the sdist and wheel ---------------------------------------------------------------------

def _env_with_torch_but_not_metanb(tmp_path: Path) -> Path:
    """A fresh venv whose only packages are those of this environment, metanb excluded.

    Why: proves the wheel installs beside an existing torch (and its other dependencies)
    offline, without pip replacing anything; symlinks keep it fast (no copy of torch).
    """
    site = Path(sysconfig.get_paths()["purelib"])
    farm = tmp_path / "existing-site"
    farm.mkdir()
    for entry in site.iterdir():
        if not re.match(r"(metanb|__editable__)|.*\.pth$", entry.name, re.I):
            (farm / entry.name).symlink_to(entry)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print("
                              "sysconfig.get_paths()['purelib'])"], capture_output=True,
                             text=True, check=True).stdout.strip()
    (Path(purelib) / "existing.pth").write_text(f"{farm}\n")
    return python


def test_sdist_and_wheel_build_pass_twine_and_install_beside_torch(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "CITATION.cff"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "metanb", src / "metanb",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    # the wheel is built from the sdist (so the sdist is complete); --no-isolation keeps it
    # fast and offline, and build still refuses when build-system.requires is not met here
    # (`make dist` and the release workflow build in isolated environments)
    built = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir",
                            str(dist), str(src)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    wheel, sdist = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    assert [w.name for w in wheel] == [f"metanb-{metanb.__version__}-py3-none-any.whl"]
    assert [s.name for s in sdist] == [f"metanb-{metanb.__version__}.tar.gz"]
    twine = subprocess.run([sys.executable, "-m", "twine", "check", "--strict",
                            *map(str, wheel + sdist)], capture_output=True, text=True, timeout=120)
    assert twine.returncode == 0 and twine.stdout.count("PASSED") == 2, twine.stdout

    with zipfile.ZipFile(wheel[0]) as zf:
        names = zf.namelist()
        meta = zf.read(f"metanb-{metanb.__version__}.dist-info/METADATA").decode()
    assert f"metanb-{metanb.__version__}.dist-info/licenses/LICENSE" in names
    assert "metanb/py.typed" in names and "metanb/experiments/profiles/quick.yaml" in names
    assert not any(n.startswith(("tests/", "book/", "tools/")) for n in names)
    assert "License-Expression: MIT" in meta
    assert f"Project-URL: Repository, {URL}" in meta
    assert re.search(r"^Requires-Dist: torch<3,>=2\.1$", meta, re.M)

    python = _env_with_torch_but_not_metanb(tmp_path)
    report = tmp_path / "report.json"
    pip = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                          "--no-index", "--report", str(report), str(wheel[0])],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    installed = [item["metadata"]["name"] for item in json.loads(report.read_text())["install"]]
    assert installed == ["metanb"]  # torch and every other dependency were already met
    probe = subprocess.run(
        [str(python), "-c", "import json, torch, metanb; print(json.dumps([torch.__version__, "
         "torch.__file__, metanb.__version__, metanb.__file__]))"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr[-2000:]
    torch_version, torch_file, version, metanb_file = json.loads(probe.stdout)
    import torch

    assert (torch_version, Path(torch_file).resolve()) == (
        torch.__version__, Path(torch.__file__).resolve())
    assert version == metanb.__version__
    assert Path(metanb_file).is_relative_to(python.parent.parent)  # the wheel, not the checkout
    cli = subprocess.run([str(python.parent / "metanb"), "--version"], capture_output=True,
                         text=True, timeout=300, cwd=tmp_path)
    assert cli.stdout.strip() == f"metanb {metanb.__version__}", cli.stderr[-2000:]

"""The documentation cannot drift from the code: the site builds strictly, every ``restlit ...``
command line shown in README.md and docs/*.md parses with the CLI's own parser, every Python
snippet runs, every config field carries its one-line docstring, and the wheel installs and runs
outside the repository with its package data."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# The visible first line of a Python snippet the tests cannot run (it needs a GPU or a trained model).
NOT_RUN = "# not run by the docs tests:"


def _hooks():
    spec = importlib.util.spec_from_file_location("restlit_docs_hooks", REPO / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hooks = _hooks()


# ------------------------------------------------------------------------------------------------
# Config fields: each with a one-line docstring, each in the generated reference
# ------------------------------------------------------------------------------------------------

CONFIG_SOURCES = [REPO / "restlit" / "config" / "sections.py", REPO / "restlit" / "config" / "method.py",
                  REPO / "restlit" / "rewards.py"]


def undocumented_fields(source: str) -> list[str]:
    return [f"{cls}.{name}" for cls, fields in hooks.field_docs(source).items()
            for name, doc in fields.items() if not doc]


def test_the_field_docstring_check_finds_a_missing_one():
    source = (
        "from dataclasses import dataclass\n"
        "@dataclass\nclass A:\n    x: int = 1\n    \"\"\"Documented.\"\"\"\n    y: int = 2\n"
        "@dataclass(frozen=True)\nclass B:\n    z: str = 'a'\n    # a comment is not a docstring\n"
        "class NotADataclass:\n    w: int = 3\n"
    )
    assert undocumented_fields(source) == ["A.y", "B.z"]
    assert hooks.field_docs(source)["A"]["x"] == "Documented."


@pytest.mark.parametrize("path", CONFIG_SOURCES, ids=lambda p: p.name)
def test_every_config_field_has_a_one_line_docstring(path):
    assert hooks.field_docs(path.read_text()), f"no dataclass found in {path}"
    missing = undocumented_fields(path.read_text())
    assert not missing, (f"{path.relative_to(REPO)}: fields without a docstring on the line after them "
                         f"(they make the configuration reference): {', '.join(missing)}")


def test_the_configuration_reference_shows_every_key_with_its_docstring():
    import dataclasses

    from restlit.config.sections import RunConfig

    text = hooks.config_reference()
    docs = {}
    for path in CONFIG_SOURCES:
        docs.update(hooks.field_docs(path.read_text()))

    def walk(instance, key):
        for f in dataclasses.fields(instance):
            value = getattr(instance, f.name)
            path = f"{key}.{f.name}" if key else f.name
            if dataclasses.is_dataclass(value):
                assert f"`{path}`" in text, f"no section for {path}"
                walk(value, path)
            if key or not dataclasses.is_dataclass(value):  # top-level sections are headings, not rows
                assert f"| `{f.name}` |" in text and docs[type(instance).__name__][f.name] in text, path

    walk(RunConfig(), "")
    assert "### `objective.weights`" in text and "| `delta` | `float` | `0.2` |" in text


def test_the_cli_reference_shows_every_command_and_option():
    text = hooks.cli_reference()
    commands = hooks.cli_commands()
    assert {" ".join(p) for p, _, _ in commands} >= {"restlit prepare", "restlit fit", "restlit eval",
                                                       "restlit diagnose variance"}
    for path, cmd, _ in commands:
        assert f"## `{' '.join(path)}`" in text
        for param in cmd.params:
            for opt in param.opts if param.param_type_name == "option" else []:
                assert opt in text, f"{' '.join(path)} {opt}"


# ------------------------------------------------------------------------------------------------
# Command lines shown in the docs parse with the CLI's own parser
# ------------------------------------------------------------------------------------------------


def _code_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced code block."""
    return [(m.group(1), m.group(2)) for m in re.finditer(r"^```(\w*)[^\n]*\n(.*?)^```", text, re.DOTALL | re.MULTILINE)]


def command_lines(text: str) -> list[str]:
    """Every ``restlit ...`` command line in a page: lines of code blocks (joined over ``\\``
    continuations and over indented ``[...]`` / ``--flag`` continuation lines) and inline code spans."""
    found: list[str] = []
    for lang, body in _code_blocks(text):
        if lang == "python":
            continue
        current: str | None = None
        for raw in body.replace("\\\n", " ").splitlines():
            if current is not None and re.match(r"\s+[\[-]", raw) and not _starts_command(raw):
                current += " " + raw.strip()
                continue
            if current is not None:
                found.append(current)
            current = raw.strip() if _starts_command(raw) else None
        if current is not None:
            found.append(current)
    without_blocks = re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)
    found += [m.group(1) for m in re.finditer(r"`([^`\n]*\brestlit [^`\n]*)`", without_blocks)
              if _starts_command(m.group(1))]
    return found


def _starts_command(line: str) -> bool:
    """A line that runs ``restlit``: the word first, or after environment assignments."""
    for word in line.split():
        if word == "restlit":
            return True
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\S*", word):
            return False
    return False


def check_command(line: str) -> str | None:
    """Why ``line`` would not parse (an unknown sub-command or option, a bad value), or None."""
    import typer.main

    from restlit.cli.main import app

    words = shlex.split(line, comments=True)
    words = [w for w in words[words.index("restlit") + 1:] if w != "..."]
    synopsis = any(c in w for w in words for c in "[]|")  # usage notation: [--a X | --b Y]
    if synopsis:
        words = [p for w in words for p in w.replace("[", " ").replace("]", " ").replace("|", " ").split()]
    cmd = typer.main.get_command(app)
    ctx = cmd.make_context("restlit", ["--help"], resilient_parsing=True)
    path = ["restlit"]
    while hasattr(cmd, "list_commands"):
        head = next((w for w in words if not w.startswith("-")), None)
        for w in words[: words.index(head) if head else len(words)]:
            if _unknown_option(cmd, w):
                return f"{' '.join(path)}: no option {w}"
        if head is None:
            return None
        sub = cmd.get_command(ctx, head)
        if sub is None:
            return f"{' '.join(path)}: no sub-command {head!r}"
        words = words[words.index(head) + 1:]
        path.append(head)
        cmd = sub
        ctx = cmd.make_context(head, ["--help"], parent=ctx, resilient_parsing=True)
    for w in words:
        if w.startswith("-") and _unknown_option(cmd, w):
            return f"{' '.join(path)}: no option {w}"
    if not synopsis:
        try:  # resilient: a required option left out of a short example is not an error here
            parsed = cmd.make_context(path[-1], list(words), parent=ctx.parent, resilient_parsing=True)
        except Exception as exc:  # noqa: BLE001 - click's UsageError and kin: the message says what is wrong
            return f"{' '.join(path)}: {exc}"
        if parsed.args:
            return f"{' '.join(path)}: unexpected extra arguments {parsed.args}"
    return None


def _unknown_option(cmd, word: str) -> bool:
    if not word.startswith("-") or re.fullmatch(r"-\d[\d.e-]*", word):
        return False
    name = word.split("=", 1)[0]
    known = {"--help"} | {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
    return name not in known


def test_the_command_extractor_and_checker_can_fail():
    text = ("```bash\nrestlit fit --config c.yaml   # comment\nNODE=1 restlit eval --suite heldout \\\n"
            "  --data d\nrestlit eval --suite a\n             [--model DIR | --predictions F]\npip install restlit\n```\n"
            "Run `restlit tag TEXT` or `restlit.regions`.\n")
    assert command_lines(text) == ["restlit fit --config c.yaml   # comment",
                                   "NODE=1 restlit eval --suite heldout    --data d",
                                   "restlit eval --suite a [--model DIR | --predictions F]",
                                   "restlit tag TEXT"]
    assert all(check_command(line) is None for line in command_lines(text))
    assert check_command("restlit fitt --config c.yaml") == "restlit: no sub-command 'fitt'"
    assert check_command("restlit fit --config c.yaml --nope") == "restlit fit: no option --nope"
    assert check_command("restlit eval --suite a [--modell DIR]") == "restlit eval: no option --modell"
    assert check_command("restlit diagnose variance --batchez 3") == "restlit diagnose variance: no option --batchez"
    assert "extra argument" in check_command("restlit fit --config c.yaml stray")
    assert check_command("restlit --version") is None and check_command("restlit ...") is None


DOC_COMMANDS = [(p, line) for p in PAGES for line in command_lines(p.read_text())]


def test_the_docs_show_commands():
    pages = {p.name for p, _ in DOC_COMMANDS}
    assert {"README.md", "training.md", "evaluation.md", "data.md"} <= pages and len(DOC_COMMANDS) > 40


@pytest.mark.parametrize("page, line", DOC_COMMANDS, ids=[f"{p.name}:{i}" for i, (p, _) in enumerate(DOC_COMMANDS)])
def test_every_documented_command_parses(page, line):
    problem = check_command(line)
    assert problem is None, f"{page.relative_to(REPO)}: `{line}`: {problem}"


# ------------------------------------------------------------------------------------------------
# Python snippets run
# ------------------------------------------------------------------------------------------------

SNIPPET_PAGES = [p for p in PAGES if any(lang == "python" for lang, _ in _code_blocks(p.read_text()))]


def test_few_snippets_are_marked_not_run():
    marked = [p.name for p in PAGES for lang, body in _code_blocks(p.read_text())
              if lang == "python" and body.lstrip().startswith(NOT_RUN)]
    assert len(marked) <= 3, f"keep the snippets the tests cannot run few: {marked}"
    assert {"README.md", "concepts.md"} <= {p.name for p in SNIPPET_PAGES}


@pytest.mark.parametrize("page", SNIPPET_PAGES, ids=lambda p: p.name)
def test_every_python_snippet_runs(page, tmp_path, monkeypatch, capsys):
    """A page's snippets run in order in one namespace (as a reader types them), in an empty directory."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for i, (lang, body) in enumerate(_code_blocks(page.read_text())):
        if lang != "python" or body.lstrip().startswith(NOT_RUN):
            continue
        try:
            exec(compile(body, f"{page.name}[snippet {i}]", "exec"), namespace)  # noqa: S102 - the docs' own code
        except Exception as exc:  # noqa: BLE001 - any failure of a snippet is reported with its page
            pytest.fail(f"{page.relative_to(REPO)}, snippet {i}: {type(exc).__name__}: {exc}\n{body}")


# ------------------------------------------------------------------------------------------------
# The site builds strictly
# ------------------------------------------------------------------------------------------------


def _mkdocs(config: Path, site: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.slow
def test_the_site_builds_strictly(tmp_path):
    out = _mkdocs(REPO / "mkdocs.yml", tmp_path / "site", REPO)
    assert out.returncode == 0, out.stderr[-4000:]
    site = tmp_path / "site"
    for page in ("index.html", "reference/config/index.html", "reference/cli/index.html",
                 "reference/api/objective/index.html", "benchmarks/RESULTS/index.html",
                 "benchmarks/demo/weights.png"):
        assert (site / page).is_file(), page
    assert "policy_loss" in (site / "reference/api/objective/index.html").read_text()
    assert "restlit diagnose variance" in (site / "reference/cli/index.html").read_text()


@pytest.mark.slow
def test_a_broken_anchor_fails_the_build(tmp_path):
    """The same site with one page linking to an anchor that does not exist: --strict refuses it."""
    docs = tmp_path / "docs"
    shutil.copytree(REPO / "docs", docs)
    (docs / "development.md").write_text((docs / "development.md").read_text() + "\n[x](results.md#no-such-anchor)\n")
    config = (REPO / "mkdocs.yml").read_text()
    config = config.replace("docs_dir: docs", f"docs_dir: {docs}").replace("  - docs/hooks.py", f"  - {REPO / 'docs/hooks.py'}")
    config = config.replace("paths: [.]", f"paths: [{REPO}]")
    (tmp_path / "mkdocs.yml").write_text(config)
    out = _mkdocs(tmp_path / "mkdocs.yml", tmp_path / "site", tmp_path)
    assert out.returncode != 0 and "no-such-anchor" in out.stderr, out.stderr[-3000:]


# ------------------------------------------------------------------------------------------------
# The wheel installs and runs outside the repository, with its package data
# ------------------------------------------------------------------------------------------------


def _source_copy(dest: Path) -> Path:
    """The checkout's files (tracked, and new ones git does not ignore) copied to ``dest``, symlinks kept."""
    names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.splitlines()
    for name in names:
        src = REPO / name
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the working tree
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), target)
        else:
            shutil.copy2(src, target)
    return dest


@pytest.mark.slow
def test_the_wheel_installs_and_runs_outside_the_repository(tmp_path):
    assert REPO not in tmp_path.parents
    src = _source_copy(tmp_path / "src")
    # the environment's own setuptools when it has one (no download); else pip's isolated build
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q",
                            "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=600, check=False)
    assert built.returncode == 0, built.stderr[-3000:]
    [wheel] = (tmp_path / "dist").glob("restlit-*.whl")
    contents = set(zipfile.ZipFile(wheel).namelist())
    for name in ("restlit/cli/main.py", "restlit/data_prep/pipeline.py", "restlit/evaluation/data/api-bank/LICENSE",
                 "restlit/evaluation/data/api-bank/level-1-api_processed.json"):
        assert name in contents, f"{name} is not in the wheel"

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site_packages = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        capture_output=True, text=True, check=True).stdout.strip())
    # The dependencies come from the environment running the tests: a plain path line adds its
    # site-packages to sys.path without processing the .pth files there (the editable install of
    # the repository among them), so `import restlit` finds the wheel installed below.
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site_packages / "zz-shared-dependencies.pth").write_text("".join(f"{d}\n" for d in deps))
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                                "--no-index", "-q", str(wheel)], capture_output=True, text=True, timeout=600,
                               check=False)
    assert installed.returncode == 0, installed.stderr[-3000:]

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    work = tmp_path / "work"
    work.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), cwd=work, env=env, capture_output=True, text=True, timeout=600, check=False)

    where = run(str(python), "-c", "import restlit; print(restlit.__file__)")
    assert where.returncode == 0, where.stderr[-2000:]
    assert Path(where.stdout.strip()).is_relative_to(site_packages), where.stdout

    restlit = str(venv / "bin" / "restlit")
    helped = run(restlit, "--help")
    assert helped.returncode == 0 and "prepare" in helped.stdout and "diagnose" in helped.stdout, helped.stderr
    tagged = run(restlit, "tag", '<think>x</think>\n<tool_call>\n{"name": "f", "parameters": {"a": 1}}\n</tool_call>')
    assert tagged.returncode == 0 and "TOOL_NAME 3" in tagged.stdout, tagged.stdout + tagged.stderr

    lines = [{"id": f"level-1-{i}", "output": "<think></think>\n<response>no call</response>"} for i in range(3)]
    lines.append({"id": "simple_python_0", "output": "<think></think>\n<response>no call</response>"})
    (work / "predictions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    scored = run(restlit, "eval", "--suite", "apibank:level-1", "--suite", "bfcl:simple_python", "--limit", "3",
                 "--predictions", "predictions.jsonl", "-o", "scored")
    assert scored.returncode == 0, scored.stdout[-2000:] + scored.stderr[-3000:]
    report = json.loads((work / "scored" / "eval.json").read_text())
    text = json.dumps(report)
    assert "level-1-0" in text and "simple_python_0" in text, text[:2000]

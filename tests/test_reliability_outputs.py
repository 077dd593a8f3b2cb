"""Outputs a user owns are never replaced silently and a run's files stay restlit's (issue 33):
``report -o`` over a user's ``report.md``, ``eval -o`` shared by two evaluations."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from restlit.runtime.owned import MANIFEST
from tests.test_reliability import cli, one_line_error
from tests.test_report import synthetic_run


def test_report_refuses_a_users_report_md_without_overwrite(tmp_path: Path) -> None:
    run = synthetic_run(tmp_path, steps=5)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.md").write_text("my own report")
    one_line_error(cli("report", str(run), "-o", str(out)), "report.md", "--overwrite")
    assert (out / "report.md").read_text() == "my own report"
    res = cli("report", str(run), "-o", str(out), "--overwrite")
    assert res.exit_code == 0, res.output
    assert (out / "report.md").read_text() != "my own report"


def test_a_report_replaces_its_own_earlier_report_and_records_it(tmp_path: Path) -> None:
    run = synthetic_run(tmp_path, steps=5)
    assert cli("report", str(run)).exit_code == 0
    listed = json.loads((run / "report" / MANIFEST).read_text())["files"]
    assert "report.md" in listed and "rewards.png" in listed
    res = cli("report", str(run))  # its own earlier report: replaced without a flag
    assert res.exit_code == 0, res.output


def test_the_demo_closing_table_is_readable_at_80_columns() -> None:
    from rich.console import Console

    from restlit.experiments.demo import closing_table
    from restlit.stats import wilson_interval

    columns = [("heldout format valid", "heldout", "format_validity"),
               ("heldout tool name", "heldout", "tool_name_accuracy"),
               ("heldout param F1", "heldout", "param_f1"),
               ("heldout exact match", "heldout", "exact_match"),
               ("BFCL simple_python", "bfcl:simple_python", "accuracy")]
    cell = {"format_validity": wilson_interval(29, 32), "tool_name_accuracy": wilson_interval(17, 27),
            "param_f1": None, "exact_match": wilson_interval(5, 32)}
    cells = {name: {"heldout": cell, "bfcl:simple_python": {"accuracy": wilson_interval(3, 32)}}
             for name in ("base", "SFT", "ResT")}
    console = Console(width=80, record=True, force_terminal=False)
    console.print(closing_table("restlit demo: SmolLM2-135M, 1234 s in all", columns, cells))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    for whole in ("90.6", "[75.8, 96.8]", "15.6", "[6.9, 31.8]", "ResT", "SFT", "heldout exact match"):
        assert whole in text, text  # no number or name broken across lines


def test_demo_overwrite_refuses_a_file_it_did_not_write(tmp_path: Path, monkeypatch) -> None:
    import pytest

    from restlit.experiments import demo
    from restlit.runtime.outputs import OutputError
    from restlit.runtime.owned import record
    from tests.test_reliability import tiny

    out = tmp_path / "demo"
    (out / "eval" / "base").mkdir(parents=True)
    (out / "eval" / "base" / "eval.json").write_text("{}")
    (out / "demo.json").write_text("{}")
    record(out, ["eval", "demo.json"])
    (out / "eval" / "notes.md").write_text("mine")
    monkeypatch.setattr(demo, "_run_demo", lambda *a, **k: pytest.fail("a stage ran"))
    with pytest.raises(OutputError, match="notes.md"):
        demo.run_demo(tiny(tmp_path, name="demo"), overwrite=True)
    assert (out / "eval" / "notes.md").read_text() == "mine" and (out / "demo.json").is_file()


def test_a_lock_removes_only_the_empty_directory_it_created(tmp_path: Path) -> None:
    from restlit.runtime.outputs import lock

    with lock(tmp_path / "failed"):  # a command that failed before writing anything
        pass
    assert not (tmp_path / "failed").exists()
    (tmp_path / "before").mkdir()
    with lock(tmp_path / "before"):  # the user's own directory stays, even empty
        pass
    assert (tmp_path / "before").is_dir()
    with lock(tmp_path / "wrote") as d:
        (d / "eval.json").write_text("{}")
    assert [p.name for p in (tmp_path / "wrote").iterdir()] == ["eval.json"]


class _StoppedInFinalizer:
    """Sends this process SIGTERM from ``__del__``: the stop's raise lands in a finalizer, where
    Python prints "Exception ignored" and goes on (CI: a fit stopped while preparing its data
    trained to the end and exited 0)."""

    def __del__(self) -> None:
        import signal
        import time

        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handler runs here, inside the finalizer


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowed raise, on purpose
def test_a_stop_swallowed_by_a_finalizer_is_raised_when_the_block_ends() -> None:
    import signal

    from restlit.errors import UserError
    from restlit.runtime.outputs import stop_on_sigterm

    went_on = []
    with pytest.raises(UserError, match="stopped here"), stop_on_sigterm("stopped here"):
        _StoppedInFinalizer()  # dropped at once: its __del__ runs in the block
        went_on.append(True)
    assert went_on == [True]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowed raise, on purpose
def test_a_swallowed_stop_is_raised_before_a_shielded_step_or_a_check() -> None:
    from restlit.errors import UserError
    from restlit.runtime.outputs import raise_if_stopped, sigterm_shield, stop_on_sigterm

    steps = []
    with pytest.raises(UserError, match="stopped here"), stop_on_sigterm("stopped here"):
        _StoppedInFinalizer()
        with sigterm_shield():
            steps.append("shielded")
    assert steps == []
    with pytest.raises(UserError, match="stopped here"), stop_on_sigterm("stopped here"):
        _StoppedInFinalizer()
        raise_if_stopped()
        steps.append("after the check")
    assert steps == []

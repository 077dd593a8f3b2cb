"""Outputs a user owns are never replaced silently and a run's files stay restlit's (issue 33):
``report -o`` over a user's ``report.md``, ``eval -o`` shared by two evaluations."""

from __future__ import annotations

import json
from pathlib import Path

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

"""``restlit prepare`` never loses a user's data and ends every mistake in one line (issue 14):
an earlier output is replaced only with ``--overwrite`` and atomically, files prepare did not write
are never deleted, an unwritable ``-o`` is one line, and records nested too deeply or holding lone
surrogates are rejected with a reason while the rest of the file is kept."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from restlit.cli.main import app
from restlit.data_prep import output, pipeline
from restlit.data_prep.inputs import InputError
from restlit.data_prep.pipeline import prepare
from restlit.data_prep.samples import load_samples
from restlit.runtime.outputs import stop_on_sigterm
from tests.conftest import HAMMER, XLAM, data_file

_TOOLS = json.dumps([{"name": "f", "description": "d", "parameters": {"x": {"type": "int", "description": ""}}}])
_ANSWER = json.dumps([{"name": "f", "arguments": {"x": 1}}])


def _cli(*args: str):
    return CliRunner().invoke(app, ["prepare", *args])


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# an earlier output is kept unless --overwrite


def test_existing_output_refused_without_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _cli(str(data_file(HAMMER)), "-o", str(out)).exit_code == 0
    before = _files(out)
    res = _cli(str(data_file(XLAM)), "-o", str(out))
    assert res.exit_code == 2
    assert res.output == f"error: {out} already holds a prepared dataset; use another -o or --overwrite\n"
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging left behind


def test_overwrite_replaces_the_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare([data_file(HAMMER)], out)
    res = _cli(str(data_file(XLAM)), "-o", str(out), "--overwrite")
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert [i["format"] for i in manifest["inputs"]] == ["xlam"]
    assert sum(load_samples(out)[s].num_rows for s in ("train", "validation")) == 139
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_overwrite_never_deletes_files_prepare_did_not_write(tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare([data_file(HAMMER)], out)
    (out / "notes.txt").write_text("my notes")
    before = _files(out)
    res = _cli(str(data_file(XLAM)), "-o", str(out), "--overwrite")
    assert res.exit_code == 2 and res.output.count("\n") == 1
    assert "notes.txt" in res.output and "did not write" in res.output
    assert _files(out) == before


def test_overwrite_of_a_foreign_directory_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("keep me")
    res = _cli(str(data_file(HAMMER)), "-o", str(out), "--overwrite")
    assert res.exit_code == 2 and "not a prepared dataset" in res.output
    assert (out / "thesis.tex").read_text() == "keep me"


def test_replace_keeps_the_old_output_until_the_new_one_is_complete(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    prepare([data_file(HAMMER)], out)
    before = _files(out)

    def broken_save(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pipeline, "save_dataset", broken_save)
    with pytest.raises(InputError, match="No space left on device"):
        prepare([data_file(XLAM)], out, overwrite=True)
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_old_output_that_cannot_be_moved_keeps_the_new_one_under_a_reported_name(tmp_path: Path,
                                                                                   monkeypatch) -> None:
    out = tmp_path / "out"
    prepare([data_file(HAMMER)], out)
    before = _files(out)
    real_rename = os.rename

    def rename(src, dst):
        if Path(src) == out:
            raise PermissionError(13, "Permission denied")
        return real_rename(src, dst)

    monkeypatch.setattr(output.os, "rename", rename)
    with pytest.raises(InputError) as info:
        prepare([data_file(XLAM)], out, overwrite=True)
    message = str(info.value)
    assert "\n" not in message and "cannot replace" in message
    assert _files(out) == before  # the old output is intact
    (kept,) = [p for p in tmp_path.iterdir() if p.name != "out"]
    assert str(kept) in message  # the new one is kept, under the name the message gives
    assert json.loads((kept / "manifest.json").read_text())["inputs"][0]["format"] == "xlam"


def test_old_output_that_cannot_be_deleted_is_reported(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    prepare([data_file(HAMMER)], out)

    def rmtree(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(output, "rmtree", rmtree)
    manifest = prepare([data_file(XLAM)], out, overwrite=True)
    assert json.loads((out / "manifest.json").read_text())["inputs"][0]["format"] == "xlam"
    (old,) = [p for p in tmp_path.iterdir() if p.name != "out"]
    assert any(str(old) in w for w in manifest.warnings)
    assert (old / "manifest.json").is_file()  # the previous output, moved aside, not lost


def test_unwritable_output_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    res = _cli(str(data_file(HAMMER)), "-o", str(blocker / "out"))
    assert res.exit_code == 2
    assert res.output.count("\n") == 1 and "cannot write" in res.output and str(blocker / "out") in res.output


def test_output_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.write_text("precious")
    res = _cli(str(data_file(HAMMER)), "-o", str(target), "--overwrite")
    assert res.exit_code == 2 and "not a directory" in res.output
    assert target.read_text() == "precious"


# ---------------------------------------------------------------------------------------------
# records that break Python's recursion or pyarrow's UTF-8: rejected with a reason, the rest kept


def _xlam_line(**fields) -> str:
    record = {"id": 0, "query": "q", "tools": _TOOLS, "answers": _ANSWER}
    record.update(fields)
    return json.dumps(record)


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def _deep_tools(depth: int) -> str:
    schema = '{"type": "array", "items": ' * depth + '{"type": "int"}' + "}" * depth  # too deep for json.dumps
    return '[{"name": "f", "description": "d", "parameters": {"x": ' + schema + "}}]"


def _hostile_lines() -> list[str]:
    good = _xlam_line()
    return [
        good,
        good.replace('"answers"', f'"deep": {_deep(100_000)}, "answers"', 1),  # beyond the decoder
        good.replace('"answers"', f'"deep": {_deep(800)}, "answers"', 1),  # deep but unused: kept
        _xlam_line(tools=_deep_tools(2000)),  # a schema nested beyond what the normaliser can walk
        _xlam_line(query="caf\\ud800 au lait").replace("\\\\ud800", "\\ud800"),  # a lone surrogate
        _xlam_line(tools=_TOOLS.replace('"d"', '"\\udfff"')).replace("\\\\udfff", "\\udfff"),
        good,
    ]


@pytest.mark.parametrize("container", ["jsonl", "json_list"])
def test_deep_and_surrogate_records_are_rejected_the_rest_kept(tmp_path: Path, container: str) -> None:
    lines = _hostile_lines()
    path = tmp_path / f"hostile.{container}"
    path.write_text("\n".join(lines) + "\n" if container == "jsonl" else "[" + ",\n".join(lines) + "]")
    assert "\\ud800" in path.read_text()  # the escape itself, as a user's file has it
    out = tmp_path / "out"
    res = _cli(str(path), "-o", str(out), "--val-fraction", "0", "--format", "xlam")
    assert res.exit_code == 0, res.output
    counts = json.loads((out / "manifest.json").read_text())["totals"]
    assert counts["records_read"] == 7 and counts["samples_written"] == 3
    assert counts["rejected"] == {"too_deep": 2, "lone_surrogate": 2}
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [(r["record_index"], r["reason"]) for r in rejects] == [
        (1, "too_deep"), (3, "too_deep"), (4, "lone_surrogate"), (5, "lone_surrogate")]
    assert all(r["detail"] for r in rejects)
    assert rejects[2]["record"]["query"] == "caf\ud800 au lait"  # kept verbatim, readable as JSON


def test_deep_record_in_a_worker_process_is_rejected(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(pipeline, "_PARALLEL_MIN_BYTES", 0)
    path = tmp_path / "deep.jsonl"
    path.write_text("\n".join(_hostile_lines()[:4]) + "\n")
    counts = prepare([path], tmp_path / "out", workers=2, format="xlam").totals
    assert (counts.samples_written, counts.rejected) == (2, {"too_deep": 2})


def test_deep_first_record_does_not_break_detection(tmp_path: Path) -> None:
    path = tmp_path / "deep.jsonl"
    path.write_text("\n".join(['{"deep": ' + _deep(100_000) + "}", _xlam_line()]) + "\n")
    counts = prepare([path], tmp_path / "out", val_fraction=0.0).totals
    assert (counts.samples_written, counts.rejected) == (1, {"too_deep": 1})


def test_staging_is_removed_when_the_run_fails(tmp_path: Path) -> None:
    path = tmp_path / "cut.json"
    path.write_text('[{"id": 0, "query": "q", "tools": "[]", "answers": "[]"}, {"id"')
    with pytest.raises(InputError):
        prepare([path], tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.json"]
    shutil.rmtree(tmp_path / "out", ignore_errors=True)


def test_output_written_by_another_run_meanwhile_is_not_replaced(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    real_save = pipeline.save_dataset
    calls = []

    def save_while_another_run_finishes(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            prepare([data_file(HAMMER)], out)  # the other run, into the same -o
        return real_save(*args, **kwargs)

    monkeypatch.setattr(pipeline, "save_dataset", save_while_another_run_finishes)
    with pytest.raises(InputError, match="while this run prepared") as info:
        prepare([data_file(XLAM)], out)
    assert json.loads((out / "manifest.json").read_text())["inputs"][0]["format"] == "hammer"
    (kept,) = [p for p in tmp_path.iterdir() if p.name != "out"]
    assert str(kept) in str(info.value)
    assert json.loads((kept / "manifest.json").read_text())["inputs"][0]["format"] == "xlam"


def test_sigterm_while_a_worker_is_handed_its_start_waits_for_the_hand_over(tmp_path: Path) -> None:
    """The process pool spawns a worker inside ``submit`` by writing its start-up data to a pipe;
    SIGTERM raised in the middle of that write left the new worker reading a cut pipe, and its
    EOFError traceback reached the user's terminal (CI, test_sigterm_during_prepare_...). The stop
    now waits for ``submit`` to return, and still stops the run."""
    import signal
    import time
    from concurrent.futures import Future

    handed_over: list[int] = []

    class SpawningPool:
        def submit(self, fn, item):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the signal's Python handler runs here, in the middle of the hand-over
            handed_over.append(item)
            future: Future = Future()
            future.set_result(fn(item))
            return future

    with pytest.raises(InputError, match="SIGTERM"), stop_on_sigterm("prepare stopped by SIGTERM", InputError):
        list(pipeline._map_ordered(lambda x: x, iter([1, 2]), SpawningPool(), 4))
    assert handed_over == [1]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_sigterm_that_breaks_the_hand_over_is_still_the_one_line_stop(tmp_path: Path) -> None:
    """When the hand-over fails after the SIGTERM (its workers were stopped too), the user is told
    about the stop, not about the broken pool."""
    import signal

    class BreakingPool:
        def submit(self, fn, item):
            os.kill(os.getpid(), signal.SIGTERM)
            raise RuntimeError("the pool broke")

    with pytest.raises(InputError, match="SIGTERM") as stop, stop_on_sigterm("prepare stopped by SIGTERM", InputError):
        list(pipeline._map_ordered(lambda x: x, iter([1]), BreakingPool(), 4))
    assert isinstance(stop.value.__cause__, RuntimeError)


def test_sigterm_as_the_staging_directory_is_made_is_prepare_s_stop(tmp_path: Path, monkeypatch) -> None:
    """The staging directory was made before prepare's SIGTERM handler was installed: a stop sent
    once it appeared (as a supervisor watching the disk, or fit's own test, would) went to the
    caller's handler, and the run went on to write its output. Now the directory only exists under
    the handler: the stop is prepare's one-line stop, and the directory goes."""
    import signal
    import time

    real = output.staging_dir

    def made_then_stopped(out: Path) -> Path:
        staging = real(out)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handler runs here, as the directory has just appeared
        return staging

    monkeypatch.setattr(output, "staging_dir", made_then_stopped)
    caller: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: caller.append(signum))
    try:
        with pytest.raises(InputError, match="prepare stopped by SIGTERM"):
            prepare([data_file(HAMMER)], tmp_path / "out")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert caller == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowed raise, on purpose
def test_a_stop_swallowed_while_writing_places_nothing(tmp_path: Path, monkeypatch) -> None:
    """SIGTERM whose raise lands in a finalizer (Python prints "Exception ignored" and goes on)
    used to let prepare finish and put its output in place; now the run stops before that."""
    from tests.test_reliability_outputs import _StoppedInFinalizer

    real = pipeline._write

    def write_then_stopped(*args, **kwargs):
        manifest = real(*args, **kwargs)
        _StoppedInFinalizer()
        return manifest

    monkeypatch.setattr(pipeline, "_write", write_then_stopped)
    with pytest.raises(InputError, match="prepare stopped by SIGTERM"):
        prepare([data_file(HAMMER)], tmp_path / "out")
    assert list(tmp_path.iterdir()) == []

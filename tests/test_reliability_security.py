"""What is on disk is never trusted (issue 33, security): a tool schema's ``$ref`` never fetches a
URL or reads a file, a checkpoint cannot run code, writes never follow a symlink restlit did not
make, and ``--overwrite`` removes only what restlit wrote.

Each case was a failure before its fix."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import pytest

from restlit.toolcalls import validate_calls

# ---------------------------------------------------------------- $ref in a tool schema


class _CountingServer:
    """A local HTTP server that counts the GETs it answers (with a permissive schema)."""

    def __init__(self) -> None:
        hits = self.hits = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                body = json.dumps({"type": "string"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/schema.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http_schema():
    server = _CountingServer()
    yield server
    server.close()


def _tool(prop: dict, **extra) -> dict:
    return {"name": "f", "description": "d",
            "parameters": {"type": "object", "properties": {"x": prop}, "required": ["x"], **extra}}


def test_remote_ref_is_never_fetched(http_schema) -> None:
    (v,) = validate_calls([{"name": "f", "arguments": {"x": "a"}}], [_tool({"$ref": http_schema.url})])
    assert http_schema.hits == []
    assert v.kind == "unresolvable_ref" and http_schema.url in v.reason and "\n" not in v.reason


def test_file_ref_is_never_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"type": "integer"}))  # would make "a" a wrong_type if it were read
    (v,) = validate_calls([{"name": "f", "arguments": {"x": "a"}}], [_tool({"$ref": secret.as_uri()})])
    assert v.kind == "unresolvable_ref" and secret.as_uri() in v.reason


@pytest.mark.parametrize("ref", ["#/definitions/missing", "#/$defs/missing", "other.json#/x", "#nope"])
def test_unresolvable_ref_is_a_violation_not_a_traceback(ref: str) -> None:
    (v,) = validate_calls([{"name": "f", "arguments": {"x": "a"}}], [_tool({"$ref": ref})])
    assert v.kind == "unresolvable_ref" and ref.split("#")[0] in v.reason


def test_ref_inside_the_schema_still_resolves() -> None:
    tool = _tool({"$ref": "#/$defs/word"}, **{"$defs": {"word": {"type": "string"}}})
    assert validate_calls([{"name": "f", "arguments": {"x": "a"}}], [tool]) == []
    (v,) = validate_calls([{"name": "f", "arguments": {"x": 1}}], [tool])
    assert v.kind == "wrong_type"
    legacy = _tool({"$ref": "#/definitions/n"}, definitions={"n": {"type": "integer"}})
    assert validate_calls([{"name": "f", "arguments": {"x": 1}}], [legacy]) == []


def test_prepare_rejects_a_record_whose_schema_refers_outside(tmp_path: Path, http_schema) -> None:
    from restlit.data_prep.pipeline import prepare

    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"type": "integer"}))
    lines = []
    for i, ref in enumerate([None, http_schema.url, secret.as_uri(), "#/definitions/x"]):
        prop = {"type": "string"} if ref is None else {"$ref": ref}
        lines.append(json.dumps({"id": i, "query": "q", "tools": json.dumps([_tool(prop)]),
                                 "answers": json.dumps([{"name": "f", "arguments": {"x": "a"}}])}))
    path = tmp_path / "refs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    counts = prepare([path], out, format="xlam", val_fraction=0.0, on_invalid="keep").totals
    assert http_schema.hits == []
    assert (counts.samples_written, counts.rejected) == (1, {"unresolvable_ref": 3})
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [r["record_index"] for r in rejects] == [1, 2, 3] and all(r["detail"] for r in rejects)


# ---------------------------------------------------------------- a checkpoint cannot run code


class _Payload:
    """Pickles to a call of ``open(marker, "w")``: loading it with pickle creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _crafted_run(tmp_path: Path) -> tuple[Path, Path]:
    """A run directory with the tiny config and a ``last.ckpt`` whose step is a code payload."""
    import torch

    from restlit.config import save_config
    from tests.test_reliability import tiny

    run, marker = tmp_path / "run", tmp_path / "pwned"
    config = tiny(tmp_path, "trainer.max_steps=4")
    (run / "checkpoints").mkdir(parents=True)
    save_config(config, run / "config.yaml")
    torch.save({"global_step": _Payload(marker), "state_dict": {}}, run / "checkpoints" / "last.ckpt")
    return run, marker


def test_crafted_checkpoint_is_refused_and_never_runs(tmp_path: Path) -> None:
    from tests.test_reliability import cli_fit, one_line_error

    run, marker = _crafted_run(tmp_path)
    err = one_line_error(cli_fit(run, tmp_path, "--resume", "--set", "trainer.max_steps=4"), "last.ckpt")
    assert "not a checkpoint restlit wrote" in err
    assert not marker.exists()


def test_checkpoint_reader_refuses_a_payload(tmp_path: Path) -> None:
    from restlit.runtime.outputs import OutputError
    from restlit.training.checkpoints import AtomicCheckpointIO, checkpoint_step

    run, marker = _crafted_run(tmp_path)
    with pytest.raises(OutputError, match="not a checkpoint restlit wrote"):
        checkpoint_step(run / "checkpoints" / "last.ckpt")
    with pytest.raises(OutputError, match="not a checkpoint restlit wrote"):
        AtomicCheckpointIO().load_checkpoint(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert not marker.exists()


# ---------------------------------------------------------------- writes never follow a symlink


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    return victim


def test_a_planted_checkpoint_tmp_link_is_not_written_through(tmp_path: Path) -> None:
    from restlit.training.checkpoints import AtomicCheckpointIO, checkpoint_step

    victim = _victim(tmp_path)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    (last.parent / "last.ckpt.tmp").symlink_to(victim)
    AtomicCheckpointIO().save_checkpoint({"global_step": 3}, last)
    assert victim.read_text() == "precious"
    assert checkpoint_step(last) == 3 and not last.is_symlink()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    from restlit.data_prep.pipeline import prepare
    from tests.conftest import HAMMER, data_file

    out = tmp_path_factory.mktemp("prep") / "data"
    prepare([data_file(HAMMER)], out, val_fraction=0.5, workers=1)
    return out


def _eval(prepared: Path, out: Path, *args: str):
    from typer.testing import CliRunner

    from restlit.cli.main import app

    preds = out.parent / "preds.jsonl"
    preds.write_text('{"id": "none", "output": ""}\n')
    return CliRunner().invoke(app, ["eval", "-s", "heldout", "--data", str(prepared), "--predictions", str(preds),
                                    "-o", str(out), *args])


def test_a_planted_eval_tmp_link_is_not_written_through(tmp_path: Path, prepared: Path) -> None:
    victim = _victim(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "eval.json.tmp").symlink_to(victim)
    res = _eval(prepared, out)
    assert res.exit_code == 0, res.output
    assert victim.read_text() == "precious"
    assert json.loads((out / "eval.json").read_text())["summary"]["heldout"]["items"] > 0


def test_a_linked_eval_json_is_refused(tmp_path: Path, prepared: Path) -> None:
    from tests.test_reliability import one_line_error

    victim = _victim(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "eval.json").symlink_to(victim)
    one_line_error(_eval(prepared, out, "--overwrite"), "symbolic link")
    assert victim.read_text() == "precious" and (out / "eval.json").is_symlink()


@pytest.mark.parametrize("name", ["config.yaml", "metrics.csv", "checkpoints", "curriculum/rank0.pt"])
def test_a_linked_file_in_a_run_dir_is_refused_on_resume(tmp_path: Path, name: str) -> None:
    from restlit.config import save_config
    from restlit.training.checkpoints import AtomicCheckpointIO
    from tests.test_reliability import cli_fit, one_line_error, tiny

    run = tmp_path / "run"
    save_config(tiny(tmp_path, "trainer.max_steps=4"), run / "config.yaml")
    (run / "metrics.csv").write_text("step,loss\n0,1.0\n")
    AtomicCheckpointIO().save_checkpoint({"global_step": 1}, run / "checkpoints" / "last.ckpt")
    (run / "curriculum").mkdir()
    (run / "curriculum" / "rank0.pt").write_bytes(b"state")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / name).parent.mkdir(parents=True)
    (run / name).rename(elsewhere / name)
    (run / name).symlink_to(elsewhere / name)
    before = {p.name: p.read_bytes() for p in elsewhere.rglob("*") if p.is_file()}
    one_line_error(cli_fit(run, tmp_path, "--resume", "--set", "trainer.max_steps=4"), name, "symbolic link")
    assert {p.name: p.read_bytes() for p in elsewhere.rglob("*") if p.is_file()} == before


# ---------------------------------------------------------------- --overwrite removes only restlit's files


def _legacy_run(tmp_path: Path) -> Path:
    """A run directory as a restlit without the manifest left it (config, metrics, checkpoints, final)."""
    from restlit.config import save_config
    from tests.test_reliability import tiny

    run = tmp_path / "run"
    save_config(tiny(tmp_path), run / "config.yaml")
    (run / "metrics.csv").write_text("step,loss\n0,1.0\n")
    for name in ("last.ckpt", "step=1.ckpt"):
        (run / "checkpoints").mkdir(exist_ok=True)
        (run / "checkpoints" / name).write_bytes(b"ckpt")
    (run / "final").mkdir()
    (run / "final" / "model.safetensors").write_bytes(b"w")
    return run


@pytest.mark.parametrize("foreign", ["report/notes.md", "wandb/settings", "checkpoints/other.pt", "final/README.md"])
def test_overwrite_refuses_files_restlit_did_not_write(tmp_path: Path, foreign: str) -> None:
    from tests.test_reliability import cli_fit, one_line_error

    run = _legacy_run(tmp_path)
    (run / foreign).parent.mkdir(exist_ok=True)
    (run / foreign).write_text("mine")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    one_line_error(cli_fit(run, tmp_path, "--overwrite"), foreign, "did not write")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_overwrite_keeps_a_foreign_file_of_a_run_with_a_manifest(tmp_path: Path) -> None:
    """A run restlit wrote (with its manifest): its own files go, a file added later is refused."""
    from restlit.runtime.owned import MANIFEST, claim, remove_owned
    from restlit.training.checkpoints import RUN_FILES, is_run_file
    from restlit.training.run import fit
    from tests.test_reliability import tiny

    run = fit(tiny(tmp_path, "trainer.max_steps=1"))
    listed = json.loads((run / MANIFEST).read_text())["files"]
    assert {"config.yaml", "metrics.csv", "checkpoints/last.ckpt", "final/config.json"} <= set(listed)
    (run / "checkpoints" / "other.pt").write_text("mine")
    with pytest.raises(Exception, match="other.pt"):
        claim(run, RUN_FILES, overwrite=True, what="a run", hint="", legacy=is_run_file)
    (run / "checkpoints" / "other.pt").unlink()
    remove_owned(run, claim(run, RUN_FILES, overwrite=True, what="a run", hint="", legacy=is_run_file), RUN_FILES)
    assert sorted(p.name for p in run.iterdir()) == []


def test_a_linked_report_md_is_refused_even_with_overwrite(tmp_path: Path) -> None:
    from tests.test_reliability import cli, one_line_error
    from tests.test_report import synthetic_run

    victim = _victim(tmp_path)
    run = synthetic_run(tmp_path, steps=5)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.md").symlink_to(victim)
    one_line_error(cli("report", str(run), "-o", str(out), "--overwrite"), "symbolic link")
    assert victim.read_text() == "precious"


def test_a_fresh_run_removes_no_empty_directory_a_logger_made(tmp_path: Path) -> None:
    """Nothing to replace: nothing is removed, not even an empty directory (MLflow's ``.trash``)."""
    from restlit.runtime.owned import claim, remove_owned
    from restlit.training.checkpoints import RUN_FILES, is_run_file

    run = tmp_path / "run"
    (run / "mlruns" / ".trash").mkdir(parents=True)
    remove_owned(run, claim(run, RUN_FILES, overwrite=False, what="a run", hint="", legacy=is_run_file), RUN_FILES)
    assert (run / "mlruns" / ".trash").is_dir()

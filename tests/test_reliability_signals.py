"""A run stopped by a signal never looks like a success (issue 33): SIGTERM during ``fit`` or
``sft`` exits non-zero with one line; a fit keeps a checkpoint ``--resume`` continues from."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_reliability import ENV, TINY, steps


def _start(tmp_path: Path, command: str, *sets: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "restlit.cli.main", command, "--config", str(TINY), "--set",
           f"output_dir={tmp_path / 'run'}", "--set", f"data.cache_dir={tmp_path / 'cache'}"]
    for s in sets:
        cmd += ["--set", s]
    return subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _term_when(proc: subprocess.Popen, ready) -> tuple[int, str]:
    """SIGTERM ``proc`` once ``ready()``; its exit status and stderr."""
    deadline = time.monotonic() + 300
    while not ready():
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def _last_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert "Traceback" not in err, err[-3000:]
    return lines[-1] if lines else ""


@pytest.mark.slow
def test_sigterm_during_fit_exits_nonzero_and_keeps_a_resumable_checkpoint(tmp_path: Path) -> None:
    from restlit.training.checkpoints import checkpoint_step

    run = tmp_path / "run"
    proc = _start(tmp_path, "fit", "trainer.max_steps=200", "trainer.checkpoint_every=1000")
    code, err = _term_when(proc, lambda: (run / "metrics.csv").is_file() and 0 in steps(run))
    assert code != 0
    last = _last_line(err)
    assert last.startswith("error: ") and "SIGTERM" in last and "--resume" in last, err[-2000:]
    assert not (run / "final").exists()
    k = checkpoint_step(run / "checkpoints" / "last.ckpt")
    assert 1 <= k < 200 and f"step {k}" in last


@pytest.mark.slow
def test_sigterm_during_sft_exits_nonzero(tmp_path: Path) -> None:
    run = tmp_path / "run" / "sft"
    proc = _start(tmp_path, "sft", "sft.max_steps=500")
    code, err = _term_when(proc, lambda: (run / "metrics.csv").is_file() and len(steps(run)) >= 1)
    assert code != 0
    last = _last_line(err)
    assert last.startswith("error: ") and "SIGTERM" in last and "--resume" not in last, err[-2000:]
    assert not (run / "final").exists()


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _big_xlam_file(path: Path, megabytes: int) -> Path:
    """An xLAM-layout JSON-lines file of about ``megabytes`` MB: long enough to SIGTERM its prepare midway."""
    import json

    line = json.dumps({"id": 0, "query": "q" * 200, "answers": json.dumps([{"name": "f", "arguments": {"x": 1}}]),
                       "tools": json.dumps([{"name": "f", "description": "d" * 100,
                                             "parameters": {"x": {"type": "int", "description": ""}}}])})
    with open(path, "w") as f:
        f.writelines(line.replace('"id": 0', f'"id": {i}', 1) + "\n" for i in range((megabytes << 20) // len(line)))
    return path


@pytest.mark.slow
def test_sigterm_during_prepare_leaves_no_staging_and_no_workers(tmp_path: Path) -> None:
    big = _big_xlam_file(tmp_path / "big.jsonl", megabytes=12)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "restlit.cli.main", "prepare", str(big), "-o", str(out),
                             "--format", "xlam"], cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    workers: list[int] = []

    def working() -> bool:
        workers[:] = [c for c in _children(proc.pid) if _alive(c)]
        return len(workers) >= 2 and any(p.name.startswith(".out.partial") for p in tmp_path.iterdir())

    code, err = _term_when(proc, working)
    assert code != 0
    last = _last_line(err)
    assert last.startswith("error: ") and "SIGTERM" in last, err[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.jsonl"]
    deadline = time.monotonic() + 10
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [w for w in workers if _alive(w)]


@pytest.mark.slow
def test_two_fits_on_a_cold_cache_prepare_it_once(tmp_path: Path) -> None:
    """Two processes prepare the same raw data into one cache entry at once: one prepares, the
    other waits for it and reads the same entry; no ``.new`` copy or staging is left behind."""
    script = ("import sys; from restlit.config import load_config; from restlit.training.data import "
              "ToolUseDataModule; c = load_config(sys.argv[1], ['data.cache_dir=' + sys.argv[2]]); "
              "ToolUseDataModule(c.data, None).prepare_data()")
    cache = tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, "-c", script, str(TINY), str(cache)], cwd=REPO, env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    entries = [p.name for p in cache.iterdir() if not p.name.endswith(".lock")]
    assert len(entries) == 1 and entries[0].startswith("prepared-"), entries


@pytest.mark.slow
def test_the_python_api_is_as_quiet_as_the_command_line(tmp_path: Path) -> None:
    script = ("import sys; from restlit.config import load_config; from restlit.training.run import fit; "
              "fit(load_config(sys.argv[1], ['output_dir=' + sys.argv[2], 'data.cache_dir=' + sys.argv[3], "
              "'trainer.max_steps=1', 'trainer.checkpoint_every=1']))")
    res = subprocess.run([sys.executable, "-c", script, str(TINY), str(tmp_path / "run"), str(tmp_path / "cache")],
                         cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    for noise in ("litlogger", "LeafSpec", "manual optimization", "in eval mode"):
        assert noise not in res.stderr, res.stderr[-3000:]


@pytest.mark.slow
def test_sigterm_while_fit_prepares_raw_data_leaves_no_partial_cache_entry(tmp_path: Path) -> None:
    big = _big_xlam_file(tmp_path / "big.jsonl", megabytes=6)
    cache = tmp_path / "cache"
    proc = _start(tmp_path, "fit", f"data.raw=[{big}]", "data.format=xlam")
    code, err = _term_when(proc, lambda: cache.is_dir() and any(".partial" in p.name for p in cache.iterdir()))
    assert code != 0, err[-3000:]
    last = _last_line(err)
    assert last.startswith("error: ") and "SIGTERM" in last, err[-2000:]
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []


@pytest.mark.slow
def test_sigterm_during_the_final_export_leaves_no_partial_copy_and_says_so(tmp_path: Path) -> None:
    """SIGTERM while ``final/`` is written (after Lightning gave the signal back): one line, no
    temporary copy of the model left in the run directory, and ``--resume`` exports it."""
    script = ("import os, signal, sys; from transformers import PreTrainedModel; "
              "real = PreTrainedModel.save_pretrained\n"
              "def save(self, *a, **k):\n"
              "    real(self, *a, **k); os.kill(os.getpid(), signal.SIGTERM)\n"
              "PreTrainedModel.save_pretrained = save\n"
              "from restlit.cli.main import app; app()")
    run = tmp_path / "run"
    args = ["fit", "--config", str(TINY), "--set", f"output_dir={run}", "--set", f"data.cache_dir={tmp_path / 'c'}",
            "--set", "trainer.max_steps=1"]
    res = subprocess.run([sys.executable, "-c", script, *args], cwd=REPO, env=ENV, capture_output=True, text=True,
                         timeout=600, check=False)
    assert res.returncode != 0
    last = _last_line(res.stderr)
    assert last.startswith("error: ") and "SIGTERM" in last and "--resume" in last, res.stderr[-2000:]
    assert not (run / "final").exists() and not [p for p in run.iterdir() if ".tmp" in p.name]
    res = subprocess.run([sys.executable, "-m", "restlit.cli.main", *args, "--resume"], cwd=REPO, env=ENV,
                         capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (run / "final" / "model.safetensors").is_file()

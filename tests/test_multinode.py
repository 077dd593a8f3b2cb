"""Two nodes simulated on localhost: two ``torchrun --nnodes 2 --nproc-per-node 1`` agents, a c10d
rendezvous on 127.0.0.1, gloo, the tiny config.

The two ranks together must train exactly what one process given both prompts trains (same
curriculum state, same weights), write one ``metrics.csv`` and one ``final/`` (global rank 0
only), and resume the same way. Every address is the loopback; the processes are killed on failure.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO, free_port

TORCHRUN = Path(sys.executable).with_name("torchrun")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "GLOO_SOCKET_IFNAME": "lo"}


def _fit_args(out: Path, cache: Path, *extra: str) -> list[str]:
    """``restlit fit`` on the tiny config with a reward that varies (``tests/multinode_fit.py``)."""
    return ["-m", "tests.multinode_fit", f"output_dir={out}", f"data.cache_dir={cache}", "trainer.checkpoint_every=1",
            *extra]


def _two_nodes(args: list[str], timeout: float = 600) -> None:
    """Run ``python <args>`` as two torchrun agents (node ranks 0 and 1) on 127.0.0.1."""
    port = free_port()
    procs = []
    try:
        for node in (0, 1):
            cmd = [str(TORCHRUN), "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(node),
                   "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "restlit-test",
                   "--local-addr", "127.0.0.1", *args,
                   "trainer.num_nodes=2", "trainer.devices=1", "trainer.strategy=ddp", "trainer.prompts_per_step=1"]
            procs.append(subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True, start_new_session=True))
        outputs = [p.communicate(timeout=timeout)[0] for p in procs]
        for p, out in zip(procs, outputs):
            assert p.returncode == 0, out[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def _curriculum(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["callbacks"]["EntropyCurriculum"]


@pytest.mark.slow
def test_two_nodes_train_as_one_process_write_once_and_resume(tmp_path):
    cache = tmp_path / "cache"
    single = tmp_path / "single"
    res = subprocess.run([sys.executable, *_fit_args(single, cache, "trainer.max_steps=3", "trainer.prompts_per_step=2")],
                         cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-3000:]

    nodes = tmp_path / "nodes"  # a fresh data cache: global rank 0 prepares it, rank 1 waits
    _two_nodes(_fit_args(nodes, tmp_path / "cache-nodes", "trainer.max_steps=2"))
    assert torch.load(nodes / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2
    _two_nodes([*_fit_args(nodes, tmp_path / "cache-nodes", "trainer.max_steps=3"), "--resume"])

    # the same curriculum state as one process, on both ranks
    one, two = _curriculum(single), _curriculum(nodes)
    assert two["steps"] == one["steps"] == 3 and two["progress"] == one["progress"]
    assert torch.allclose(one["running"], two["running"], rtol=1e-4, atol=1e-6)
    r0, r1 = (torch.load(nodes / "curriculum" / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert torch.equal(r0["running"], r1["running"]) and r0["progress"] == r1["progress"]

    # the same weights as one process
    w1, w2 = load_file(single / "final" / "model.safetensors"), load_file(nodes / "final" / "model.safetensors")
    assert w1.keys() == w2.keys()
    for key in w1:
        assert torch.allclose(w1[key], w2[key], rtol=1e-4, atol=1e-6), key
    assert not torch.equal(w2["model.norm.weight"], torch.ones_like(w2["model.norm.weight"]))  # it did train

    # written once, by global rank 0: one metrics.csv with one row per step, one final/, one config.yaml
    assert [p.relative_to(nodes) for p in nodes.rglob("metrics.csv")] == [Path("metrics.csv")]
    assert [p.relative_to(nodes) for p in nodes.rglob("final")] == [Path("final")]
    assert [p.relative_to(nodes) for p in nodes.rglob("config.yaml")] == [Path("config.yaml")]
    with open(nodes / "metrics.csv") as f:
        header, *lines = f.read().splitlines()
    step = header.split(",").index("step")
    assert [int(float(line.split(",")[step])) for line in lines] == [0, 1, 2]
    skipped = header.split(",").index("skipped")
    assert [float(line.split(",")[skipped]) for line in lines] == [0.0, 0.0, 0.0]  # every step updated
    assert not (nodes / ".restlit.lock").exists()
    assert len(list((tmp_path / "cache-nodes").glob("prepared-*/manifest.json"))) == 1


def test_the_two_node_recipe_keeps_the_papers_global_batch():
    from restlit.config import load_config

    one = load_config(REPO / "configs" / "qwen3-4b-fsdp.yaml").trainer
    two = load_config(REPO / "configs" / "qwen3-4b-fsdp-2node.yaml").trainer
    assert two.num_nodes == 2 and two.devices == 8
    assert two.num_nodes * two.devices * two.prompts_per_step == one.devices * one.prompts_per_step == 512


def test_the_data_split_over_nodes_times_devices_ranks_is_one_process_batch():
    """4 ranks (2 nodes x 2 devices) together take exactly the prompts one process with 4x the batch takes."""
    from restlit.training.data import PromptItem, StepBatches

    items = [PromptItem(str(i), [i], {}, "") for i in range(7)]
    whole = StepBatches(items, per_rank=8, world=1, rank=0, seed=3)
    ranks = [StepBatches(items, per_rank=2, world=4, rank=r, seed=3) for r in range(4)]
    for step in range(3):
        assert [it.id for r in ranks for it in r.batch(step)] == [it.id for it in whole.batch(step)]


def test_raw_data_is_prepared_once_by_global_rank_zero():
    """Lightning calls prepare_data on global rank 0 only (not once per node) and the other ranks
    wait at its barrier: two nodes never write one shared cache entry at once."""
    from restlit.config import DataConfig
    from restlit.training.data import ToolUseDataModule

    assert ToolUseDataModule(DataConfig(), tokenizer=None).prepare_data_per_node is False

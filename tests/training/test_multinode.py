"""Two torchrun agents on this machine as two "nodes" (c10d rendezvous on 127.0.0.1, 2 nodes x 2
processes) train the tiny SFT with the same loss sequence as one process — with one flat FSDP2 mesh
over the 4 ranks, and with hybrid_shard (replicate across the nodes, shard within each)."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from psr.training.metrics import read_metrics
from fakes import run_cmd

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "eft_ift_sft.py"
COMMON = ["epochs=1", "batch_size=8", "micro_batch_size=2", "progress_bar=false"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = run_cmd([sys.executable, RECIPE, "--config", "tiny/eft_ift_sft", f"output_dir={out}", *COMMON],
                timeout_s=900, cwd=REPO, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("hybrid", [False, True])
def test_two_nodes_of_two_match_one_process(tmp_path, one_process, hybrid):
    inputs = [f"model_dir={one_process / 'tiny_model'}", f"ift_data={one_process / 'tiny_data' / 'ift.jsonl'}",
              f"eft_data={one_process / 'tiny_data' / 'eft.jsonl'}"]
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "2",
           "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", f"psr-{port}",
           "--max_restarts", "0", str(RECIPE), "--config", "tiny/eft_ift_sft", "tiny=false",
           f"output_dir={tmp_path / 'multi'}", f"hybrid_shard={str(hybrid).lower()}", *inputs, *COMMON]
    # each agent in its own process group: a hung run is killed whole, ranks included
    agents = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               start_new_session=True) for _ in range(2)]
    limit = 900 * float(os.environ.get("PSR_TEST_TIMEOUT_SCALE", "1"))
    try:
        outs = [a.communicate(timeout=limit) for a in agents]
    finally:
        for a in agents:
            if a.poll() is None:
                os.killpg(a.pid, signal.SIGKILL)
    for a, (_, err) in zip(agents, outs):
        assert a.returncode == 0, err[-3000:]
    single = [r["loss"] for r in read_metrics(one_process / "metrics.jsonl")]
    multi = [r["loss"] for r in read_metrics(tmp_path / "multi" / "metrics.jsonl")]
    assert len(single) == len(multi) == 8
    assert multi == pytest.approx(single, rel=1e-4, abs=1e-5)
    cfg = json.loads((tmp_path / "multi" / "final" / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen2ForCausalLM"]

"""The documented commands work (issue 17.5): every configs/tiny/* training config runs as
shipped with 1 and with 2 processes (``psr run --nproc_per_node 2 step_dpo --config tiny/step_dpo``
failed on the batch-size check before), ends with one line naming its outputs, and a plain re-run
of the finished dir continues (nothing left to train) instead of starting over."""

import json
import os
import sys
from pathlib import Path

import pytest

from fakes import run_cmd

REPO = Path(__file__).resolve().parents[2]
TRAINING = sorted(p.stem for p in (REPO / "configs" / "tiny").glob("*.yaml")
                  if p.stem in ("eft_ift_sft", "prm_train", "step_dpo"))


def psr_run(*args, timeout=900):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return run_cmd([sys.executable, "-m", "psr.cli", "run", *args], timeout, cwd=REPO, env=env)


def test_every_tiny_training_config_is_covered():
    assert TRAINING == ["eft_ift_sft", "prm_train", "step_dpo"]


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, 2])
@pytest.mark.parametrize("recipe", TRAINING)
def test_tiny_training_config_runs_as_documented(tmp_path, recipe, nproc):
    launch = ["--nproc_per_node", str(nproc)] if nproc > 1 else []
    out = tmp_path / recipe
    r = psr_run(*launch, recipe, "--config", f"tiny/{recipe}", f"output_dir={out}", "progress_bar=false")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith(f"{recipe}: ") and f"-> model {out / 'final'}" in last
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world_size"] == nproc and summary["final_loss"] < summary["first_loss"]
    again = psr_run(*launch, recipe, "--config", f"tiny/{recipe}", f"output_dir={out}", "progress_bar=false")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing left to train (already complete)" in again.stdout.strip().splitlines()[-1]
    assert json.loads((out / "train_summary.json").read_text()) == summary

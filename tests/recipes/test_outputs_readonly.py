"""Inputs are read-only (issue 21): tiny mode builds only under output_dir, a model_dir / data
given with tiny mode is used read-only or refused, an output_dir inside an input dir is refused,
the model-dir writers refuse a dir they did not write. Checked on a "real" sharded model dir
(model-0000k-of-0000N.safetensors + index, no model.safetensors) whose file hashes must not change."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def cli(*args, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "psr.cli", "run", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def hashes(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def real_model(tmp_path_factory):
    """A loadable model stored the way downloaded checkpoints are: sharded safetensors with an
    index, no model.safetensors, no psr manifest."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from psr.models.tiny import build_tiny_model_dir

    src = build_tiny_model_dir(tmp_path_factory.mktemp("src") / "m", seed=7)
    real = tmp_path_factory.mktemp("hub") / "Qwen2.5-Math-7B"
    AutoModelForCausalLM.from_pretrained(src).save_pretrained(real, max_shard_size="200KB")
    AutoTokenizer.from_pretrained(src).save_pretrained(real)
    names = {p.name for p in real.iterdir()}
    assert "model.safetensors" not in names and "model.safetensors.index.json" in names
    assert sum(n.startswith("model-0000") for n in names) >= 2
    return real


def test_tiny_training_with_a_real_model_dir_uses_it_read_only(real_model, tmp_path):
    before = hashes(real_model)
    out = tmp_path / "sft"
    r = cli("eft_ift_sft", "--config", "tiny/eft_ift_sft", f"output_dir={out}", f"model_dir={real_model}",
            "epochs=1", "progress_bar=false")
    assert r.returncode == 0, r.stderr[-3000:]
    assert hashes(real_model) == before
    assert not (out / "tiny_model").exists() and (out / "tiny_data" / "ift.jsonl").exists()  # only the unset data built
    m = json.loads((out / "manifest.json").read_text())
    assert m["models"]["model_dir"]["path"] == str(real_model.resolve())


@pytest.mark.parametrize("recipe, key", [("step_dpo", "pairs"), ("prm_train", "data"), ("eft_ift_sft", "ift_data")])
def test_tiny_mode_never_creates_a_missing_input(tmp_path, recipe, key):
    missing = tmp_path / "elsewhere" / "in.jsonl"
    r = cli(recipe, "--config", f"tiny/{recipe}", f"output_dir={tmp_path / 'o'}", f"{key}={missing}", timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [f"error: {key}={missing}: no such file"]
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "o").exists()
    r = cli(recipe, "--config", f"tiny/{recipe}", f"output_dir={tmp_path / 'o'}", f"model_dir={tmp_path / 'm'}",
            timeout=120)
    assert r.returncode == 2 and "model_dir=" in r.stderr and not (tmp_path / "m").exists()


def test_eval_tiny_model_is_built_only_under_output_dir(real_model, tmp_path):
    r = cli("eval", "--config", "tiny/eval", f"output_dir={tmp_path / 'o'}", f"model_dir={tmp_path / 'new_model'}",
            timeout=120)
    assert r.returncode == 2 and "tiny model is built only under output_dir" in r.stderr
    assert not (tmp_path / "new_model").exists() and not (tmp_path / "o").exists()


@pytest.mark.parametrize("recipe", ["eval", "step_search", "step_dpo", "eft_ift_sft", "prm_train"])
def test_output_dir_inside_the_input_model_dir_is_refused(real_model, tmp_path, recipe):
    before = hashes(real_model)
    out = real_model / "runs" / "x"
    r = cli(recipe, "--config", f"tiny/{recipe}", f"output_dir={out}", f"model_dir={real_model}", timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip().splitlines() == [
        f"error: output_dir={out} is inside the input model_dir={real_model}: inputs are read-only, "
        "choose an output_dir outside it"]
    assert hashes(real_model) == before and not (real_model / "runs").exists()


def test_model_dir_writers_refuse_a_real_model_dir(real_model, tmp_path):
    from psr.config import ConfigError
    from psr.models import smollm2 as S
    from psr.models.tiny import build_tiny_model_dir

    before = hashes(real_model)
    with pytest.raises(ConfigError, match="not written by psr.models.tiny"):
        build_tiny_model_dir(real_model)
    assert S.main(["--out", str(real_model), "--wheel", str(tmp_path)]) == 2
    with pytest.raises(S.ConversionError, match="--force"):
        S.convert_gguf(tmp_path / "x.gguf", real_model)
    assert hashes(real_model) == before

"""The big-model path on CPU: meta-device build, per-rank slice loads, sharded saves.

A plain one-process ``from_pretrained`` is the reference: the sharded setup under torchrun (2 and 4
gloo processes) must give the same logits, hold only its share of the parameters on each rank, and
save a dir (several safetensors files + index) that transformers reloads with equal logits — for a
tied Llama (SmolLM2's architecture) and an untied Qwen2 whose row counts do not split evenly."""

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from psr.models.hf import load_model_for_training, parse_size, save_model_dir, weight_files
from psr.models.tiny import build_tiny_tokenizer
from psr.testing import build_tiny_llama_dir
from psr.training.fsdp import check_launch, setup_model
from psr.config import ConfigError
from fakes import run_cmd

REPO = Path(__file__).resolve().parents[2]
WORKER = REPO / "tests" / "assets" / "fsdp_load_save.py"
INPUT_IDS = torch.tensor([[3, 9, 27, 81, 243, 100, 7], [5, 4, 3, 2, 1, 0, 11]])


def build_untied_qwen2_dir(path: Path) -> Path:
    """Qwen2 with an untied head and row counts that 2 and 4 shards split unevenly (vocab 515,
    MLP 130), saved as two safetensors files with an index, as big checkpoints are."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = build_tiny_tokenizer()
    cfg = Qwen2Config(vocab_size=515, hidden_size=60, intermediate_size=130, num_hidden_layers=2,
                      num_attention_heads=3, num_key_value_heads=1, max_position_embeddings=256,
                      tie_word_embeddings=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      rope_theta=5000.0)
    torch.manual_seed(7)
    model = Qwen2ForCausalLM(cfg).eval()
    model.save_pretrained(path, max_shard_size="60KB")
    tok.save_pretrained(path)
    return path


def hf_logits(model_dir: Path) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    with torch.no_grad():
        return model(input_ids=INPUT_IDS).logits


def file_hashes(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return [build_tiny_llama_dir(root / "llama_tied", seed=4), build_untied_qwen2_dir(root / "qwen2_untied")]


def test_untied_fixture_is_a_multi_file_checkpoint(model_dirs):
    files = set(weight_files(model_dirs[1]).values())
    assert len(files) >= 2 and (model_dirs[1] / "model.safetensors.index.json").exists()


@pytest.mark.parametrize("which", [0, 1])
def test_one_process_setup_matches_from_pretrained(model_dirs, which):
    d = model_dirs[which]
    setup = setup_model(str(d), device="cpu", dtype="float32")
    model = setup.model.eval()
    assert not setup.sharded
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=INPUT_IDS).logits, hf_logits(d), rtol=0, atol=0)
    ref = load_model_for_training(d)
    rotary = model.model.rotary_emb
    assert rotary.inv_freq.device.type == "cpu"
    torch.testing.assert_close(rotary.inv_freq, ref.model.rotary_emb.inv_freq, rtol=0, atol=0)
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == (which == 0)


def test_missing_weight_is_named(tmp_path, model_dirs):
    src = model_dirs[1]
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (bad / name).write_bytes((src / name).read_bytes())
    tensors = {}
    for f in sorted(set(weight_files(src).values())):
        tensors.update(load_file(str(f)))
    del tensors["lm_head.weight"]
    from safetensors.torch import save_file

    save_file(tensors, str(bad / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(KeyError, match="no weight 'lm_head.weight'"):
        load_model_for_training(bad)


def test_not_a_model_dir_is_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an HF model dir"):
        setup_model(str(tmp_path), device="cpu")


@pytest.mark.parametrize("nproc", [2, 4])
def test_sharded_setup_matches_one_process_and_saves_a_reloadable_sharded_dir(tmp_path, model_dirs, nproc):
    before = [file_hashes(d) for d in model_dirs]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = run_cmd([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                 str(nproc), str(WORKER), str(tmp_path), *model_dirs], timeout_s=900, cwd=REPO, env=env)
    assert p.returncode == 0, p.stderr[-4000:]
    for k, d in enumerate(model_dirs):
        ref = hf_logits(d)
        got = load_file(str(tmp_path / f"logits_{k}.safetensors"))["logits"]
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
        facts = json.loads((tmp_path / f"facts_{k}.json").read_text())
        assert len(facts) == nproc and all(f["sharded"] for f in facts)
        total = facts[0]["total_params"]
        # every rank holds about 1/nproc of the parameters, together exactly one copy
        assert sum(f["local_params"] for f in facts) == total
        assert max(f["local_params"] for f in facts) <= total / nproc * 1.1
        assert all(f["tied"] for f in facts) == (k == 0)
        saved = tmp_path / f"saved_{k}"
        index = json.loads((saved / "model.safetensors.index.json").read_text())
        shard_files = sorted(set(index["weight_map"].values()))
        assert len(shard_files) >= 3 and all((saved / f).exists() for f in shard_files)
        n = len(shard_files)
        assert shard_files == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
        assert ("lm_head.weight" in index["weight_map"]) == (k == 1)
        assert index["metadata"]["total_size"] == total * 4
        torch.testing.assert_close(hf_logits(saved), ref, rtol=0, atol=0)
        arch = json.loads((saved / "config.json").read_text())["architectures"]
        assert arch == [("LlamaForCausalLM", "Qwen2ForCausalLM")[k]]  # not fully_shard's FSDP subclass
    assert [file_hashes(d) for d in model_dirs] == before  # inputs are read, never written


def test_save_splits_by_max_shard_size_and_casts(tmp_path, model_dirs):
    model = load_model_for_training(model_dirs[1])
    tok = build_tiny_tokenizer()
    one = save_model_dir(model, tok, tmp_path / "one", dtype="bfloat16")
    assert not (one / "model.safetensors.index.json").exists()
    sd = load_file(str(one / "model.safetensors"))
    assert all(v.dtype == torch.bfloat16 for v in sd.values())
    assert json.loads((one / "config.json").read_text())["dtype"] == "bfloat16"
    many = save_model_dir(model, tok, tmp_path / "many", max_shard_size="30KB")
    index = json.loads((many / "model.safetensors.index.json").read_text())
    for f in set(index["weight_map"].values()):
        sizes = sum(t.numel() * 4 for t in load_file(str(many / f)).values())
        # a file holds at most max_shard_size, unless one tensor alone is bigger
        assert sizes <= 30_000 or len(load_file(str(many / f))) == 1


def test_parse_size():
    assert parse_size("5GB") == 5 * 10**9 and parse_size("2GiB") == 2 * 2**30 and parse_size(123) == 123
    assert parse_size("500 MB") == 500 * 10**6
    for bad in ("five", "-1GB", "3XB", "0"):
        with pytest.raises(ValueError, match="max_shard_size"):
            parse_size(bad)


def test_inconsistent_multinode_launch_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "6")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("GROUP_WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match=r"WORLD_SIZE=6 but GROUP_WORLD_SIZE=2 nodes x LOCAL_WORLD_SIZE=2"):
        check_launch()
    monkeypatch.setenv("WORLD_SIZE", "4")
    check_launch(hybrid_shard=True)  # 2 nodes x 2: consistent
    monkeypatch.delenv("GROUP_WORLD_SIZE")
    monkeypatch.setenv("WORLD_SIZE", "5")
    with pytest.raises(ConfigError, match="hybrid_shard=true needs whole nodes: WORLD_SIZE=5"):
        check_launch(hybrid_shard=True)


def test_cpu_offload_on_cpu_is_refused(monkeypatch, model_dirs):
    import psr.training.fsdp as F

    monkeypatch.setattr(F.D, "init_distributed", lambda dev: True)
    monkeypatch.setattr(F.D, "get_world_size", lambda: 2)
    with pytest.raises(ConfigError, match="cpu_offload=true needs a GPU"):
        setup_model(str(model_dirs[0]), device="cpu", cpu_offload=True)

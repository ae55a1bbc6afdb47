"""Loading HF model dirs for training (Qwen2 and Llama-family) and saving dirs transformers reloads."""

import pytest
import torch
from omegaconf import OmegaConf

from psr.models.hf import load_model_for_training, save_model_dir
from psr.models.tiny import build_tiny_model_dir
from psr.testing import build_tiny_llama_dir
from psr.training.forward import labeled_logits
from psr.training.loop import TrainConfig, setup_from_config, train
from psr.training.losses import sft_loss
from psr.training.sft_data import collate_sft, encode_example


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_train_save_reload_same_logits(tmp_path, family):
    from transformers import AutoModelForCausalLM

    src = (build_tiny_llama_dir if family == "llama" else build_tiny_model_dir)(tmp_path / "src", seed=2)
    cfg = OmegaConf.structured(TrainConfig)
    cfg.merge_with({"output_dir": str(tmp_path / "out"), "model_dir": str(src), "device": "cpu", "batch_size": 2,
                    "micro_batch_size": 1, "lr": 1e-2, "epochs": 1, "warmup_steps": 0, "progress_bar": False})
    setup = setup_from_config(cfg)
    assert type(setup.model).__name__ == ("LlamaForCausalLM" if family == "llama" else "Qwen2ForCausalLM")
    tok = setup.tokenizer
    examples = [encode_example(tok, f"q{i}\n", f"Step 1: answer {i}", 64)[0] for i in range(4)]

    def loss_fn(model, b):
        logits, targets = labeled_logits(model, b["input_ids"], b["attention_mask"], b["labels"])
        return sft_loss(logits, targets)[0], {}

    res = train(cfg, setup, examples, [len(e) for e in examples], lambda ex: collate_sft(ex, tok.pad_token_id), loss_fn)
    assert res.steps == 2 and res.final_dir.resolve().name == "epoch_1"
    reloaded = AutoModelForCausalLM.from_pretrained(str(res.final_dir)).eval()
    x = torch.tensor([[3, 9, 27, 81, 243]])
    with torch.no_grad():
        torch.testing.assert_close(setup.model.eval()(input_ids=x).logits, reloaded(input_ids=x).logits, rtol=0, atol=1e-5)
        before = load_model_for_training(src).eval()(input_ids=x).logits
    assert (before - reloaded(input_ids=x).logits).abs().max() > 1e-3


def test_save_dtype_bf16_and_tokenizer_files(tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    src = build_tiny_model_dir(tmp_path / "src")
    model = load_model_for_training(src)
    tok = AutoTokenizer.from_pretrained(str(src))
    out = save_model_dir(model, tok, tmp_path / "bf16", dtype="bfloat16")
    assert AutoConfig.from_pretrained(str(out)).dtype == torch.bfloat16
    assert (out / "tokenizer.json").exists() and (out / "generation_config.json").exists()
    assert not (tmp_path / "bf16.tmp").exists()
    assert AutoTokenizer.from_pretrained(str(out)).eos_token == "<|im_end|>"
    # the tied embedding / LM head is cast once and written once, as save_pretrained does for fp32
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert model.config.tie_word_embeddings and "model.embed_tokens.weight" in keys and "lm_head.weight" not in keys


def test_bf16_compute_keeps_fp32_master_weights_and_learns(tmp_path):
    from transformers import AutoConfig

    src = build_tiny_model_dir(tmp_path / "src", seed=3)
    cfg = OmegaConf.structured(TrainConfig)
    cfg.merge_with({"output_dir": str(tmp_path / "out"), "model_dir": str(src), "device": "cpu", "dtype": "bfloat16",
                    "batch_size": 4, "micro_batch_size": 4, "lr": 3e-3, "epochs": 6, "warmup_steps": 0,
                    "save_dtype": "bfloat16", "progress_bar": False})
    setup = setup_from_config(cfg)
    assert setup.use_autocast and setup.compute_dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in setup.model.parameters())
    tok = setup.tokenizer
    examples = [encode_example(tok, f"q{i}\n", f"Step 1: the answer is {i}", 64)[0] for i in range(4)]

    def loss_fn(model, b):
        logits, targets = labeled_logits(model, b["input_ids"], b["attention_mask"], b["labels"])
        assert logits.dtype == torch.bfloat16  # computed in bf16
        return sft_loss(logits, targets)[0], {}

    res = train(cfg, setup, examples, [len(e) for e in examples], lambda ex: collate_sft(ex, tok.pad_token_id), loss_fn)
    assert res.steps == 6 and res.losses[-1] < res.losses[0] - 0.5
    assert all(p.dtype == torch.float32 for p in setup.model.parameters())
    assert AutoConfig.from_pretrained(str(res.final_dir)).dtype == torch.bfloat16

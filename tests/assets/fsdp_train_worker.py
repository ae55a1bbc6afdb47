"""torchrun (or plain) worker for tests/training/test_fsdp_training.py.

    fsdp_train_worker.py variants OUT MODEL_DIR     one SFT step per FSDP2 variant (fp32, activation
                                                    checkpointing, no reshard after forward, bf16
                                                    mixed precision): loss, grad norm, param checksum
    fsdp_train_worker.py train OUT MODEL_DIR        psr.training.loop.train on tiny SFT data
                                                    (PSR_FAULT_AFTER_STEP kills it after a step)
"""

import json
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from psr import distributed as D
from psr.training.forward import labeled_logits
from psr.training.fsdp import clip_grad_norm, setup_model
from psr.training.losses import sft_loss
from psr.training.loop import TrainConfig, setup_from_config, train
from psr.training.optim import build_optimizer
from psr.training.sft_data import collate_sft, encode_example

VARIANTS = {
    "fp32": {},
    "checkpointing": {"activation_checkpointing": True},
    "no_reshard": {"reshard_after_forward": False},
    "bf16": {"dtype": "bfloat16"},
}


def batch(tok):
    examples = [encode_example(tok, f"What is {i} + {i}?\n", f"Step 1: {i} + {i} = {2 * i}. \\boxed{{{2 * i}}}", 64)[0]
                for i in range(4)]
    return collate_sft(examples, tok.pad_token_id)


def checksum(model) -> float:
    total = 0.0
    for p in model.parameters():
        full = p.full_tensor() if hasattr(p, "full_tensor") else p
        total += float(full.double().abs().sum())
    return total


def variants(out: Path, model_dir: str) -> None:
    res = {}
    for name, kw in VARIANTS.items():
        setup = setup_model(model_dir, device="cpu", **{"dtype": "float32", **kw})
        model = setup.model
        opt = build_optimizer(model, 1e-2)
        b = batch(setup.tokenizer)
        with setup.autocast():
            logits, targets = labeled_logits(model, b["input_ids"], b["attention_mask"], b["labels"])
            loss_sum, n = sft_loss(logits, targets)
        loss = loss_sum / n
        loss.backward()
        norm = clip_grad_norm(model, 1.0)
        opt.step()
        res[name] = {"loss": float(loss), "grad_norm": norm, "checksum": checksum(model),
                     "logits_dtype": str(logits.dtype),
                     "param_dtypes": sorted({str(p.dtype) for p in model.parameters()}),
                     "local_fraction": sum(p.to_local().numel() for p in model.parameters())
                     / sum(p.numel() for p in model.parameters())}
    if D.is_rank0():
        (out / "variants.json").write_text(json.dumps(res))
    D.barrier()


def train_run(out: Path, model_dir: str) -> None:
    cfg = OmegaConf.structured(TrainConfig)
    cfg.merge_with({"output_dir": str(out), "model_dir": model_dir, "device": "cpu", "batch_size": 4,
                    "micro_batch_size": 2 // D.get_world_size() or 1, "lr": 1e-2, "epochs": 2, "warmup_steps": 0,
                    "save_every_n_steps": 1, "progress_bar": False, "length_grouped": False})
    setup = setup_from_config(cfg)
    tok = setup.tokenizer
    examples = [encode_example(tok, f"q{i}\n", f"Step 1: answer {i} is \\boxed{{{i}}}", 64)[0] for i in range(8)]
    res = train(cfg, setup, examples, [len(e) for e in examples], lambda ex: collate_sft(ex, tok.pad_token_id),
                lambda m, b: (sft_loss(*labeled_logits(m, b["input_ids"], b["attention_mask"], b["labels"]))[0], {}))
    if D.is_rank0():
        (out / "losses.json").write_text(json.dumps(res.losses))


if __name__ == "__main__":
    mode, out, model_dir = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    (variants if mode == "variants" else train_run)(out, model_dir)
    D.destroy()

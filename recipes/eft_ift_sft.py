r"""eft_ift_sft: supervised fine-tuning M0 → M1 on IFT + EFT data (paper §3.2).

Launch (from the repository root):

    psr run eft_ift_sft --config tiny/eft_ift_sft output_dir=/tmp/sft          # tiny model + data it builds itself, < 1 min on CPU
    psr run --nproc_per_node 2 eft_ift_sft --config tiny/eft_ift_sft output_dir=/tmp/sft
    python recipes/eft_ift_sft.py --config configs/tiny/eft_ift_sft.yaml output_dir=/tmp/sft
    PYTHONPATH=. tune run recipes/eft_ift_sft.py --config configs/tiny/eft_ift_sft.yaml output_dir=/tmp/sft
    torchrun --nproc_per_node 8 recipes/eft_ift_sft.py --config configs/qwen2_5_math_7b/eft_ift_sft.yaml \
        model_dir=/ckpt/Qwen2.5-Math-7B ift_data=/data/ift.jsonl eft_data=/data/eft_train.jsonl output_dir=/ckpt/M1
    ... the same command again             # continues a killed run exactly where its last save left it

Re-runs: ``manifest.json`` in output_dir records the settings, the model's identity and each data
file's (psr/outputs.py). A re-run with the same ones continues the checkpoint in output_dir; one
with others is refused with the keys that differ (``overwrite=true`` replaces the dir). With
``tiny=true`` the tiny model and data are built only under output_dir, for the keys left unset;
a model_dir or data file given is an input, read-only.

Data (schemas in psr/data/schemas.py; every line is validated before training starts, a bad one
is an error naming file:line):
    IFT {id, question, steps[]}  → prompt chat(tok, Figure 4 with the question), response
                                   "Step 1: …\nStep 2: … \boxed{…}" + EOS
    EFT {id, question, prev_steps[], step_a, step_b, judgment, label}
                                 → prompt chat(tok, Figure 5), response the judgment ending in
                                   [[A]]/[[B]] + EOS
    TEXT {id, prompt, response} → prompt and response as is (no chat template; e.g. M0 from a
                                   base model) + EOS
The loss is cross-entropy on response tokens only (EOS included), averaged over all response
tokens of the global batch. ``eft_fraction`` sets the mixture (null = all records, the paper's
reading); ``length_grouped`` batches similar lengths together (no packing: without
variable-length attention kernels packed examples would attend to each other).

Outputs (in output_dir): epoch_<e>/ (and step_<n>/) HF model dirs, final -> the last one,
resume_state/, metrics.jsonl (loss, lr, grad_norm, tokens_per_second(_per_gpu), peak_memory_* per
step; ``metric_logger._component_=`` picks another logger, e.g. torchtune's WandBLogger),
train_summary.json (example counts, truncated/dropped, steps, final loss).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from psr import distributed as D
from psr import outputs as O
from psr.config import ConfigError, recipe_main
from psr.data.schemas import load_eft, load_ift, load_text
from psr.models.hf import load_tokenizer
from psr.training.forward import labeled_logits
from psr.training.losses import sft_loss
from psr.training.loop import TrainConfig, setup_from_config, train
from psr.training.sft_data import build_sft_examples, collate_sft, mixture_indices


@dataclass
class EftIftSftConfig(TrainConfig, O.RunKeys):
    # IFT jsonl file(s): a path or a list of paths.
    ift_data: Any = None
    # EFT jsonl file(s): a path or a list of paths.
    eft_data: Any = None
    # TEXT jsonl file(s) {id, prompt, response}: plain continuation without chat template (e.g. M0
    # from a base model); mixed in like IFT.
    text_data: Any = None
    # Build a random tiny model (model_dir unset) and tiny data (no data file set) under output_dir
    # (configs/tiny only); a model_dir or data file given is an input, read-only.
    tiny: bool = False
    # Longest example (prompt + response + EOS) in tokens.
    max_seq_len: int = 2048
    # Over-long examples: truncate (cut the response) or drop; both are counted and logged.
    overlong: str = "truncate"
    # Share of EFT examples per epoch (null = every record once per epoch).
    eft_fraction: Optional[float] = None


def _paths(v: Any) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    return [str(x) for x in v]


def _validate(cfg: Any) -> None:
    if cfg.overlong not in ("truncate", "drop"):
        raise ConfigError(f"overlong: must be 'truncate' or 'drop', got {cfg.overlong!r}")
    if cfg.eft_fraction is not None and not 0.0 <= cfg.eft_fraction <= 1.0:
        raise ConfigError(f"eft_fraction: must be in [0, 1] or null, got {cfg.eft_fraction}")
    if cfg.max_seq_len < 2:
        raise ConfigError(f"max_seq_len: must be >= 2, got {cfg.max_seq_len}")
    O.check_output_dir(cfg.output_dir)
    O.check_training(cfg)
    if not cfg.tiny:
        if not cfg.model_dir:
            raise ConfigError("model_dir: required (or tiny=true to build a random tiny model)")
        if not _data_files(cfg):
            raise ConfigError("ift_data / eft_data / text_data: set at least one (or tiny=true to build tiny data)")
    if cfg.model_dir:
        O.check_model_dir(cfg.model_dir)
    for key, path in _data_files(cfg).items():
        O.check_input_file(path, key)


def _data_files(cfg: Any) -> dict[str, str]:
    """``{key: path}`` of every data file given (``ift_data[1]`` for the second of a list)."""
    out = {}
    for key in ("ift_data", "eft_data", "text_data"):
        paths = _paths(cfg[key])
        out.update({(key if len(paths) == 1 else f"{key}[{i}]"): p for i, p in enumerate(paths)})
    return out


def _prepare_tiny(cfg: Any) -> dict:
    """Which inputs this run builds under output_dir (the unset ones); sets their paths."""
    out = Path(cfg.output_dir)
    built = {"model": not cfg.model_dir, "data": not _data_files(cfg)}
    if built["model"]:
        cfg.model_dir = str(out / "tiny_model")
    if built["data"]:
        cfg.ift_data, cfg.eft_data = str(out / "tiny_data" / "ift.jsonl"), str(out / "tiny_data" / "eft.jsonl")
    return built


def _build_tiny(cfg: Any, built: dict) -> None:
    if D.is_rank0():
        from psr.models.tiny import build_tiny_model_dir
        from psr.testing import write_tiny_sft_data

        if built["model"]:
            build_tiny_model_dir(cfg.model_dir, seed=cfg.seed)
        if built["data"] and not Path(cfg.ift_data).exists():
            write_tiny_sft_data(Path(cfg.ift_data).parent, seed=cfg.seed)
    D.barrier()


def sft_loss_fn(model: Any, batch: dict) -> tuple[torch.Tensor, dict]:
    logits, targets = labeled_logits(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    loss_sum, _ = sft_loss(logits, targets)
    return loss_sum, {}


def main(cfg: Any):
    _validate(cfg)
    torch.manual_seed(cfg.seed)
    D.init_distributed(D.default_device(cfg.device))
    built = _prepare_tiny(cfg) if cfg.tiny else {"model": False, "data": False}
    O.claim_output_dir(
        "eft_ift_sft", cfg, models={} if built["model"] else {"model_dir": cfg.model_dir},
        inputs={} if built["data"] else _data_files(cfg),
        ignore={"model_dir", "ift_data", "eft_data", "text_data", "tiny"},
        extra={"model": f"tiny (seed {cfg.seed}), built in output_dir" if built["model"] else "model_dir",
               "data": "tiny, built in output_dir" if built["data"] else "files"},
        saved="the last checkpoint (resume_state/, step_<n>/ and epoch_<e>/ model dirs) and metrics.jsonl")
    if cfg.tiny:
        _build_tiny(cfg, built)
    ift = [r for p in _paths(cfg.ift_data) for r in load_ift(p)]
    eft = [r for p in _paths(cfg.eft_data) for r in load_eft(p)]
    text = [r for p in _paths(cfg.text_data) for r in load_text(p)]
    tok = load_tokenizer(cfg.model_dir)
    examples, stats = build_sft_examples(tok, ift, eft, cfg.max_seq_len, cfg.overlong, text=text)
    D.print0(
        f"eft_ift_sft: {stats['ift']} IFT + {stats['eft']} EFT + {stats['text']} TEXT examples; over max_seq_len={cfg.max_seq_len}: "
        f"{stats['truncated']} truncated, {stats['dropped']} dropped"
    )
    if len(examples) < cfg.batch_size:
        raise ConfigError(f"batch_size={cfg.batch_size}: only {len(examples)} usable examples (after max_seq_len / "
                          "overlong)")
    sources = [e.source for e in examples]
    lengths = [len(e) for e in examples]
    setup = setup_from_config(cfg)
    pad_id = setup.tokenizer.pad_token_id
    result = train(
        cfg, setup, examples, lengths,
        collate=lambda exs: collate_sft(exs, pad_id),
        loss_fn=sft_loss_fn,
        epoch_indices=lambda e: mixture_indices(sources, e, cfg.seed, cfg.eft_fraction),
    )
    summary = {"examples": stats, "steps": result.steps, "final_loss": result.losses[-1] if result.losses else None,
               "first_loss": result.losses[0] if result.losses else None,
               "final_dir": str(result.final_dir) if result.final_dir else None,
               "world_size": D.get_world_size()}
    O.write_train_summary(Path(cfg.output_dir), summary, result)
    D.barrier()
    O.finish("eft_ift_sft", f"{len(examples)} examples, " + O.train_end_line(result, Path(cfg.output_dir)))
    return result


if __name__ == "__main__":
    recipe_main(EftIftSftConfig, main)

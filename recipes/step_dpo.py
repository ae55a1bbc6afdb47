r"""step_dpo: step-wise DPO M_i → M_{i+1} on the model's own step preference pairs (paper §3.4).

Launch (from the repository root):

    psr run step_dpo --config tiny/step_dpo output_dir=/tmp/dpo           # tiny model + pairs it builds itself, < 1 min on CPU
    psr run --nproc_per_node 2 step_dpo --config tiny/step_dpo output_dir=/tmp/dpo
    python recipes/step_dpo.py --config configs/tiny/step_dpo.yaml output_dir=/tmp/dpo
    tune run recipes/step_dpo.py --config configs/tiny/step_dpo.yaml output_dir=/tmp/dpo
    torchrun --nproc_per_node 8 recipes/step_dpo.py --config configs/qwen2_5_math_7b/step_dpo.yaml \
        model_dir=/ckpt/M1 pairs=/runs/it1/search/pairs.jsonl output_dir=/ckpt/M2
    ... the same command again             # continues a killed run exactly where its last save left it

Re-runs: ``manifest.json`` in output_dir records the settings, the model's identity and the pairs
file's (psr/outputs.py). A re-run with the same ones continues the checkpoint in output_dir; one
with others is refused with the keys that differ (``overwrite=true`` replaces the dir). With
``tiny=true`` the tiny model and pairs are built only under output_dir, for the keys left unset;
a model_dir or pairs given is an input, read-only.

Data: ``pairs`` — the jsonl written by recipes/step_search.py (``question``, ``prev_steps``,
``chosen``, ``rejected``, ``step``, ``id``) or Step-DPO's (``prompt``, ``initial_reason_steps``,
``chosen``, ``rejected``); schema in psr/data/pairs.py. Every record is validated before anything
runs (bad line → error naming file:line). Prompt = chat(tok, Figure 4 with the question) + the
previous steps; the loss covers only the chosen/rejected step tokens ("Step l: body\n"; nothing
appended unless ``eos_after_final_step=true``, see psr/training/dpo.py).

Reference model: M_i itself. Before the first update its log-probs of every chosen/rejected step
are computed once (same module, eval mode, no grad) and cached in ``ref_cache_dir`` under a key
hashing the model dir, the token ids of all pairs and the forward settings (not β). A second run
on the same model and data reuses the cache; training runs one policy forward per micro-batch
([chosen; rejected] in one batch) and no reference model.

Outputs (in output_dir): epoch_<e>/ (and step_<n>/) HF model dirs, final -> the last one,
resume_state/, metrics.jsonl (``metric_logger``; per step: loss, lr, grad_norm, tokens_per_second(_per_gpu),
peak_memory_*, rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins, logps/chosen,
logps/rejected),
ref_logps/<key>.safetensors (+ .json), train_summary.json (pair counts, truncated/dropped,
whether the reference cache was reused, first/final loss).
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
from psr.data.jsonl import write_jsonl
from psr.data.paths import resolve_data_path
from psr.data.pairs import PairStats, load_pairs
from psr.models.hf import load_tokenizer
from psr.training.dpo import (
    TokenizeStats,
    collate_pairs,
    compute_reference_logps,
    dpo_loss,
    forward_logps,
    load_or_compute_reference,
    model_fingerprint,
    reference_cache_key,
    tokenize_pairs,
)
from psr.training.loop import TrainConfig, check_batch_config, setup_from_config, train


@dataclass
class StepDpoConfig(TrainConfig, O.RunKeys):
    # Preference pairs jsonl (step_search's pairs.jsonl or Step-DPO fields). A relative path is
    # looked up as given, then under the data dir (psr.data.paths).
    pairs: Optional[str] = None
    # Where relative data paths are resolved when not found as given (null: $PSR_DATA_DIR, else
    # ../shared/data next to the repository root).
    data_dir: Optional[str] = None
    # Build a random tiny model and 64 arithmetic pairs under output_dir for whichever of
    # model_dir / pairs is unset (configs/tiny only); a model_dir or pairs given is read-only.
    tiny: bool = False
    # DPO temperature β (Eq. 6-7). The paper does not give it; see the configs for the choice.
    beta: float = 0.1
    # Conservative DPO label smoothing (0 = the paper's Eq. 8).
    label_smoothing: float = 0.0
    # Weight of an added NLL term on the chosen step, per token (0 = the paper's plain DPO).
    # DPO + NLL is the iterative RPO loss (Pang et al. 2024). The arith configs keep 0: with it,
    # stronger DPO steps still degraded M1 (docs/arith.md, the main job).
    nll_weight: float = 0.0
    # Longest prompt + step in tokens.
    max_seq_len: int = 2048
    # Over-long pairs: drop, or truncate (keep the steps, cut the oldest prompt tokens); counted.
    overlong: str = "drop"
    # Append EOS to a chosen/rejected step holding a complete \boxed{} (see psr/training/dpo.py).
    eos_after_final_step: bool = False
    # Reference log-prob cache directory (reused across runs that share it).
    ref_cache_dir: str = "${output_dir}/ref_logps"
    # Fingerprint the weights by full content hash (slow for big models) instead of
    # size + mtime + safetensors header.
    ref_hash_weights: bool = False
    # Pairs per reference forward per process (null = micro_batch_size).
    ref_micro_batch_size: Optional[int] = None
    # Fewer usable pairs than batch_size: true trains on them all in one smaller batch (a multiple
    # of micro_batch_size x processes; a self-rewarding iteration may find only a few pairs),
    # false stops with an error naming batch_size.
    shrink_batch_to_pairs: bool = False


def _resolve(path: str, data_dir: Optional[str]) -> str:
    """The pairs file: as given, else under data_dir / $PSR_DATA_DIR / ../shared/data
    (psr.data.paths); a missing one is an error naming the key and where it looked."""
    return str(resolve_data_path(path, data_dir, key="pairs"))


def _validate(cfg: Any) -> None:
    if cfg.overlong not in ("truncate", "drop"):
        raise ConfigError(f"overlong: must be 'truncate' or 'drop', got {cfg.overlong!r}")
    if not cfg.beta > 0:
        raise ConfigError(f"beta: must be > 0, got {cfg.beta}")
    if not cfg.nll_weight >= 0:
        raise ConfigError(f"nll_weight: must be >= 0, got {cfg.nll_weight}")
    if not 0.0 <= cfg.label_smoothing < 0.5:
        raise ConfigError(f"label_smoothing: must be in [0, 0.5), got {cfg.label_smoothing}")
    if cfg.max_seq_len < 4:
        raise ConfigError(f"max_seq_len: must be >= 4, got {cfg.max_seq_len}")
    O.check_output_dir(cfg.output_dir)
    O.check_training(cfg)
    O.check_positive(cfg, "ref_micro_batch_size", allow_none=True)
    if not cfg.tiny:
        if not cfg.model_dir:
            raise ConfigError("model_dir: required (or tiny=true to build a random tiny model)")
        if not cfg.pairs:
            raise ConfigError("pairs: required (a preference pairs jsonl; or tiny=true)")
    if cfg.model_dir:
        O.check_model_dir(cfg.model_dir)
    if cfg.pairs:
        O.check_input_file(_resolve(cfg.pairs, cfg.data_dir), "pairs")


def _prepare_tiny(cfg: Any) -> dict:
    """Which inputs this run builds under output_dir (the unset ones); sets their paths."""
    out = Path(cfg.output_dir)
    built = {"model": not cfg.model_dir, "pairs": not cfg.pairs}
    if built["model"]:
        cfg.model_dir = str(out / "tiny_model")
    if built["pairs"]:
        cfg.pairs = str(out / "tiny_data" / "pairs.jsonl")
    return built


def _build_tiny(cfg: Any, built: dict) -> None:
    if D.is_rank0():
        from psr.models.tiny import build_tiny_model_dir
        from psr.testing import tiny_pairs

        if built["model"]:
            build_tiny_model_dir(cfg.model_dir, seed=cfg.seed)
        if built["pairs"] and not Path(cfg.pairs).exists():
            write_jsonl(cfg.pairs, tiny_pairs(64, seed=cfg.seed))
    D.barrier()


def make_loss_fn(beta: float, label_smoothing: float, nll_weight: float = 0.0):
    def loss_fn(model: Any, batch: dict) -> tuple[torch.Tensor, dict]:
        pc, pr = forward_logps(model, batch, batch["input_ids"].device)
        losses, cr, rr = dpo_loss(pc, pr, batch["ref_chosen"], batch["ref_rejected"], beta, label_smoothing)
        nll = -pc / batch["mask"][: batch["n_pairs"]].sum(-1).clamp(min=1).to(pc.device)
        if nll_weight:
            losses = losses + nll_weight * nll
        return losses.sum(), {
            "nll/chosen": nll.detach().sum(),
            "rewards/chosen": cr.sum(),
            "rewards/rejected": rr.sum(),
            "rewards/accuracies": (cr > rr).float().sum(),
            "rewards/margins": (cr - rr).sum(),
            "logps/chosen": pc.detach().sum(),
            "logps/rejected": pr.detach().sum(),
        }

    return loss_fn


def main(cfg: Any):
    _validate(cfg)
    torch.manual_seed(cfg.seed)
    D.init_distributed(D.default_device(cfg.device))
    built = _prepare_tiny(cfg) if cfg.tiny else {"model": False, "pairs": False}
    O.claim_output_dir(
        "step_dpo", cfg, models={} if built["model"] else {"model_dir": cfg.model_dir},
        inputs={} if built["pairs"] else {"pairs": _resolve(cfg.pairs, cfg.data_dir)},
        ignore={"model_dir", "pairs", "tiny", "shrink_batch_to_pairs"},
        extra={"model": f"tiny (seed {cfg.seed}), built in output_dir" if built["model"] else "model_dir",
               "pairs": "tiny, built in output_dir" if built["pairs"] else "file",
               "shrink_batch_to_pairs": bool(cfg.shrink_batch_to_pairs)},
        saved="the last checkpoint (resume_state/, step_<n>/ and epoch_<e>/ model dirs) and metrics.jsonl")
    if cfg.tiny:
        _build_tiny(cfg, built)
    pair_stats = PairStats()
    pairs = load_pairs(_resolve(cfg.pairs, cfg.data_dir), pair_stats)
    tok = load_tokenizer(cfg.model_dir)
    tstats = TokenizeStats()
    examples = tokenize_pairs(tok, pairs, cfg.max_seq_len, cfg.overlong, cfg.eos_after_final_step, tstats)
    D.print0(
        f"step_dpo: {pair_stats.records} records -> {len(examples)} pairs ({pair_stats.identical_dropped} identical "
        f"dropped; over max_seq_len={cfg.max_seq_len}: {tstats.truncated} truncated, {tstats.dropped_overlong} dropped)"
    )
    if len(examples) < cfg.batch_size and cfg.shrink_batch_to_pairs:
        world = D.get_world_size()
        micro = min(cfg.micro_batch_size, max(1, len(examples) // world))
        usable = len(examples) - len(examples) % (micro * world)
        if usable >= 1:
            D.print0(f"step_dpo: {len(examples)} usable pairs < batch_size={cfg.batch_size}: one batch of {usable} "
                     f"(micro_batch_size={micro}) instead")
            cfg.batch_size, cfg.micro_batch_size = usable, micro
    if len(examples) < cfg.batch_size:
        raise ConfigError(f"batch_size={cfg.batch_size}: only {len(examples)} usable pairs in {cfg.pairs} "
                          "(shrink_batch_to_pairs=true trains on them in one smaller batch)")

    setup = setup_from_config(cfg)
    pad_id = setup.tokenizer.pad_token_id
    settings = {"dtype": str(setup.compute_dtype), "device": setup.device.type,
                "master_weights_fp32": bool(cfg.master_weights_fp32)}
    key = reference_cache_key(model_fingerprint(cfg.model_dir, cfg.ref_hash_weights), examples, settings)
    ref_mb = cfg.ref_micro_batch_size or cfg.micro_batch_size

    def compute():
        with setup.autocast():
            return compute_reference_logps(setup.model, examples, ref_mb, pad_id, setup.device,
                                           progress=cfg.progress_bar)

    ref, reused = load_or_compute_reference(cfg.ref_cache_dir, key, compute, len(examples),
                                            meta={"model_dir": str(cfg.model_dir), "pairs": str(cfg.pairs),
                                                  "n_pairs": len(examples), **settings})
    D.print0(f"step_dpo: reference log-probs {'reused from' if reused else 'computed into'} {cfg.ref_cache_dir} "
             f"(key {key[:12]})")
    ref_by_example = {id(ex): (float(ref[i, 0]), float(ref[i, 1])) for i, ex in enumerate(examples)}

    def collate(items: list) -> dict:
        b = collate_pairs(items, pad_id)
        b["ref_chosen"] = torch.tensor([ref_by_example[id(t)][0] for t in items], dtype=torch.float32)
        b["ref_rejected"] = torch.tensor([ref_by_example[id(t)][1] for t in items], dtype=torch.float32)
        b["n_units"] = len(items)
        return b

    lengths = [len(t.prompt_ids) + max(len(t.chosen_ids), len(t.rejected_ids)) for t in examples]
    result = train(cfg, setup, examples, lengths, collate, make_loss_fn(cfg.beta, cfg.label_smoothing, cfg.nll_weight))
    summary = {
        "records": pair_stats.records, "pairs": len(examples), "identical_dropped": pair_stats.identical_dropped,
        "truncated": tstats.truncated, "dropped_overlong": tstats.dropped_overlong,
        "ref_cache": "reused" if reused else "computed", "ref_cache_key": key,
        "steps": result.steps, "first_loss": result.losses[0] if result.losses else None,
        "final_loss": result.losses[-1] if result.losses else None,
        "final_dir": str(result.final_dir) if result.final_dir else None, "world_size": D.get_world_size(),
        "beta": cfg.beta, "nll_weight": cfg.nll_weight,
    }
    O.write_train_summary(Path(cfg.output_dir), summary, result)
    D.barrier()
    O.finish("step_dpo", f"{len(examples)} pairs, " + O.train_end_line(result, Path(cfg.output_dir)))
    result.summary = summary  # type: ignore[attr-defined]
    result.model = setup.model  # type: ignore[attr-defined]
    return result


if __name__ == "__main__":
    recipe_main(StepDpoConfig, main)

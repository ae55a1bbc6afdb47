r"""prm_train: train a process reward model that predicts "+"/"-" after each step (paper §3.2, the
PRM used to build EFT data; the paper trains Qwen2.5-72B on PRM800K).

Launch (from the repository root):

    psr run prm_train --config tiny/prm_train output_dir=/tmp/prm           # tiny model + data it builds itself, < 1 min on CPU
    psr run --nproc_per_node 2 prm_train --config tiny/prm_train output_dir=/tmp/prm
    python recipes/prm_train.py --config configs/tiny/prm_train.yaml output_dir=/tmp/prm
    tune run recipes/prm_train.py --config configs/tiny/prm_train.yaml output_dir=/tmp/prm
    torchrun --nproc_per_node 8 recipes/prm_train.py --config configs/qwen2_5_math_72b/prm_train.yaml \
        model_dir=/ckpt/Qwen2.5-72B data=prm800k/phase2_train.jsonl output_dir=/ckpt/prm
    ... the same command again             # continues a killed run exactly where its last save left it

Re-runs: ``manifest.json`` in output_dir records the settings, the model's identity and each data
file's (psr/outputs.py). A re-run with the same ones continues the checkpoint in output_dir; one
with others is refused with the keys that differ (``overwrite=true`` replaces the dir). With
``tiny=true`` the tiny model and data are built only under output_dir, for the keys left unset;
a model_dir or data file given is an input, read-only.

Data (``data``: one path or a list; ``data_format``: trl | prm800k | auto): TRL stepwise records
(``prompt``, ``completions`` [step strings], ``labels`` [bools]) or PRM800K raw phase1/phase2
jsonl (ratings −1/0/+1; ``neutral`` decides what a 0 means: positive (default) | negative | drop;
see psr/data/prm800k.py). Every record is validated before training (bad line → error naming
file:line). A relative path is looked up as given, then under ``data_dir`` / ``$PSR_DATA_DIR`` / ``../shared/data``
(psr.data.paths).

Model input: chat(tok, Figure 4 question) + "Step 1: …\n" <tag> "Step 2: …\n" <tag> …; the loss
is the 2-way cross-entropy over ("+", "-") at the tag positions only (format: psr/prm.py, loss:
psr/training/prm.py).
``step_tag``, ``good_token`` and ``bad_token`` must be single tokens (checked before training).

Outputs (in output_dir): epoch_<e>/ (and step_<n>/) HF model dirs with ``prm_config.json``
(tag/label tokens, read by ``psr.prm.PRMScorer``), final -> the last one, resume_state/,
metrics.jsonl (``metric_logger``; loss, lr, grad_norm, tokens_per_second(_per_gpu), peak_memory_*,
accuracy, p_good_mean per step),
train_summary.json (data counts, truncated/dropped, first/final loss).

Use for EFT construction: ``PRMScorer("<output_dir>/final").score_steps(question, steps)``.
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
from psr.data.prm800k import NEUTRAL_MODES, PRMStats, load_prm_data
from psr.models.hf import load_tokenizer
from psr.prm import DEFAULT_STEP_TAG, PRM_CONFIG, collate_prm, encode_steps, prm_token_ids, prob_good, tag_pair_logits
from psr.training.loop import TrainConfig, setup_from_config, train
from psr.training.prm import prm_loss


@dataclass
class PrmTrainConfig(TrainConfig, O.RunKeys):
    # PRM training data: a jsonl path or a list of paths.
    data: Any = None
    # trl (prompt/completions/labels) | prm800k (raw phase1/phase2) | auto (by the first record).
    data_format: str = "auto"
    # PRM800K rating 0: positive | negative | drop (cut the example before the neutral step).
    neutral: str = "positive"
    # Where relative data paths are resolved when not found as given (null: $PSR_DATA_DIR, else
    # ../shared/data next to the repository root; psr.data.paths).
    data_dir: Optional[str] = None
    # Build a random tiny model and 48 arithmetic examples under output_dir for whichever of
    # model_dir / data is unset (configs/tiny only); a model_dir or data given is read-only.
    tiny: bool = False
    # The step tag inserted after every step (a single token; Math-Shepherd's " ки" by default).
    step_tag: str = DEFAULT_STEP_TAG
    # The label tokens predicted at a tag (single tokens).
    good_token: str = "+"
    bad_token: str = "-"
    # Longest example in tokens.
    max_seq_len: int = 2048
    # Over-long examples: truncate (keep the leading steps that fit) or drop; both counted.
    overlong: str = "truncate"


def _paths(v: Any, data_dir: Optional[str]) -> list[str]:
    """The data files: each as given, else under data_dir / $PSR_DATA_DIR / ../shared/data
    (psr.data.paths); a missing one is an error naming its key and where it looked."""
    if v is None:
        return []
    items = [v] if isinstance(v, str) else [str(x) for x in v]
    return [str(resolve_data_path(p, data_dir, key="data" if len(items) == 1 else f"data[{i}]"))
            for i, p in enumerate(items)]


def _validate(cfg: Any) -> None:
    if cfg.overlong not in ("truncate", "drop"):
        raise ConfigError(f"overlong: must be 'truncate' or 'drop', got {cfg.overlong!r}")
    if cfg.neutral not in NEUTRAL_MODES:
        raise ConfigError(f"neutral: must be one of {NEUTRAL_MODES}, got {cfg.neutral!r}")
    if cfg.data_format not in ("auto", "trl", "prm800k"):
        raise ConfigError(f"data_format: must be auto, trl or prm800k, got {cfg.data_format!r}")
    O.check_output_dir(cfg.output_dir)
    O.check_training(cfg)
    if not cfg.tiny:
        if not cfg.model_dir:
            raise ConfigError("model_dir: required (or tiny=true to build a random tiny model)")
        if not cfg.data:
            raise ConfigError("data: required (TRL stepwise or PRM800K jsonl; or tiny=true)")
    if cfg.model_dir:
        O.check_model_dir(cfg.model_dir)
    for key, path in _data_files(cfg).items():
        O.check_input_file(path, key)


def _data_files(cfg: Any) -> dict[str, str]:
    paths = _paths(cfg.data, cfg.data_dir)
    return {("data" if len(paths) == 1 else f"data[{i}]"): p for i, p in enumerate(paths)}


def _prepare_tiny(cfg: Any) -> dict:
    """Which inputs this run builds under output_dir (the unset ones); sets their paths."""
    out = Path(cfg.output_dir)
    built = {"model": not cfg.model_dir, "data": not cfg.data}
    if built["model"]:
        cfg.model_dir = str(out / "tiny_model")
    if built["data"]:
        cfg.data = str(out / "tiny_data" / "prm.jsonl")
    return built


def _build_tiny(cfg: Any, built: dict) -> None:
    if D.is_rank0():
        from psr.models.tiny import build_tiny_model_dir
        from psr.testing import tiny_prm_records

        if built["model"]:
            build_tiny_model_dir(cfg.model_dir, seed=cfg.seed)
        if built["data"] and not Path(cfg.data).exists():
            write_jsonl(cfg.data, tiny_prm_records(48, seed=cfg.seed))
    D.barrier()


def make_loss_fn(ids):
    def loss_fn(model: Any, batch: dict) -> tuple[torch.Tensor, dict]:
        logits, good = tag_pair_logits(model, batch, ids)
        loss = prm_loss(logits, good)
        with torch.no_grad():
            p = prob_good(logits)
            correct = ((p > 0.5) == good).float().sum()
        return loss, {"accuracy": correct, "p_good_mean": p.sum()}

    return loss_fn


def main(cfg: Any):
    _validate(cfg)
    torch.manual_seed(cfg.seed)
    D.init_distributed(D.default_device(cfg.device))
    built = _prepare_tiny(cfg) if cfg.tiny else {"model": False, "data": False}
    O.claim_output_dir(
        "prm_train", cfg, models={} if built["model"] else {"model_dir": cfg.model_dir},
        inputs={} if built["data"] else _data_files(cfg), ignore={"model_dir", "data", "tiny"},
        extra={"model": f"tiny (seed {cfg.seed}), built in output_dir" if built["model"] else "model_dir",
               "data": "tiny, built in output_dir" if built["data"] else "files"},
        saved="the last checkpoint (resume_state/, step_<n>/ and epoch_<e>/ model dirs) and metrics.jsonl")
    if cfg.tiny:
        _build_tiny(cfg, built)
    tok = load_tokenizer(cfg.model_dir)
    try:
        ids = prm_token_ids(tok, cfg.step_tag, cfg.good_token, cfg.bad_token)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    stats = PRMStats()
    data = [ex for p in _paths(cfg.data, cfg.data_dir) for ex in load_prm_data(p, cfg.data_format, cfg.neutral, stats)]
    examples, truncated, dropped = [], 0, 0
    for ex in data:
        enc = encode_steps(tok, ids, ex.question, ex.steps, ex.labels, cfg.max_seq_len, cfg.overlong)
        if enc is None:
            dropped += 1
            continue
        truncated += int(enc.truncated)
        examples.append(enc)
    D.print0(f"prm_train: {stats.records} records -> {len(examples)} examples, {sum(len(e.labels) for e in examples)} "
             f"labelled steps ({stats.positive} +, {stats.negative} - before truncation; {stats.neutral} neutral "
             f"ratings as {cfg.neutral}); over max_seq_len={cfg.max_seq_len}: {truncated} truncated, {dropped} dropped")
    if len(examples) < cfg.batch_size:
        raise ConfigError(f"batch_size={cfg.batch_size}: only {len(examples)} usable examples (after max_seq_len / "
                          "overlong)")
    setup = setup_from_config(cfg)
    pad_id = setup.tokenizer.pad_token_id
    result = train(cfg, setup, examples, [len(e) for e in examples], lambda items: collate_prm(items, pad_id),
                   make_loss_fn(ids))
    prm_conf = {"step_tag": cfg.step_tag, "good_token": cfg.good_token, "bad_token": cfg.bad_token,
                "format": "chat(Figure 4 question) + ('Step k: body\\n' + tag)*; P(+) = softmax over (+,-) at tags"}
    summary = {"records": stats.records, "examples": len(examples), "skipped_empty": stats.skipped_empty,
               "positive": stats.positive, "negative": stats.negative, "neutral": stats.neutral,
               "neutral_as": cfg.neutral, "truncated": truncated, "dropped": dropped, "steps": result.steps,
               "first_loss": result.losses[0] if result.losses else None,
               "final_loss": result.losses[-1] if result.losses else None,
               "final_dir": str(result.final_dir) if result.final_dir else None, "world_size": D.get_world_size()}
    if D.is_rank0():
        out = Path(cfg.output_dir)
        for d in [p for p in out.iterdir() if p.is_dir() and (p / "config.json").exists() and not p.is_symlink()]:
            (d / PRM_CONFIG).write_text(json.dumps(prm_conf, indent=2))
    O.write_train_summary(Path(cfg.output_dir), summary, result)
    D.barrier()
    O.finish("prm_train", f"{len(examples)} examples, " + O.train_end_line(result, Path(cfg.output_dir)))
    result.summary = summary  # type: ignore[attr-defined]
    result.model = setup.model  # type: ignore[attr-defined]
    return result


if __name__ == "__main__":
    recipe_main(PrmTrainConfig, main)

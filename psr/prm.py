r"""Process reward model (PRM) for EFT construction (paper §3.2): the step-tag format, and
:class:`PRMScorer`, a trained PRM dir as psr.eft's ``StepScorer``.

Format (Math-Shepherd / OpenR style). For a question and steps s_1..s_n the PRM reads::

    chat(tok, Figure 4 prompt with the question) + "Step 1: s_1\n" <tag> "Step 2: s_2\n" <tag> ...

Each segment is tokenised on its own (no special tokens) and the **tag token id is inserted
directly** after each step, so the tag never merges with step text and sits exactly where we put
it. A step already starting with ``Step n:`` keeps its header (``psr.steps.as_candidate``). The
logits *at* a tag position (i.e. the prediction of the token after the tag) are read on two
candidate tokens only, ``good_token`` ("+") and ``bad_token`` ("-"):

    P(+ | step k) = softmax([logit(+), logit(-)])[0]        at the k-th tag

The tag, "+" and "-" must each be a single token of the tokenizer (checked by
:func:`prm_token_ids`, with an error naming the config key otherwise). Defaults: tag ``" ки"``
(Math-Shepherd's), "+", "-". Training (recipes/prm_train.py, loss in psr.training.prm) uses the
same encoding, batching and tag logits.

Inference: :class:`PRMScorer` (``score_steps(question, steps) -> list[P(+)]``, one forward per
call; ``score_batch`` for many) implements psr.eft's ``StepScorer`` protocol. It reads the tag and
label tokens from ``prm_config.json`` in the model dir, written there by recipes/prm_train.py.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F

from psr.steps import as_candidate

PRM_CONFIG = "prm_config.json"
DEFAULT_STEP_TAG = " ки"


# ----------------------------------------------------------------------------- the format


@dataclass
class PRMTokens:
    tag_id: int
    good_id: int
    bad_id: int


def _single(tok: Any, text: str, key: str) -> int:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"{key}={text!r} must be a single token of this tokenizer, but it encodes to "
                         f"{len(ids)} tokens {ids}; pick another {key} (a single-token string)")
    return int(ids[0])


def prm_token_ids(tok: Any, step_tag: str = DEFAULT_STEP_TAG, good_token: str = "+", bad_token: str = "-") -> PRMTokens:
    t = PRMTokens(_single(tok, step_tag, "step_tag"), _single(tok, good_token, "good_token"),
                  _single(tok, bad_token, "bad_token"))
    if len({t.tag_id, t.good_id, t.bad_id}) != 3:
        raise ValueError(f"step_tag, good_token and bad_token must be three different tokens, got ids "
                         f"{t.tag_id}, {t.good_id}, {t.bad_id}")
    return t


@dataclass
class PRMTokenized:
    input_ids: list[int]
    tag_positions: list[int]
    labels: list[bool]  # empty at inference
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)


def encode_steps(tok: Any, ids: PRMTokens, question: str, steps: Sequence[str],
                 labels: Optional[Sequence[bool]] = None, max_seq_len: Optional[int] = None,
                 overlong: str = "truncate") -> Optional[PRMTokenized]:
    """Token ids with a tag after every step, and the tag positions (see module docstring).

    Over ``max_seq_len``: ``truncate`` keeps the leading steps that fit (at least one), ``drop``
    returns None (so does truncate when not even the first step fits)."""
    from psr.prompts import chat, reasoning_prompt

    seq = list(tok(chat(tok, reasoning_prompt(question)), add_special_tokens=False)["input_ids"])
    positions: list[int] = []
    truncated = False
    for k, s in enumerate(steps, 1):
        seg = tok(as_candidate(s, k) + "\n", add_special_tokens=False)["input_ids"]
        if max_seq_len is not None and len(seq) + len(seg) + 1 > max_seq_len:
            if overlong == "drop" or not positions:
                return None
            truncated = True
            break
        seq.extend(seg)
        positions.append(len(seq))
        seq.append(ids.tag_id)
    lab = list(labels[: len(positions)]) if labels is not None else []
    return PRMTokenized(seq, positions, lab, truncated)


def collate_prm(items: Sequence[PRMTokenized], pad_id: int) -> dict[str, Any]:
    """Right-padded batch; ``tag_mask`` marks tag positions, ``good`` their labels (row-major
    order of the tags)."""
    T = max(len(x) for x in items)
    n = len(items)
    input_ids = torch.full((n, T), pad_id, dtype=torch.long)
    attn = torch.zeros((n, T), dtype=torch.long)
    tag_mask = torch.zeros((n, T), dtype=torch.bool)
    good = torch.zeros((n, T), dtype=torch.bool)
    for i, x in enumerate(items):
        input_ids[i, : len(x)] = torch.tensor(x.input_ids)
        attn[i, : len(x)] = 1
        tag_mask[i, x.tag_positions] = True
        if x.labels:
            good[i, x.tag_positions] = torch.tensor(x.labels)
    return {"input_ids": input_ids, "attention_mask": attn, "tag_mask": tag_mask, "good": good,
            "n_units": int(tag_mask.sum()), "n_tokens": int(attn.sum())}


def tag_pair_logits(model: Any, batch: dict[str, Any], ids: PRMTokens) -> tuple[torch.Tensor, torch.Tensor]:
    """``([N, 2] (good, bad) logits, [N] mask-selected labels)`` at every tag of the batch (rows
    in order, positions ascending). The LM head runs only on the columns holding a tag."""
    tag_mask = batch["tag_mask"]
    keep = tag_mask.any(dim=0).nonzero().squeeze(-1)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                logits_to_keep=keep, use_cache=False)
    logits = out.logits[..., [ids.good_id, ids.bad_id]]  # [B, K, 2]
    sel = tag_mask[:, keep]
    return logits[sel], batch["good"][:, keep][sel]


def prob_good(pair_logits: torch.Tensor) -> torch.Tensor:
    """P(+) from ``[..., 2]`` (good, bad) logits."""
    return F.softmax(pair_logits.float(), dim=-1)[..., 0]


# ----------------------------------------------------------------------------- inference


class PRMScorer:
    """A trained PRM dir as a psr.eft ``StepScorer``.

    ``PRMScorer(model_dir, device="cpu", dtype="float32", batch_size=16)``;
    ``score_steps(question, steps)`` → P(+) for every step (one forward);
    ``score_batch([(question, steps), ...])`` → a list of such lists (batched forwards).
    Token settings come from ``<model_dir>/prm_config.json`` (keyword arguments override them)."""

    name = "prm"

    def __init__(self, model_dir: str | os.PathLike, device: str = "cpu", dtype: str = "float32",
                 batch_size: int = 16, step_tag: Optional[str] = None, good_token: Optional[str] = None,
                 bad_token: Optional[str] = None, model: Any = None, tokenizer: Any = None):
        from psr.models.hf import load_tokenizer, torch_dtype

        self.model_dir = Path(model_dir)
        conf = {}
        if (self.model_dir / PRM_CONFIG).exists():
            conf = json.loads((self.model_dir / PRM_CONFIG).read_text())
        self.step_tag = step_tag or conf.get("step_tag", DEFAULT_STEP_TAG)
        self.good_token = good_token or conf.get("good_token", "+")
        self.bad_token = bad_token or conf.get("bad_token", "-")
        self.tok = tokenizer if tokenizer is not None else load_tokenizer(self.model_dir)
        self.ids = prm_token_ids(self.tok, self.step_tag, self.good_token, self.bad_token)
        self.device = torch.device(device)
        if model is None:  # the training path's meta build + slice load, one shard, on the device
            from psr.models.hf import load_model_for_training

            model = load_model_for_training(self.model_dir, dtype=torch_dtype(dtype), device=self.device)
        self.model = model.to(self.device).eval()
        self.batch_size = int(batch_size)
        self.calls = 0

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        enc = []
        for q, steps in items:
            e = encode_steps(self.tok, self.ids, q, list(steps))
            enc.append(e)
        out: list[list[float]] = []
        with torch.no_grad():
            for b in range(0, len(enc), self.batch_size):
                chunk = enc[b:b + self.batch_size]
                batch = collate_prm(chunk, self.tok.pad_token_id)
                batch = {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
                logits, _ = tag_pair_logits(self.model, batch, self.ids)
                p = prob_good(logits).tolist()
                self.calls += 1
                k = 0
                for e in chunk:
                    n = len(e.tag_positions)
                    out.append(p[k:k + n])
                    k += n
        return out

    def score_steps(self, question: str, steps: Sequence[str]) -> list[float]:
        if not steps:
            return []
        return self.score_batch([(question, steps)])[0]

    def close(self) -> None:
        self.model = None

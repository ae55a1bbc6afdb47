r"""Step-wise DPO (paper §3.4, Eq. 6-8): loss, tokenisation, batching, the reference log-prob cache.

Loss (Eq. 8), for a pair (x, s_1..s_{l-1}, s^b_l, s^w_l)::

    A = β log πθ(s^b_l | x, s_<l) / πref(s^b_l | x, s_<l)       (rewards/chosen)
    B = β log πθ(s^w_l | x, s_<l) / πref(s^w_l | x, s_<l)       (rewards/rejected)
    L = -log σ(A - B)

``log π(s_l | ...)`` is the sum of the token log-probs of the step text only: the prompt
(chat(Figure 4 question) + previous steps) is context and carries no loss.

Tokenisation. ``prompt_ids = tok(prompt)`` and ``chosen_ids = tok(chosen)`` are tokenised
separately (no special tokens added) and concatenated, which is what the policy produced during
the search: it saw the prompt's tokens and wrote the step's tokens. Nothing is appended after the
step by default: the search stops a candidate before ``"Step {l+1}:"`` or at EOS, so neither the
next header nor EOS belongs to the compared candidates. A step that holds a complete ``\boxed{}``
ends the chain: its trailing newline (``format_step`` adds one, but the policy never wrote it: it
stopped at EOS, as the SFT responses taught it) is dropped. ``eos_after_final_step=True`` appends the
tokenizer's EOS to a chosen/rejected step that contains a complete ``\boxed{}`` (the chain ends
there), so the preference also covers stopping after the final answer; off by default because
the two candidates of a pair are then compared on an extra token only one of them may get.

Batching. A micro-batch of B pairs is one ``[2B, T]`` batch (chosen rows, then rejected rows),
**left-padded**, so every response ends at column T-1. The model is then asked for logits of the
last ``K+1`` positions only (``logits_to_keep``, K = longest response in the batch): the vocab
projection and log-softmax never run on prompt tokens (for a 152k-vocab Qwen that is most of the
LM-head cost and memory). ``position_ids`` are computed from the attention mask so left padding
does not shift positions.

Reference cache. The reference model of an iteration is the policy at the start of training
(M_i), so reference log-probs are computed once, before the first update, with the same module
in eval mode, and written to ``<ref_cache_dir>/<key>.safetensors``. The key hashes: the model dir
fingerprint (config.json + tokenizer files by content; each ``*.safetensors`` file by name, size,
mtime and its header, or by full content with ``hash_weights=True``), every pair's token ids
(so data, tokenizer and tokenisation settings such as ``max_seq_len``/``eos_after_final_step``
are covered) and the numeric settings of the reference forward (compute dtype, device type).
β is not part of it: the cached values are log-probs, β only enters the loss. Training then runs
one policy forward per micro-batch and no reference model.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from psr import distributed as D
from psr.data.pairs import PreferencePair
from psr.steps import final_answer_reached

# ----------------------------------------------------------------------------- the loss


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO losses and the implicit rewards (Eq. 6-8; conservative DPO when
    ``label_smoothing`` > 0). Returns ``(losses, chosen_rewards, rejected_rewards)``; the rewards
    are detached (metrics)."""
    chosen_rewards = beta * (policy_chosen_logps - reference_chosen_logps)
    rejected_rewards = beta * (policy_rejected_logps - reference_rejected_logps)
    margin = chosen_rewards - rejected_rewards
    losses = -F.logsigmoid(margin) * (1.0 - label_smoothing) - F.logsigmoid(-margin) * label_smoothing
    return losses, chosen_rewards.detach(), rejected_rewards.detach()


def response_logps(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over masked positions of ``log softmax(logits)[target]``, per row, in float32.

    ``logits[b, j]`` is the prediction for ``targets[b, j]``; ``mask`` selects the response
    tokens. Positions outside the mask contribute exactly nothing (their logits are not read
    into the sum)."""
    logits = logits.float()
    lse = torch.logsumexp(logits, dim=-1)
    tok = torch.gather(logits, -1, targets.unsqueeze(-1)).squeeze(-1)
    return ((tok - lse) * mask).sum(-1)


# ----------------------------------------------------------------------------- tokenisation


@dataclass
class TokenizedPair:
    index: int  # position in the loaded pair list
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    truncated: bool = False

    def key_tokens(self) -> list[list[int]]:
        return [self.prompt_ids, self.chosen_ids, self.rejected_ids]

    @property
    def n_tokens(self) -> int:
        return 2 * len(self.prompt_ids) + len(self.chosen_ids) + len(self.rejected_ids)


@dataclass
class TokenizeStats:
    pairs: int = 0
    truncated: int = 0
    dropped_overlong: int = 0


def _encode(tok: Any, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


def tokenize_pair(
    tok: Any,
    pair: PreferencePair,
    index: int = 0,
    max_seq_len: int = 2048,
    overlong: str = "drop",
    eos_after_final_step: bool = False,
) -> Optional[TokenizedPair]:
    """Token ids of one pair (see module docstring), or None when it is over-long and
    ``overlong="drop"``. ``overlong="truncate"`` keeps the steps (cut on the right to at most
    half of ``max_seq_len`` each) and drops the oldest prompt tokens (the left end)."""
    if overlong not in ("drop", "truncate"):
        raise ValueError(f"overlong must be 'drop' or 'truncate', got {overlong!r}")
    prompt = _encode(tok, pair.policy_prompt(tok))
    resp = []
    for text in (pair.chosen, pair.rejected):
        final = final_answer_reached(text)
        if final:
            # the chain ended here: the policy wrote EOS, not the newline format_step adds (the
            # SFT responses end the same way), and "}.\n" may even be one token of its own
            text = text.rstrip()
        ids = _encode(tok, text)
        if eos_after_final_step and final:
            if tok.eos_token_id is None:
                raise ValueError("eos_after_final_step=true but the tokenizer has no EOS token")
            ids.append(int(tok.eos_token_id))
        if not ids:
            raise ValueError(f"{pair.where}: a step tokenises to no tokens")
        resp.append(ids)
    longest = len(prompt) + max(len(r) for r in resp)
    truncated = False
    if longest > max_seq_len:
        if overlong == "drop":
            return None
        truncated = True
        cap = max(1, max_seq_len // 2)
        resp = [r[:cap] for r in resp]
        keep = max_seq_len - max(len(r) for r in resp)
        prompt = prompt[-keep:]
    return TokenizedPair(index, prompt, resp[0], resp[1], truncated)


def tokenize_pairs(tok: Any, pairs: Sequence[PreferencePair], max_seq_len: int, overlong: str = "drop",
                   eos_after_final_step: bool = False, stats: Optional[TokenizeStats] = None) -> list[TokenizedPair]:
    stats = stats if stats is not None else TokenizeStats()
    out = []
    for i, p in enumerate(pairs):
        tp = tokenize_pair(tok, p, i, max_seq_len, overlong, eos_after_final_step)
        if tp is None:
            stats.dropped_overlong += 1
            continue
        stats.truncated += int(tp.truncated)
        out.append(tp)
    stats.pairs = len(out)
    return out


def collate_pairs(items: Sequence[TokenizedPair], pad_id: int) -> dict[str, Any]:
    """One left-padded ``[2B, T]`` batch: rows ``0..B-1`` prompt+chosen, ``B..2B-1``
    prompt+rejected. ``targets``/``mask`` are ``[2B, K]`` over the last K columns (K = longest
    response); ``logits_to_keep = K + 1`` (the last kept logit predicts nothing and is dropped)."""
    seqs = [t.prompt_ids + t.chosen_ids for t in items] + [t.prompt_ids + t.rejected_ids for t in items]
    resp_len = [len(t.chosen_ids) for t in items] + [len(t.rejected_ids) for t in items]
    T = max(len(s) for s in seqs)
    K = max(resp_len)
    n = len(seqs)
    input_ids = torch.full((n, T), pad_id, dtype=torch.long)
    attn = torch.zeros((n, T), dtype=torch.long)
    for i, s in enumerate(seqs):
        input_ids[i, T - len(s):] = torch.tensor(s, dtype=torch.long)
        attn[i, T - len(s):] = 1
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
    cols = torch.arange(T - K, T)
    mask = (cols.unsqueeze(0) >= (T - torch.tensor(resp_len)).unsqueeze(1)).float()
    return {
        "input_ids": input_ids,
        "attention_mask": attn,
        "position_ids": position_ids,
        "targets": input_ids[:, T - K:],
        "mask": mask,
        "logits_to_keep": K + 1,
        "n_pairs": len(items),
        "n_tokens": int(attn.sum()),
    }


def forward_logps(model: Any, batch: dict[str, Any], device: torch.device,
                  autocast: Callable[[], Any] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(chosen_logps, rejected_logps)`` of a collated batch: one forward of the ``[2B, T]`` batch."""
    import contextlib

    ctx = autocast() if autocast is not None else contextlib.nullcontext()
    with ctx:
        out = model(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
            position_ids=batch["position_ids"].to(device),
            logits_to_keep=batch["logits_to_keep"],
            use_cache=False,
        )
    logits = out.logits[:, :-1]
    logps = response_logps(logits, batch["targets"].to(device), batch["mask"].to(device))
    b = batch["n_pairs"]
    return logps[:b], logps[b:]


# ----------------------------------------------------------------------------- reference cache

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                    "special_tokens_map.json", "chat_template.jinja", "tokenizer.model")


def _sha_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _safetensors_header(path: Path) -> str:
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            return ""
        (n,) = struct.unpack("<Q", raw)
        return hashlib.sha256(f.read(min(n, 100 << 20))).hexdigest()


def model_fingerprint(model_dir: str | os.PathLike, hash_weights: bool = False) -> dict[str, Any]:
    """What identifies a model dir for the reference cache (see module docstring)."""
    d = Path(model_dir)
    fp: dict[str, Any] = {}
    for name in ("config.json",) + _TOKENIZER_FILES:
        p = d / name
        if p.exists():
            fp[name] = _sha_file(p)
    for p in sorted(d.glob("*.safetensors")):
        st = p.stat()
        fp[p.name] = _sha_file(p) if hash_weights else {
            "size": st.st_size, "mtime_ns": st.st_mtime_ns, "header": _safetensors_header(p)}
    if not any(k.endswith(".safetensors") for k in fp):
        raise FileNotFoundError(f"{d}: no *.safetensors weights to fingerprint")
    return fp


def reference_cache_key(fingerprint: dict[str, Any], examples: Sequence[TokenizedPair],
                        settings: dict[str, Any]) -> str:
    """sha256 over the model fingerprint, every example's token ids, and the reference-forward
    settings (β must not be among them)."""
    if "beta" in settings:
        raise ValueError("beta is not a reference-cache setting (the cache holds log-probs)")
    h = hashlib.sha256()
    h.update(json.dumps({"model": fingerprint, "settings": settings}, sort_keys=True).encode())
    for ex in examples:
        for ids in ex.key_tokens():
            h.update(struct.pack(f"<I{len(ids)}I", len(ids), *ids))
    return h.hexdigest()


def compute_reference_logps(model: Any, examples: Sequence[TokenizedPair], micro_batch: int, pad_id: int,
                            device: torch.device, autocast: Callable[[], Any] | None = None,
                            progress: bool = False) -> torch.Tensor:
    """``[N, 2]`` (chosen, rejected) log-probs of every example under ``model`` (no grad, eval
    mode). Rank r computes examples r, r+W, ...; every rank runs the same number of forwards
    (FSDP2 forwards are collective), then the results are gathered on all ranks."""
    rank, world = D.get_rank(), D.get_world_size()
    mine = list(range(rank, len(examples), world))
    per_rank = -(-len(examples) // world)
    n_batches = -(-per_rank // micro_batch)
    was_training = model.training
    model.eval()
    results: list[tuple[int, float, float]] = []
    it = range(n_batches)
    if progress and D.is_rank0():
        from tqdm import tqdm

        it = tqdm(it, desc="reference log-probs", dynamic_ncols=True)
    with torch.no_grad():
        for b in it:
            idx = mine[b * micro_batch:(b + 1) * micro_batch]
            real = len(idx)
            if real == 0:  # keep the collective forward count equal across ranks
                idx = [0]
            batch = collate_pairs([examples[i] for i in idx], pad_id)
            c, r = forward_logps(model, batch, device, autocast)
            for k in range(real):
                results.append((idx[k], float(c[k]), float(r[k])))
    if was_training:
        model.train()
    out = torch.empty((len(examples), 2), dtype=torch.float32)
    for part in D.all_gather_objects(results):
        for i, c, r in part:
            out[i, 0], out[i, 1] = c, r
    return out


def load_or_compute_reference(cache_dir: str | os.PathLike, key: str, compute: Callable[[], torch.Tensor],
                              n_examples: int, meta: Optional[dict] = None) -> tuple[torch.Tensor, bool]:
    """The cached ``[N, 2]`` reference log-probs for ``key``, or ``compute()`` them and write the
    cache (rank 0, atomically). Returns ``(logps, reused)``. Rank 0 decides and shares the
    result, so ranks on other nodes need not see the cache file."""
    from safetensors.torch import load_file, save_file

    path = Path(cache_dir) / f"{key[:32]}.safetensors"
    cached = None
    if D.is_rank0() and path.exists():
        t = load_file(str(path)).get("reference_logps")
        if t is not None and tuple(t.shape) == (n_examples, 2):
            cached = t.tolist()
    cached = D.all_gather_objects(cached)[0]
    if cached is not None:
        return torch.tensor(cached, dtype=torch.float32), True
    logps = compute()
    if D.is_rank0():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        save_file({"reference_logps": logps.contiguous()}, str(tmp), metadata={"key": key})
        os.replace(tmp, path)
        (path.with_suffix(".json")).write_text(json.dumps({"key": key, **(meta or {})}, indent=1, sort_keys=True))
    D.barrier()
    return logps, False

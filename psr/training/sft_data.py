r"""SFT examples for eft_ift_sft: IFT/EFT records → token ids with a response-only loss mask.

API (stable):

    ift_prompt_response(tok, rec) -> (prompt, response)   # chat(reasoning_prompt(q)), format_steps(steps)
    eft_prompt_response(tok, rec) -> (prompt, response)   # chat(judge_prompt(...)), judgment
    encode_example(tok, prompt, response, max_seq_len, overlong="truncate") -> SFTExample | None
        input_ids = prompt ids + response ids + [EOS]; labels = -100 over the prompt, the response
        ids and EOS after it (the model learns to stop). Over-long: "truncate" cuts the response
        from the right (None when not even one response token fits after the prompt); "drop"
        returns None.
    text_prompt_response(tok, rec) -> (prompt, response)   # TEXT records: as is, no chat template
    build_sft_examples(tok, ift, eft, max_seq_len, overlong, text=()) -> (examples, stats)
        stats: {"ift": n, "eft": n, "text": n, "truncated": n, "dropped": n}
    mixture_indices(sources, epoch, seed, eft_fraction) -> list[int]
        An epoch's examples: all of them (eft_fraction=None), or all non-EFT (IFT, TEXT) plus EFT examples drawn
        (without replacement, cycling through fresh permutations when more are needed) so that EFT
        makes up ``eft_fraction`` of the epoch (1.0 = EFT only, 0.0 = IFT only).
    collate_sft(examples, pad_id) -> {"input_ids", "attention_mask", "labels", "n_units", "n_tokens"}
        Right padding; n_units = response tokens (what the loss averages over).

Small valid IFT/EFT files for tests and configs/tiny: psr.testing.write_tiny_sft_data.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from psr.prompts import chat, judge_prompt, reasoning_prompt
from psr.seeds import epoch_seed
from psr.steps import format_steps
from psr.training.losses import IGNORE_INDEX


@dataclass
class SFTExample:
    input_ids: list[int]
    labels: list[int]
    source: str = "ift"
    id: Any = None

    def __len__(self) -> int:
        return len(self.input_ids)


def ift_prompt_response(tok: Any, rec: dict) -> tuple[str, str]:
    return chat(tok, reasoning_prompt(rec["question"])), format_steps(rec["steps"]).rstrip("\n")


def eft_prompt_response(tok: Any, rec: dict) -> tuple[str, str]:
    prompt = chat(tok, judge_prompt(rec["question"], rec["prev_steps"], rec["step_a"], rec["step_b"]))
    return prompt, rec["judgment"]


def text_prompt_response(tok: Any, rec: dict) -> tuple[str, str]:
    return rec["prompt"], rec["response"]


def encode_example(tok: Any, prompt: str, response: str, max_seq_len: int, overlong: str = "truncate",
                   source: str = "ift", id: Any = None) -> tuple[Optional[SFTExample], str]:
    """(example or None, status) with status in ok | truncated | dropped."""
    if overlong not in ("truncate", "drop"):
        raise ValueError(f"overlong must be 'truncate' or 'drop', got {overlong!r}")
    p = tok(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    r = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    status = "ok"
    if len(p) + len(r) > max_seq_len:
        if overlong == "drop" or len(p) >= max_seq_len:
            return None, "dropped"
        r = r[: max_seq_len - len(p)]
        status = "truncated"
    return SFTExample(p + r, [IGNORE_INDEX] * len(p) + r, source, id), status


def build_sft_examples(tok: Any, ift: Sequence[dict], eft: Sequence[dict], max_seq_len: int,
                       overlong: str = "truncate", text: Sequence[dict] = ()) -> tuple[list[SFTExample], dict[str, int]]:
    stats = {"ift": 0, "eft": 0, "text": 0, "truncated": 0, "dropped": 0}
    out = []
    for source, records, fn in (("ift", ift, ift_prompt_response), ("eft", eft, eft_prompt_response),
                                ("text", text, text_prompt_response)):
        for rec in records:
            prompt, response = fn(tok, rec)
            ex, status = encode_example(tok, prompt, response, max_seq_len, overlong, source, rec.get("id"))
            if status != "ok":
                stats[status] += 1
            if ex is not None:
                out.append(ex)
                stats[source] += 1
    return out, stats


def mixture_indices(sources: Sequence[str], epoch: int, seed: int, eft_fraction: Optional[float]) -> list[int]:
    ift = [i for i, s in enumerate(sources) if s != "eft"]
    eft = [i for i, s in enumerate(sources) if s == "eft"]
    if eft_fraction is None:
        return list(range(len(sources)))
    f = float(eft_fraction)
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"eft_fraction must be in [0, 1], got {f}")
    if f == 1.0:
        return eft
    want = round(f * len(ift) / (1.0 - f))
    if want and not eft:
        raise ValueError(f"eft_fraction={f} but there are no EFT examples")
    rng = random.Random(epoch_seed(seed, epoch))
    drawn: list[int] = []
    while len(drawn) < want:
        perm = eft[:]
        rng.shuffle(perm)
        drawn += perm[: want - len(drawn)]
    return ift + drawn


def collate_sft(examples: Sequence[SFTExample], pad_id: int) -> dict[str, Any]:
    n = max(len(e) for e in examples)
    ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), n), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), n), dtype=torch.long)
    for b, e in enumerate(examples):
        ids[b, : len(e)] = torch.tensor(e.input_ids)
        labels[b, : len(e)] = torch.tensor(e.labels)
        mask[b, : len(e)] = 1
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": labels,
        "n_units": int((labels != IGNORE_INDEX).sum()),
        "n_tokens": int(mask.sum()),
    }

"""Small deterministic input files for tests and ``configs/tiny`` (arithmetic; not real data).

* :func:`tiny_pairs` -- step preference pairs in the psr convention (psr.data.pairs, step_dpo);
* :func:`tiny_prm_records` -- TRL-stepwise PRM records (psr.data.prm800k, prm_train);
* :func:`write_tiny_sft_data` -- IFT and EFT files (psr.training.sft_data, eft_ift_sft).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from psr.data.jsonl import write_jsonl
from psr.steps import format_step


def tiny_pairs(n: int = 64, seed: int = 0) -> list[dict]:
    r"""``n`` deterministic arithmetic preference records in the psr convention (for
    ``configs/tiny`` and tests): the chosen step states the right sum in the boxed form, the
    rejected one guesses a wrong sum in another wording (learnable by a tiny random model);
    0-2 previous steps."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b, c = rng.randint(1, 20), rng.randint(1, 20), rng.randint(1, 9)
        k = i % 3
        prev = [f"We compute {a} + {b} = {a + b}.", f"Then {a + b} + {c} = {a + b + c}."][:k]
        total = a + b if k == 0 else a + b + c
        wrong = total + rng.choice([-3, -2, -1, 1, 2, 3])
        l = k + 1
        q = f"What is {a} + {b}?" if k == 0 else f"What is {a} + {b} + {c}?"
        out.append({
            "id": f"tiny{i}/step{l}", "question": q, "prev_steps": prev, "step": l,
            "chosen": format_step(l, f"So the answer is \\boxed{{{total}}}."),
            "rejected": format_step(l, f"I guess it is {wrong}, maybe."),
        })
    return out


def tiny_prm_records(n: int = 48, seed: int = 0) -> list[dict]:
    """``n`` deterministic TRL-stepwise records (configs/tiny, tests): arithmetic steps, a wrong
    sum is labelled False and ends the example."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b, c = rng.randint(1, 20), rng.randint(1, 20), rng.randint(1, 9)
        s1 = f"We compute {a} + {b} = {a + b}."
        bad = i % 2 == 1
        total = a + b + c + (rng.choice([-2, -1, 1, 2]) if bad else 0)
        s2 = f"Then {a + b} + {c} = {total}." if not bad else f"I guess {a + b} + {c} is {total}, maybe."
        out.append({"id": f"tiny{i}", "prompt": f"What is {a} + {b} + {c}?", "completions": [s1, s2],
                    "labels": [True, not bad]})
    return out


def write_tiny_sft_data(directory: str | os.PathLike, n_ift: int = 48, n_eft: int = 16, seed: int = 0) -> tuple[Path, Path]:
    """Small IFT and EFT files (two-operand arithmetic, templated judgments); deterministic.
    Returns ``(ift_path, eft_path)`` (``ift.jsonl``, ``eft.jsonl`` in ``directory``)."""
    d = Path(directory)
    rng = random.Random(seed)
    ift, eft = [], []
    for i in range(n_ift):
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        ift.append({"id": f"ift-{i}", "question": f"What is {a} + {b}?",
                    "steps": [f"We add {a} and {b}.", f"{a} + {b} = {a + b}, so the answer is \\boxed{{{a + b}}}."]})
    for i in range(n_eft):
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        good, bad = f"{a} + {b} = {a + b}", f"{a} + {b} = {a + b + rng.randint(1, 3)}"
        label = "A" if i % 2 == 0 else "B"
        step_a, step_b = (good, bad) if label == "A" else (bad, good)
        eft.append({"id": f"eft-{i}", "question": f"What is {a} + {b}?", "prev_steps": [f"We add {a} and {b}."],
                    "step_a": step_a, "step_b": step_b, "label": label,
                    "judgment": f"Assistant {label} is better because its step is correct. [[{label}]]"})
    d.mkdir(parents=True, exist_ok=True)
    write_jsonl(d / "ift.jsonl", ift)
    write_jsonl(d / "eft.jsonl", eft)
    return d / "ift.jsonl", d / "eft.jsonl"

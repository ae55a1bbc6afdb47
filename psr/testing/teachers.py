"""Scripted stand-ins for a trained PRM and for teacher models (Generators; not models).

They read the prompts psr sends with :mod:`psr.prompts`' parsers, so they see exactly the slot
texts the prompt builders filled in.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from psr.generation.base import Completion, SamplingParams
from psr.ift import rules_segment
from psr.prompts import parse_ift_split_prompt, parse_judge_prompt
from psr.seeds import stable_hash
from psr.steps import format_steps, next_step_body


class LengthPRM:
    """TEST DOUBLE for a trained PRM: P("+") of a step = ``len / (len + scale)`` (characters of
    the stripped body), so longer steps look better. Deterministic; not a model."""

    name = "length-prm (test double)"

    def __init__(self, scale: float = 20.0):
        self.scale = float(scale)
        self.calls = 0

    def score_steps(self, question: str, steps: Sequence[str]) -> list[float]:
        self.calls += 1
        return [len(s.strip()) / (len(s.strip()) + self.scale) for s in steps]

    def close(self) -> None:
        pass


class ScriptedTeacher:
    """TEST DOUBLE for a teacher model judging Figure 5 prompts (a Generator; not a model).

    ``mode``:
      * ``prm``: prefers the candidate ``prm`` (default :class:`LengthPRM`) scores higher, in
        both orders → pairs are kept;
      * ``anti_prm``: prefers the lower one → consistent but ``prm_disagree``;
      * ``always_a``: position-biased, says ``[[A]]`` → ``inconsistent``;
      * ``none``: no verdict → ``unparseable``;
      * ``mixed``: one of the four above per pair, by :meth:`mode_for` (a hash of the two
        candidate texts, the same for both orders), so every filter gets work.
    """

    name = "scripted-teacher"
    version = "test-double"
    tokenizer = None
    MODES = ("prm", "always_a", "anti_prm", "none")

    def __init__(self, mode: str = "prm", prm: Any = None, seed: int = 0):
        if mode not in self.MODES + ("mixed",):
            raise ValueError(f"ScriptedTeacher mode must be one of {self.MODES + ('mixed',)}, got {mode!r}")
        self.mode = mode
        self.prm = prm or LengthPRM()
        self.seed = seed
        self.calls = 0
        self.n_prompts = 0

    def mode_for(self, step_a: str, step_b: str) -> str:
        if self.mode != "mixed":
            return self.mode
        key = sorted([" ".join(step_a.split()), " ".join(step_b.split())])  # whitespace-folded
        return self.MODES[stable_hash(self.seed, *key) % len(self.MODES)]

    def _judge(self, prompt: str) -> str:
        try:
            context, a_text, b_text = parse_judge_prompt(prompt)
        except ValueError:
            return "I cannot find two steps to compare."
        mode = self.mode_for(a_text, b_text)
        if mode == "none":
            return "Both steps have merits; I cannot decide."
        if mode == "always_a":
            return "Assistant A's step is better. [[A]]"
        l = int(re.match(r"Step (\d+):", a_text).group(1)) if re.match(r"Step (\d+):", a_text) else 1
        sa = self.prm.score_steps(context, [next_step_body(a_text, l)])[-1]
        sb = self.prm.score_steps(context, [next_step_body(b_text, l)])[-1]
        a_wins = sa >= sb if mode == "prm" else sa < sb
        who = "A" if a_wins else "B"
        return f"Assistant {who}'s step is {'more' if mode == 'prm' else 'less'} detailed and correct. [[{who}]]"

    def generate(self, prompts, params: SamplingParams, stops=None, seeds=None) -> list[list[Completion]]:
        self.calls += 1
        self.n_prompts += len(prompts)
        out = []
        for p in prompts:
            text = self._judge(p)
            out.append([Completion(text=text, n_tokens=len(text.split()) + 1, finish_reason="eos")] * params.n)
        return out

    def close(self) -> None:
        pass


class ScriptedSplitTeacher:
    """TEST DOUBLE: a Generator that answers the Figure 3 prompt by dividing the solution with
    :func:`psr.ift.rules_segment` (so a GSM8k solution comes back without a boxed answer, which
    the validator then appends from the gold answer), after an optional ``preamble``. A prompt
    that is not a filled Figure 3 prompt gets the division of an empty solution.

    ``alter``: a set of substrings; a solution containing one of them gets its first digit
    changed (an unfaithful split that the validator must reject). Used by the tests and by
    ``configs/tiny/ift_build.yaml``'s teacher variant; not a model.
    """

    name = "scripted-split-teacher"
    version = "test-double"
    tokenizer = None

    def __init__(self, alter: Sequence[str] = (), preamble: str = ""):
        self.alter = list(alter)
        self.preamble = preamble
        self.calls = 0

    def generate(self, prompts, params: SamplingParams, stops=None, seeds=None):
        self.calls += 1
        out = []
        for p in prompts:
            try:
                sol = parse_ift_split_prompt(p)[1]
            except ValueError:
                sol = ""
            steps = rules_segment(sol)
            if any(a in sol for a in self.alter):  # change the first digit of the solution
                for k, s in enumerate(steps):
                    if re.search(r"\d", s):
                        steps[k] = re.sub(r"\d", lambda d: str((int(d.group()) + 1) % 10), s, count=1)
                        break
            text = self.preamble + format_steps(steps)
            out.append([Completion(text=text, n_tokens=len(text.split()), finish_reason="eos")] * params.n)
        return out

    def close(self) -> None:
        pass

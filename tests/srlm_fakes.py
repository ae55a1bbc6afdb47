"""A scripted Generator for the SRLM baseline (psr/srlm.py): it answers the Figure 4 policy
prompt with whole solutions and Yuan et al.'s scoring prompt with judge text, both from
callables. (tests/fakes.py's ScriptedGenerator speaks the step-wise prompts only.)

* ``policy(question, n) -> n solutions`` (str, returned as is with finish_reason "eos", or a
  :class:`Completion`);
* ``judge(question, response, k) -> text`` for the k-th of the ``n`` scoring samples.

Token counts are ``len(text.split()) + 1``. Every call is recorded in ``calls`` (kind, prompts,
params, stops, seeds). Prompts are parsed assuming ``tokenizer=None``.
"""

from __future__ import annotations

from typing import Callable, Optional

from fakes import parse_policy_prompt
from psr.generation.base import Completion
from psr.srlm import SRLM_JUDGE_MARK

_USER = "\nUser: "
_RESP = "\n<response>"
_RESP_END = "</response>\n"


def parse_srlm_judge_prompt(prompt: str) -> tuple[str, str]:
    """(question, response) of a scoring prompt."""
    q = prompt[prompt.index(_USER) + len(_USER) : prompt.index(_RESP)]
    r = prompt[prompt.index(_RESP) + len(_RESP) : prompt.index(_RESP_END)]
    return q, r


def _completion(c, reason="eos") -> Completion:
    if isinstance(c, Completion):
        return c
    return Completion(text=c, n_tokens=len(c.split()) + 1, finish_reason=reason)


class ScoringGenerator:
    name = "scripted-srlm"
    version = "0"

    def __init__(self, policy: Callable, judge: Callable, tokenizer=None, fail_on: Optional[Callable[[str], bool]] = None):
        self.policy, self.judge, self.tokenizer, self.fail_on = policy, judge, tokenizer, fail_on
        self.calls: list[dict] = []
        self.closed = False

    def generate(self, prompts, params, stops=None, seeds=None):
        prompts = list(prompts)
        kinds = {"judge" if SRLM_JUDGE_MARK in p else "policy" for p in prompts}
        self.calls.append({"kind": "/".join(sorted(kinds)), "prompts": prompts, "params": params,
                           "stops": [tuple(s) for s in stops] if stops is not None else None,
                           "seeds": list(seeds) if seeds is not None else None})
        if self.fail_on is not None and any(self.fail_on(p) for p in prompts):
            raise RuntimeError("scripted failure")
        out = []
        for p in prompts:
            if SRLM_JUDGE_MARK in p:
                q, r = parse_srlm_judge_prompt(p)
                out.append([_completion(self.judge(q, r, k)) for k in range(params.n)])
            else:
                q, _ = parse_policy_prompt(p)
                out.append([_completion(c) for c in self.policy(q, params.n)])
        return out

    def close(self) -> None:
        self.closed = True

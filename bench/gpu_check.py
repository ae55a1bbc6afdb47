r"""GPU check: one prepared run that shows the recipes work on a CUDA device, in bf16, within
8 minutes on one GPU, and writes one JSON summary.

    python bench/gpu_check.py --device cuda --out gpu_check.json               # the real check
    python bench/gpu_check.py --device cpu --dry-run --out /tmp/gpu_check.json # CPU dry run (tests)
    python bench/gpu_check.py --device cuda --out g.json --checks logits,smollm2_gsm8k

On the lent GPU machine (the device tool runs a command in the repository root with ``$OUT`` as
the folder that comes back; no internet, no pip there: torch and transformers must already be
installed), this one line runs it with whichever of python / python3 is there and brings back the
summary, the script's output and every child's log (``$OUT/gpu_check_logs/``), with the script's
exit status, even when a check fails::

    set -o pipefail; PY=$(command -v python || command -v python3); $PY bench/gpu_check.py --device cuda --out "$OUT/gpu_check.json" 2>&1 | tee "$OUT/gpu_check.log"

(give the device tool a ``timeout_s`` of about 540: after ``--budget_s`` = 450 s no check starts and
a running recipe child is killed; the in-process checks take well under a minute on a GPU.)

Checks, in this order (``--checks`` picks some; every one is independent of the others):

* ``env``: versions of python, torch, transformers, vLLM (imported in a child process: only when
  ``import vllm`` works do the vLLM checks run), the device's name, memory and bf16 support, and
  every package the recipes import; a missing one is named here.
* ``logits``: one batch (4 rows x 40 tokens, two rows left-padded) through the same random
  qwen2-style model (hidden 128, 4 layers, GQA 4/2 heads) on the CPU and on ``--device``, in
  fp32 and in bf16 (weights cast). Max abs difference over the non-padding positions, with the
  tolerances: fp32 device vs fp32 CPU <= 1e-4 x max(1, max|logit|) (2e-3 x when TF32 is forced
  on by ``TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1``; the check turns TF32 off otherwise); bf16 device
  vs fp32 CPU and bf16 device vs bf16 CPU <= 0.05 x max|logit| (the CPU's own bf16 error is
  0.5-1 % of the largest logit for this model: measured 0.0083 of 1.23).
* ``smollm2_gsm8k``: a LlamaForCausalLM with SmolLM2-135M's config (hidden 576, MLP 1536, 30
  layers, 9 heads / 3 KV heads, vocab 49152, tied embeddings, rope theta 1e5) and **random**
  weights (the real ones are not on the GPU machine), the tiny BPE tokenizer of
  psr/models/tiny.py (the repo's offline tokenizer: 512 tokens, so prompts are longer in tokens
  than with SmolLM2's own; ids it does not know decode to nothing), the paper's Figure 4 prompt
  as recipes/eval.py builds it, greedy generation with the native backend in ``--dtype`` of
  ``--questions`` (32) GSM8k test questions in one batch, ``--max_new_tokens`` (256) each.
  Measured: generated tokens/s (after a short warm-up), peak CUDA memory
  (``torch.cuda.max_memory_allocated`` over the generation), accuracy with the repo's grader
  (near 0: random weights). Questions: ``--data`` (a data dir holding gsm8k/test.jsonl, as
  psr/data/benchmarks.py reads it, or the jsonl itself; default ``$PSR_DATA_DIR`` or
  ../shared/data); when that is absent (the GPU machine gets the repository only) 32 built-in
  GSM8k-style questions written for this script; the summary says which was used.
* ``sft``, ``dpo``: recipes/eft_ift_sft.py and recipes/step_dpo.py with configs/tiny/* as child
  processes, ``device=<--device> dtype=<--dtype>`` (bf16 compute over fp32 master weights);
  checked: finite losses, the saved model dir, the device recorded in the run (the CUDA RNG
  state in resume_state for SFT, the reference cache's metadata for DPO), SFT's loss dropping
  over its 24 steps, DPO's first loss = log 2 within 0.05 (policy = reference before the first
  update, in bf16).
* ``search_native``, ``eval_native``: recipes/step_search.py (configs/tiny/step_search, 4
  built-in questions) and recipes/eval.py (configs/tiny/eval on the first 4 of the same GSM8k
  questions, written to a data dir in the work dir) with ``backend=native``; checked: pairs /
  graded items written, the backend the summary names.
* ``search_vllm``, ``eval_vllm``: the same with ``backend=vllm``, ``backend_kwargs.enforce_eager=true``
  (no CUDA-graph capture: a quick engine start) and ``backend_kwargs.gpu_memory_utilization=0.3``,
  on a tiny model with head dim 64 built in the work dir (the tiny configs' own model has head dim
  16, which vLLM's CPU attention rejects); ``skipped`` when ``import vllm`` fails.

``--dry-run`` shrinks every check (2 optimizer steps, 2 questions, a 2-layer model of SmolLM2's
head shape and vocabulary, 16 new tokens) so that the whole script runs on the CPU in the tests
(tests/test_gpu_check.py); the CPU-vs-device comparison is then CPU vs CPU.

Output (``--out``; written after every check, so a killed run leaves what it had): ``ok`` (all
checks ok or skipped), ``device``, ``dtype``, ``dry_run``, ``data``, ``total_seconds`` and per check
``{status: ok|failed|skipped, seconds, numbers, error, log}`` (``log``: the child process's
output, in ``--logdir``, default ``<out dir>/<out name>_logs/``, so under ``$OUT`` it comes back
too; its last lines go into ``error`` on failure). The recipes' outputs go to ``--workdir`` (a
temp dir, removed at the end unless given or ``--keep-workdir``). Exit status 0 when
every check is ok or skipped, 1 otherwise, 2 when torch or transformers cannot be imported.

Status: the CUDA path of this script has NOT run yet (no GPU was at hand when it was written);
only the CPU dry run is tested. When it has run on a GPU, put its numbers in docs/measurements.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CHECKS = ("env", "logits", "smollm2_gsm8k", "sft", "dpo", "search_native", "eval_native",
          "search_vllm", "eval_vllm")
VLLM_CHECKS = ("search_vllm", "eval_vllm")
# Modules the recipes and checks import (module name -> what needs it).
REQUIRED_MODULES = {
    "torch": "everything", "transformers": "everything", "tokenizers": "the tiny tokenizer",
    "safetensors": "model dirs", "numpy": "the native backend", "omegaconf": "recipe configs",
    "yaml": "configs, benchmark definitions", "tqdm": "progress bars",
    "math_verify": "the grader (eval, smollm2_gsm8k)", "sympy": "the grader",
}
PINNED = {"torch": "2.13.0", "transformers": "5.19.0"}
# SmolLM2-135M(-Instruct)'s architecture (its config.json).
SMOLLM2_135M = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                    rope_theta=100000.0, tie_word_embeddings=True, rms_norm_eps=1e-5, hidden_act="silu")
# --dry-run: the same head shape (head dim 8 instead of 64), vocabulary and tying, 2 layers.
SMOLLM2_DRY = dict(SMOLLM2_135M, hidden_size=72, intermediate_size=192, num_hidden_layers=2)
LOGITS_TOL = {"fp32": 1e-4, "fp32_tf32": 2e-3, "bf16": 0.05}
# The whole run ends within about this many seconds (plus the in-process checks' own time): no check
# starts after it and every child process is killed when it is reached (its check then fails).
DEFAULT_BUDGET_S = 450.0
MIN_CHILD_S = 15.0  # a recipe child is not started with less time than this left


class CheckError(RuntimeError):
    """A check's expectation failed; the message says which number and why."""


# --------------------------------------------------------------------------- questions


def builtin_questions(n: int) -> list[dict]:
    """``n`` GSM8k-style word problems with integer answers, written for this script
    (deterministic; eight templates with varying numbers)."""
    templates = [
        (lambda a, b, c: f"A baker makes {a} loaves of bread every morning. She sells {b} of them and gives "
                         f"{c} to a neighbour. How many loaves are left?", lambda a, b, c: a - b - c),
        (lambda a, b, c: f"Tom reads {a} pages a day for {b} days, then {c} more pages on the last day. How many "
                         f"pages did he read in total?", lambda a, b, c: a * b + c),
        (lambda a, b, c: f"A box holds {a} pencils. A school buys {b} boxes and hands out {c} pencils. How many "
                         f"pencils does the school still have?", lambda a, b, c: a * b - c),
        (lambda a, b, c: f"Maria earns ${a} an hour. She works {b} hours on Monday and {c} hours on Tuesday. How "
                         f"many dollars does she earn on the two days?", lambda a, b, c: a * (b + c)),
        (lambda a, b, c: f"A farmer has {a * b} eggs and packs them into cartons of {b}. He sells {c} cartons. "
                         f"How many cartons does he keep?", lambda a, b, c: a - c),
        (lambda a, b, c: f"A train travels {a} miles an hour for {b} hours and then {c} miles more. How far does "
                         f"it travel?", lambda a, b, c: a * b + c),
        (lambda a, b, c: f"Lena has {a} stickers. She buys {b} packs of {c} stickers each. How many stickers does "
                         f"she have now?", lambda a, b, c: a + b * c),
        (lambda a, b, c: f"A class of {a} students splits into {b} equal teams, and {c} students of each team wear "
                         f"hats. How many students do not wear hats?", lambda a, b, c: a - b * c),
    ]
    out = []
    for i in range(n):
        k = i % len(templates)
        a, b, c = 12 + 7 * i % 40, 2 + i % 5, 1 + i % 3
        if k == 0:
            a += b + c
        if k == 4:
            a += c
        if k == 7:
            a = b * (c + 3 + i % 4)
        text, ans = templates[k]
        out.append({"id": f"builtin-{i}", "problem": text(a, b, c), "answer": str(ans(a, b, c))})
    return out


def load_gsm8k(data: Optional[str], n: int) -> tuple[list[dict], str]:
    """The first ``n`` GSM8k test questions and where they came from. ``data``: a data dir
    holding gsm8k/test.jsonl (read with psr.data.benchmarks.load_benchmark) or the jsonl file
    itself; None = $PSR_DATA_DIR or ../shared/data. Absent -> built-in questions (said in the
    returned source); a present but broken file raises (DataError naming file:line)."""
    from psr.data.benchmarks import load_benchmark, resolve_data_dir

    p = (Path(data).expanduser() if data else resolve_data_dir(None)).absolute()
    if p.is_file():
        from psr.data.jsonl import iter_jsonl

        items = []
        for _, rec in iter_jsonl(p, required=("id", "problem", "answer")):
            if len(items) >= n:
                break
            items.append({"id": str(rec["id"]), "problem": rec["problem"], "answer": str(rec["answer"]).strip()})
        if not items:
            raise CheckError(f"--data {p}: no questions in this file")
        return items, f"file {p} (first {len(items)})"
    if (p / "gsm8k" / "test.jsonl").is_file():
        items = load_benchmark("gsm8k", data_dir=p, limit=n)
        return items, f"file {p / 'gsm8k' / 'test.jsonl'} (first {len(items)})"
    return builtin_questions(n), f"built-in ({n} GSM8k-style questions; no {p / 'gsm8k' / 'test.jsonl'})"


# --------------------------------------------------------------------------- context / helpers


class Ctx:
    def __init__(self, args: argparse.Namespace, workdir: Path, logdir: Path):
        self.args = args
        self.device = args.device
        self.dtype = args.dtype
        self.dry = args.dry_run
        self.workdir = workdir
        self.logdir = logdir
        self.vllm_ok: Optional[bool] = None
        self.vllm_version: Optional[str] = None
        self.vllm_note = ""
        self.no_device: Optional[str] = None
        self.deadline = time.monotonic() + args.budget_s
        self._questions: Optional[tuple[list[dict], str]] = None

    def questions(self) -> tuple[list[dict], str]:
        if self._questions is None:
            self._questions = load_gsm8k(self.args.data, self.args.questions)
        return self._questions

    def torch_device(self):
        import torch

        return torch.device(self.device)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # no network on the GPU machine: never let a hub lookup wait for a timeout
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    return env


def _tail(path: Path, chars: int = 2500) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return text[-chars:]


def run_child(cmd: list[str], log: Path, timeout_s: float) -> int:
    """Run ``cmd`` in the repository root, stdout+stderr into ``log``; the whole process group is
    killed after ``timeout_s`` (CheckError then)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.Popen(cmd, cwd=str(REPO), env=_child_env(), stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            raise CheckError(f"timed out after {timeout_s:.0f} s (killed); log tail:\n{_tail(log)}") from None


def run_recipe(ctx: Ctx, name: str, recipe: str, config: str, overrides: list[str], timeout_s: float) -> Path:
    """``python recipes/<recipe>.py --config <config> output_dir=... device=... dtype=... <overrides>``;
    returns its output dir (CheckError with the log tail when it exits non-zero)."""
    out = ctx.workdir / name
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, str(REPO / "recipes" / f"{recipe}.py"), "--config", config, f"output_dir={out}",
           f"device={ctx.device}", f"dtype={ctx.dtype}", *overrides]
    log = ctx.logdir / f"{name}.log"
    left = ctx.deadline - time.monotonic()
    if left < MIN_CHILD_S:
        raise CheckError(f"not run: {left:.0f} s left of the time budget (--budget_s {ctx.args.budget_s:.0f})")
    rc = run_child(cmd, log, min(timeout_s, left))
    if rc != 0:
        raise CheckError(f"{recipe} exited with status {rc}; log tail:\n{_tail(log)}")
    return out


def _finite(xs: list) -> bool:
    return all(isinstance(x, (int, float)) and math.isfinite(x) for x in xs)


def _metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _has_weights(d: Path) -> bool:
    return (d / "config.json").is_file() and any(d.glob("*.safetensors"))


# --------------------------------------------------------------------------- checks


def check_env(ctx: Ctx) -> dict:
    import importlib

    import torch

    nums: dict[str, Any] = {"python": sys.version.split()[0], "executable": sys.executable,
                            "platform": platform.platform(), "torch": torch.__version__,
                            "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    missing = []
    for mod, why in REQUIRED_MODULES.items():
        try:
            m = importlib.import_module(mod)
            nums.setdefault(mod, getattr(m, "__version__", "?"))
        except Exception as e:  # ImportError, or a broken install
            missing.append(f"{mod} ({why}): {type(e).__name__}: {e}")
    nums["pinned_mismatch"] = {k: nums.get(k) for k, v in PINNED.items()
                               if str(nums.get(k, "")).split("+")[0] != v}
    nums["missing_modules"] = missing
    if ctx.device.startswith("cuda") and torch.cuda.is_available():
        dev = ctx.torch_device()
        props = torch.cuda.get_device_properties(dev)
        nums.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}", bf16_supported=torch.cuda.is_bf16_supported(),
                    device_count=torch.cuda.device_count())
    probe_vllm(ctx)
    nums["vllm"] = ctx.vllm_version
    nums["vllm_import_error"] = ctx.vllm_note or None
    problems = list(missing)
    if ctx.device.startswith("cuda"):
        if not torch.cuda.is_available():
            problems.append(f"--device {ctx.device}: torch.cuda.is_available() is False "
                            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})")
            ctx.no_device = f"--device {ctx.device} but CUDA is not available (see env)"
        elif ctx.dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
            problems.append(f"--dtype bfloat16: {nums.get('gpu')} does not support bf16")
    if problems:
        raise CheckError("; ".join(problems))
    return nums


def _logits(model, batch: dict, device, dtype):
    import torch

    m = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    with torch.no_grad():
        out = m(**{k: v.to(device) for k, v in batch.items()}, use_cache=False).logits
    out = out.float().cpu()
    del m
    return out


def check_logits(ctx: Ctx) -> dict:
    import torch

    from psr.models.tiny import build_tiny_model

    dev = ctx.torch_device()
    tf32_forced = os.environ.get("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE") == "1"
    precision_before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")  # fp32 matmuls in fp32 (no TF32) for this comparison
    vocab = 512
    model = build_tiny_model(vocab_size=vocab, hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2, seed=0)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (4, 40), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :7] = 0
    mask[3, :19] = 0
    ids[mask == 0] = 0
    batch = {"input_ids": ids, "attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}
    keep = mask.bool()
    ref = _logits(model, batch, torch.device("cpu"), torch.float32)[keep]
    cpu_bf16 = _logits(model, batch, torch.device("cpu"), torch.bfloat16)[keep]
    dev_fp32 = _logits(model, batch, dev, torch.float32)[keep]
    dev_bf16 = _logits(model, batch, dev, torch.bfloat16)[keep]
    torch.set_float32_matmul_precision(precision_before)
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    scale = float(ref.abs().max())

    def diff(a, b) -> float:
        return float((a - b).abs().max())

    nums = {
        "positions": int(keep.sum()), "vocab": vocab, "max_abs_logit_cpu_fp32": scale,
        "tf32_forced_by_env": tf32_forced, "float32_matmul_precision_before": precision_before,
        "max_abs_diff": {
            "device_fp32_vs_cpu_fp32": diff(dev_fp32, ref),
            "device_bf16_vs_cpu_bf16": diff(dev_bf16, cpu_bf16),
            "device_bf16_vs_cpu_fp32": diff(dev_bf16, ref),
            "cpu_bf16_vs_cpu_fp32": diff(cpu_bf16, ref),
        },
        "argmax_agreement": {
            "device_fp32_vs_cpu_fp32": float((dev_fp32.argmax(-1) == ref.argmax(-1)).float().mean()),
            "device_bf16_vs_cpu_fp32": float((dev_bf16.argmax(-1) == ref.argmax(-1)).float().mean()),
        },
    }
    tol_fp32 = (LOGITS_TOL["fp32_tf32"] if tf32_forced else LOGITS_TOL["fp32"]) * max(1.0, scale)
    tol_bf16 = LOGITS_TOL["bf16"] * max(1.0, scale)
    nums["tolerance"] = {"device_fp32_vs_cpu_fp32": tol_fp32, "device_bf16_vs_cpu_bf16": tol_bf16,
                         "device_bf16_vs_cpu_fp32": tol_bf16}
    bad = [f"{k}: max abs diff {nums['max_abs_diff'][k]:.3g} > tolerance {t:.3g}"
           for k, t in nums["tolerance"].items() if not nums["max_abs_diff"][k] <= t]
    if bad:
        raise CheckError("; ".join(bad))
    return nums


def build_smollm2_shaped(dry: bool, device, seed: int = 0):
    """A random LlamaForCausalLM with SmolLM2-135M's config (SMOLLM2_DRY with ``dry``), built
    directly on ``device`` (fp32), and the tiny tokenizer (eos/pad ids set from it)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from psr.models.tiny import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    cfg = LlamaConfig(**(SMOLLM2_DRY if dry else SMOLLM2_135M), eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, bos_token_id=None)
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(cfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model.eval(), tok


def _rope_theta(cfg) -> Optional[float]:
    theta = getattr(cfg, "rope_theta", None)
    if theta is None:
        theta = (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta")
    return theta


def check_smollm2_gsm8k(ctx: Ctx) -> dict:
    import torch

    from psr.generation import SamplingParams
    from psr.generation.native import NativeGenerator
    from psr.prompts import chat, reasoning_prompt

    questions, source = ctx.questions()
    dev = ctx.torch_device()
    cuda = dev.type == "cuda"
    t0 = time.perf_counter()
    model, tok = build_smollm2_shaped(ctx.dry, dev)
    n_params = sum(p.numel() for p in model.parameters())
    cfg = model.config
    gen = NativeGenerator(model=model, tokenizer=tok, device=ctx.device, dtype=ctx.dtype)
    build_s = time.perf_counter() - t0
    prompts = [chat(tok, reasoning_prompt(q["problem"])) for q in questions]
    prompt_tokens = [len(tok(p)["input_ids"]) for p in prompts]
    max_new = ctx.args.max_new_tokens
    # warm-up (CUDA context, kernels, allocator): not timed
    gen.generate(prompts[:2], SamplingParams(n=1, temperature=0.0, max_new_tokens=4))
    if cuda:
        torch.cuda.synchronize(dev)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
        base_alloc = torch.cuda.memory_allocated(dev)
    t1 = time.perf_counter()
    outs = gen.generate(prompts, SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new))
    if cuda:
        torch.cuda.synchronize(dev)
    gen_s = time.perf_counter() - t1
    responses = [o[0].text for o in outs]
    total = sum(o[0].n_tokens for o in outs)
    peak = {}
    if cuda:
        peak = {"peak_cuda_memory_allocated_gib": torch.cuda.max_memory_allocated(dev) / 2**30,
                "cuda_memory_allocated_before_gib": base_alloc / 2**30,
                "peak_cuda_memory_reserved_gib": torch.cuda.max_memory_reserved(dev) / 2**30}
    backend, gen_dtype, attn = gen.version, str(gen.dtype).replace("torch.", ""), gen.attn_implementation
    gen.close()
    del model, gen, outs
    if cuda:
        torch.cuda.empty_cache()
    # graded like recipes/eval.py (near 0 with random weights); a grader problem is reported, it
    # does not void the generation numbers (the env check names a missing math_verify)
    accuracy, grader_error = None, None
    try:
        from psr import grader

        verdicts = grader.grade_many([(r, q["answer"]) for r, q in zip(responses, questions)], workers=1,
                                     timeout_s=5.0, answer_type="numeric")
        accuracy = sum(map(bool, verdicts)) / len(verdicts)
    except Exception as e:
        grader_error = f"{type(e).__name__}: {e}"
    nums: dict[str, Any] = {
        "data": source, "questions": len(questions), "dry_run": ctx.dry,
        "model": {"params": n_params, "hidden_size": cfg.hidden_size, "layers": cfg.num_hidden_layers,
                  "heads": cfg.num_attention_heads, "kv_heads": cfg.num_key_value_heads,
                  "intermediate_size": cfg.intermediate_size, "vocab_size": cfg.vocab_size,
                  "tie_word_embeddings": bool(cfg.tie_word_embeddings), "rope_theta": _rope_theta(cfg),
                  "weights": "random (seed 0)", "tokenizer": f"psr.models.tiny ({len(tok)} tokens)"},
        "backend": backend, "dtype": gen_dtype, "attn_implementation": attn,
        "build_s": round(build_s, 2), "max_new_tokens": max_new,
        "prompt_tokens_mean": sum(prompt_tokens) / len(prompt_tokens), "prompt_tokens_max": max(prompt_tokens),
        "generated_tokens": total, "generate_s": round(gen_s, 3),
        "tokens_per_s": total / gen_s if gen_s > 0 else None,
        **peak, "accuracy": accuracy, "grader_error": grader_error,
    }
    if total <= 0:
        raise CheckError("no token was generated")
    if ctx.dry is False and (cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size) != (30, 576, 49152):
        raise CheckError(f"the model is not SmolLM2-135M-shaped: {nums['model']}")
    return nums


def check_sft(ctx: Ctx) -> dict:
    ov = ["progress_bar=false"] + (["epochs=1", "max_steps=2"] if ctx.dry else [])
    out = run_recipe(ctx, "sft", "eft_ift_sft", "tiny/eft_ift_sft", ov, ctx.args.recipe_timeout_s)
    summary = json.loads((out / "train_summary.json").read_text())
    losses = [r["loss"] for r in _metrics(out / "metrics.jsonl")]
    import torch

    state = torch.load(out / "resume_state" / "recipe_state.pt", weights_only=True, map_location="cpu")
    rng_devices = sorted(state["rng"][0])
    nums = {"steps": summary["steps"], "first_loss": summary["first_loss"], "final_loss": summary["final_loss"],
            "losses": losses, "rng_state_devices": rng_devices, "final_dir": summary["final_dir"]}
    problems = []
    if not losses or not _finite(losses):
        problems.append(f"losses not all finite: {losses}")
    if not _has_weights(out / "final"):
        problems.append(f"no saved model dir at {out / 'final'}")
    if ctx.device.startswith("cuda") and "cuda" not in rng_devices:
        problems.append(f"the run saved no CUDA RNG state (devices {rng_devices}): it did not run on CUDA")
    if not ctx.dry and not (losses and losses[-1] < losses[0]):
        problems.append(f"the loss did not drop over {len(losses)} steps ({losses[:1]} -> {losses[-1:]})")
    if problems:
        raise CheckError("; ".join(problems))
    return nums


def check_dpo(ctx: Ctx) -> dict:
    ov = ["progress_bar=false"] + (["epochs=1", "max_steps=2"] if ctx.dry else [])
    out = run_recipe(ctx, "dpo", "step_dpo", "tiny/step_dpo", ov, ctx.args.recipe_timeout_s)
    summary = json.loads((out / "train_summary.json").read_text())
    losses = [r["loss"] for r in _metrics(out / "metrics.jsonl")]
    metas = [json.loads(p.read_text()) for p in sorted((out / "ref_logps").glob("*.json"))]
    ref_meta = metas[0] if metas else {}
    nums = {"steps": summary["steps"], "pairs": summary["pairs"], "first_loss": summary["first_loss"],
            "final_loss": summary["final_loss"], "losses": losses,
            "reference": {k: ref_meta.get(k) for k in ("device", "dtype", "n_pairs")}}
    problems = []
    if not losses or not _finite(losses):
        problems.append(f"losses not all finite: {losses}")
    elif abs(losses[0] - math.log(2)) > 0.05:
        problems.append(f"first loss {losses[0]:.4f} is not log 2 = 0.6931 within 0.05 (policy = reference at step 1)")
    if not _has_weights(out / "final"):
        problems.append(f"no saved model dir at {out / 'final'}")
    want = ctx.torch_device().type
    if ref_meta.get("device") != want:
        problems.append(f"reference log-probs computed on {ref_meta.get('device')!r}, expected {want!r}")
    if problems:
        raise CheckError("; ".join(problems))
    return nums


# The vLLM checks' model: the tiny tokenizer and a random qwen2 with head dim 64 (hidden 128, 2 heads,
# 1 KV head). The tiny configs' own model has head dim 16, which vLLM's CPU attention rejects
# (tests/recipes/test_vllm_recipes.py) and its CUDA attention backends may too; real models use 64/128.
VLLM_MODEL = dict(hidden_size=128, num_layers=2, num_heads=2, num_kv_heads=1)
VLLM_ENGINE = ["backend_kwargs.enforce_eager=true", "backend_kwargs.gpu_memory_utilization=0.3"]


def _vllm_model(ctx: Ctx) -> Path:
    from psr.models.tiny import build_tiny_model_dir

    return build_tiny_model_dir(ctx.workdir / "vllm_model", seed=0, **VLLM_MODEL)


def _backend_overrides(ctx: Ctx, backend: str, recipe: str) -> list[str]:
    """``backend=...``, and for vLLM the engine settings (no CUDA-graph capture: a quick start; 30 %
    of the GPU's memory) and the head-dim-64 model dir."""
    if backend != "vllm":
        return [f"backend={backend}"]
    model = [f"model_dir={_vllm_model(ctx)}"] + (["tiny=false"] if recipe == "eval" else [])
    return [f"backend={backend}", *VLLM_ENGINE, *model]


def check_search(ctx: Ctx, backend: str) -> dict:
    ov = _backend_overrides(ctx, backend, "step_search")
    if ctx.dry:
        ov += ["questions=builtin:2", "search.max_iterations=2"]
    timeout = ctx.args.vllm_timeout_s if backend == "vllm" else ctx.args.recipe_timeout_s
    out = run_recipe(ctx, f"search_{backend}", "step_search", "tiny/step_search", ov, timeout)
    s = json.loads((out / "summary.json").read_text())
    nums = {"backend": s["backend"], "backend_version": s["backend_version"],
            "questions_written": s["questions_written"], "questions_input": s["questions_input"],
            "questions_failed": s["search"]["questions_failed"], "pairs": s["pairs"],
            "tokens_generated": s["tokens_generated"], "wall_time_s": s["wall_time_s"],
            "tokens_per_s": s["this_run"]["tokens_per_s"],
            "config_device": s["config"]["device"], "config_dtype": s["config"]["dtype"]}
    problems = []
    if s["backend"] != [backend]:
        problems.append(f"summary names backend {s['backend']}, expected [{backend!r}]")
    if s["questions_written"] != s["questions_input"] or s["search"]["questions_failed"]:
        problems.append(f"{s['questions_written']} of {s['questions_input']} questions written, "
                        f"{s['search']['questions_failed']} failed ({s['search'].get('failed_ids')})")
    if not s["tokens_generated"] > 0:
        problems.append("no token generated")
    if problems:
        raise CheckError("; ".join(problems))
    return nums


def check_eval(ctx: Ctx, backend: str) -> dict:
    questions, source = ctx.questions()
    n = 2 if ctx.dry else 4
    data = ctx.workdir / f"eval_{backend}_data"
    (data / "gsm8k").mkdir(parents=True, exist_ok=True)
    with (data / "gsm8k" / "test.jsonl").open("w") as f:
        for q in questions[:n]:
            f.write(json.dumps({"id": q["id"], "problem": q["problem"], "answer": q["answer"]}) + "\n")
    ov = [*_backend_overrides(ctx, backend, "eval"), "benchmarks=[gsm8k]", f"data_dir={data}", f"limit={n}"]
    if ctx.dry:
        ov += ["max_new_tokens=8"]
    timeout = ctx.args.vllm_timeout_s if backend == "vllm" else ctx.args.recipe_timeout_s
    out = run_recipe(ctx, f"eval_{backend}", "eval", "tiny/eval", ov, timeout)
    s = json.loads((out / "summary.json").read_text())
    g = s["benchmarks"].get("gsm8k", {})
    nums = {"backend": s["backend"], "backend_version": s["backend_version"], "items": g.get("n"),
            "accuracy": g.get("accuracy"), "mean_response_tokens": g.get("mean_response_tokens"),
            "wall_s": s.get("wall_s"), "data": source}
    problems = []
    if s["backend"] != backend:
        problems.append(f"summary names backend {s['backend']!r}, expected {backend!r}")
    if g.get("n") != min(n, len(questions)):
        problems.append(f"{g.get('n')} items graded, expected {min(n, len(questions))}")
    if problems:
        raise CheckError("; ".join(problems))
    return nums


CHECK_FUNCS: dict[str, Callable[[Ctx], dict]] = {
    "env": check_env,
    "logits": check_logits,
    "smollm2_gsm8k": check_smollm2_gsm8k,
    "sft": check_sft,
    "dpo": check_dpo,
    "search_native": lambda ctx: check_search(ctx, "native"),
    "eval_native": lambda ctx: check_eval(ctx, "native"),
    "search_vllm": lambda ctx: check_search(ctx, "vllm"),
    "eval_vllm": lambda ctx: check_eval(ctx, "vllm"),
}


# --------------------------------------------------------------------------- driver


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"),
                    help="compute dtype of the recipes and the SmolLM2-shaped generation")
    ap.add_argument("--out", required=True, help="the JSON summary to write")
    ap.add_argument("--data", default=None,
                    help="data dir holding gsm8k/test.jsonl, or that jsonl (default $PSR_DATA_DIR or ../shared/data; "
                         "built-in questions when absent)")
    ap.add_argument("--questions", type=int, default=None, help="GSM8k questions for smollm2_gsm8k (32; 4 with --dry-run)")
    ap.add_argument("--max_new_tokens", "--max-new-tokens", type=int, default=None,
                    help="new tokens per question in smollm2_gsm8k (256; 16 with --dry-run)")
    ap.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                    help="smallest sizes (CPU dry run for the tests)")
    ap.add_argument("--checks", default=",".join(CHECKS), help=f"comma-separated subset of {','.join(CHECKS)}")
    ap.add_argument("--workdir", default=None, help="where the recipes write (default: a temp dir, removed at the end)")
    ap.add_argument("--logdir", default=None,
                    help="where each child process's output goes (default: <out dir>/<out name>_logs)")
    ap.add_argument("--keep-workdir", "--keep_workdir", dest="keep_workdir", action="store_true")
    ap.add_argument("--budget_s", "--budget-s", type=float, default=DEFAULT_BUDGET_S,
                    help="no check starts after this many seconds and a running recipe is killed when they "
                         "are spent (such checks are recorded as failed)")
    ap.add_argument("--recipe_timeout_s", type=float, default=150.0, help="timeout of one native recipe run")
    ap.add_argument("--vllm_timeout_s", type=float, default=200.0, help="timeout of one vLLM recipe run")
    args = ap.parse_args(argv)
    names = [c.strip() for c in args.checks.split(",") if c.strip()]
    unknown = [c for c in names if c not in CHECKS]
    if unknown or not names:
        ap.error(f"--checks: unknown check(s) {unknown or '(none given)'}; choose from {','.join(CHECKS)}")
    args.check_list = [c for c in CHECKS if c in names]
    if args.questions is None:
        args.questions = 4 if args.dry_run else 32
    if args.max_new_tokens is None:
        args.max_new_tokens = 16 if args.dry_run else 256
    if args.questions < 1 or args.max_new_tokens < 1:
        ap.error("--questions and --max_new_tokens must be >= 1")
    return args


def _git_commit() -> Optional[str]:
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=str(REPO), capture_output=True, text=True, timeout=10)
        return r.stdout.strip() or None if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _write(path: Path, summary: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    t_start = time.perf_counter()
    summary: dict[str, Any] = {
        "script": "bench/gpu_check.py", "argv": list(sys.argv[1:] if argv is None else argv),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "git_commit": _git_commit(),
        "host": platform.node(), "device": args.device, "dtype": args.dtype, "dry_run": args.dry_run,
        "ok": False, "total_seconds": None, "data": None, "checks": {},
    }
    for mod in ("torch", "transformers"):
        try:
            __import__(mod)
        except Exception as e:
            msg = (f"gpu_check: cannot import {mod} ({type(e).__name__}: {e}). This script needs torch and "
                   f"transformers already installed in {sys.executable} (the GPU machine has no internet and "
                   f"no pip); run it with the python that has them.")
            print(msg, file=sys.stderr, flush=True)
            summary["checks"]["env"] = {"status": "failed", "seconds": 0.0, "numbers": {}, "error": msg, "log": None}
            summary["total_seconds"] = round(time.perf_counter() - t_start, 2)
            _write(out, summary)
            return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="gpu_check_"))
    workdir.mkdir(parents=True, exist_ok=True)
    logdir = Path(args.logdir) if args.logdir else out.parent / (out.stem + "_logs")
    logdir.mkdir(parents=True, exist_ok=True)
    summary["workdir"], summary["logdir"] = str(workdir), str(logdir)
    ctx = Ctx(args, workdir, logdir)
    try:
        for name in args.check_list:
            res = run_check(ctx, name)
            summary["checks"][name] = res
            if ctx._questions is not None:
                summary["data"] = ctx._questions[1]
            line = f"gpu_check: {name} {res['status']} in {res['seconds']:.1f} s"
            if res["error"]:
                line += ": " + res["error"].splitlines()[0][:300]
            print(line, flush=True)
            summary["total_seconds"] = round(time.perf_counter() - t_start, 2)
            summary["ok"] = all(c["status"] in ("ok", "skipped") for c in summary["checks"].values())
            _write(out, summary)
    finally:
        if not args.workdir and not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
            summary["workdir"] = None
    summary["total_seconds"] = round(time.perf_counter() - t_start, 2)
    summary["ok"] = all(c["status"] in ("ok", "skipped") for c in summary["checks"].values())
    _write(out, summary)
    failed = [n for n, c in summary["checks"].items() if c["status"] == "failed"]
    print(f"gpu_check: {'all ok' if not failed else 'FAILED: ' + ', '.join(failed)} "
          f"({summary['total_seconds']:.0f} s) -> {out}", flush=True)
    return 0 if not failed else 1


def run_check(ctx: Ctx, name: str) -> dict:
    """One check -> ``{status, seconds, numbers, error, log}``; never raises."""
    res: dict[str, Any] = {"status": "failed", "seconds": 0.0, "numbers": {}, "error": None, "log": None}
    t0 = time.perf_counter()
    if ctx.no_device is not None:
        res["error"] = f"not run: {ctx.no_device}"
    elif time.monotonic() > ctx.deadline:
        res["error"] = f"not run: the time budget (--budget_s {ctx.args.budget_s:.0f}) was spent"
    else:
        if name in VLLM_CHECKS and ctx.vllm_ok is None:
            probe_vllm(ctx)
        if name in VLLM_CHECKS and not ctx.vllm_ok:
            res.update(status="skipped", error=f"import vllm failed: {ctx.vllm_note or 'not installed'}")
        else:
            print(f"gpu_check: {name} ...", flush=True)
            try:
                res["numbers"] = CHECK_FUNCS[name](ctx)
                res["status"] = "ok"
            except Exception as e:  # every failure is recorded; the other checks still run
                res["error"] = (f"{type(e).__name__}: {e}" if isinstance(e, CheckError)
                                else f"{type(e).__name__}: {e}\n{traceback.format_exc()[-3000:]}")
    res["seconds"] = round(time.perf_counter() - t0, 2)
    log = ctx.logdir / f"{name}.log"
    if log.exists():
        res["log"] = str(log)
    return res


def probe_vllm(ctx: Ctx) -> None:
    """Whether ``import vllm`` works, tried in a child process (slow to import, and it may set up
    CUDA in this process); sets ``ctx.vllm_ok``, ``ctx.vllm_version`` and ``ctx.vllm_note``."""
    log = ctx.logdir / "vllm_import.log"
    try:
        rc = run_child([sys.executable, "-c", "import vllm; print('vllm', vllm.__version__)"], log,
                       timeout_s=max(5.0, min(120.0, ctx.deadline - time.monotonic())))
    except CheckError as e:
        ctx.vllm_ok, ctx.vllm_note = False, str(e).splitlines()[0]
        return
    text = _tail(log, 4000)
    ctx.vllm_ok = rc == 0
    ver = [ln.split()[1] for ln in text.splitlines() if ln.startswith("vllm ") and len(ln.split()) == 2]
    ctx.vllm_version = ver[-1] if (rc == 0 and ver) else None
    ctx.vllm_note = "" if rc == 0 else (text.strip().splitlines() or ["?"])[-1]


if __name__ == "__main__":
    sys.exit(main())

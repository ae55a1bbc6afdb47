"""Per-rank memory of the sharded training path, measured against the memory plan.

    python bench/fsdp_memory.py                      # ~0.6B llama-shaped model, N = 1, 2, 4, 8
    python bench/fsdp_memory.py --nprocs 1,2 --layers 8 --keep /tmp/fsdp_bench   # a quick look

The bench writes a random llama-shaped model (tied embeddings, SmolLM2's architecture) as an HF dir
(several safetensors files + index, like a real checkpoint), then for each N runs one process group
of N gloo processes (``torchrun --standalone``, ``OMP_NUM_THREADS=1`` each) that:

1. records its RSS after importing torch and transformers' llama modules and joining the group:
   the bare torch+gloo process;
2. ``psr.training.fsdp.setup_model`` (meta build, fully_shard, per-rank slice loads): load time,
   peak RSS;
3. one SFT optimizer step (AdamW, fp32, activation checkpointing, a micro-batch of 1 x
   ``--seq_len`` tokens): peak RSS;
4. ``psr.models.hf.save_model_dir`` (one tensor gathered at a time, files of ``--max_shard_size``):
   save time.

Peaks are ``ru_maxrss`` (the process's high-water mark) minus the bare process's RSS. The workers
run with ``MALLOC_MMAP_THRESHOLD_=1048576``: with glibc's default (a threshold that grows to 32 MB
after the first large free) the buffers FSDP2 frees after each block stay in malloc's arenas and
RSS counts them; measured on 16 layers, 2 processes: 1,500 MiB after one forward, 877 MiB after
``malloc_trim(0)`` (846 before the forward). ``--glibc_default`` measures without it. GPUs have
their own caching allocator: the plan's fragmentation headroom stands for this there. Beside each
the plan's estimate (``psr.plan.estimate_training`` with the same settings on ``device=cpu``):
the parameters term after setup, the whole step total after the step.

Last line: ``ratio=<1-process step peak / largest per-rank step peak at the largest N>`` (both
above the bare process); the goal at N = 8 is >= 6 (ideal 8: what does not shrink with N is the
gathered root and blocks, their unsharded gradients and the activations).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MIB = 1 << 20


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def model_config(args):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                       num_hidden_layers=args.layers, num_attention_heads=args.heads,
                       num_key_value_heads=args.kv_heads, max_position_embeddings=4096,
                       tie_word_embeddings=True, bos_token_id=None, eos_token_id=2, pad_token_id=0)


def build_model_dir(path: Path, args) -> Path:
    """Random weights written file by file (never the whole model in memory)."""
    import torch
    from safetensors.torch import save_file

    from psr.models.hf import build_meta_model, parse_size
    from psr.models.tiny import build_tiny_tokenizer

    if (path / "model.safetensors.index.json").exists():
        return path
    path.mkdir(parents=True, exist_ok=True)
    cfg = model_config(args)
    meta = build_meta_model(cfg, "float32")
    limit = parse_size(args.max_shard_size)
    gen = torch.Generator().manual_seed(0)
    shards: list[dict] = [{}]
    used = 0
    for name, p in meta.named_parameters():  # tied head: once, as embed_tokens
        t = torch.ones(p.shape) if name.endswith("norm.weight") else torch.randn(p.shape, generator=gen) * 0.02
        if shards[-1] and used + t.numel() * 4 > limit:
            shards.append({})
            used = 0
        shards[-1][name] = t
        used += t.numel() * 4
    weight_map, total = {}, 0
    for k, shard in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(path / fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in shard})
        total += sum(t.numel() * 4 for t in shard.values())
        shard.clear()
    (path / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    cfg.architectures = ["LlamaForCausalLM"]
    cfg.save_pretrained(str(path))
    build_tiny_tokenizer().save_pretrained(str(path))
    return path


def worker(args) -> None:
    import torch

    from psr import distributed as D
    from psr.models.hf import save_model_dir
    from psr.training.forward import labeled_logits
    from psr.training.fsdp import setup_model
    from psr.training.losses import sft_loss
    from psr.training.optim import build_optimizer

    import transformers.models.llama.modeling_llama  # noqa: F401 - import costs belong to the bare process

    D.init_distributed(torch.device("cpu"))
    D.barrier()
    bare = rss_bytes()
    t0 = time.perf_counter()
    setup = setup_model(args.model_dir, device="cpu", dtype="float32", activation_checkpointing=True)
    D.barrier()
    load_s = time.perf_counter() - t0
    setup_peak = peak_bytes()
    model = setup.model
    opt = build_optimizer(model, 1e-5, 0.0, (0.9, 0.999), 1e-8)
    g = torch.Generator().manual_seed(D.get_rank())
    ids = torch.randint(3, args.vocab, (1, args.seq_len), generator=g)
    mask = torch.ones_like(ids)
    t0 = time.perf_counter()
    logits, targets = labeled_logits(model, ids, mask, ids.clone())
    loss = sft_loss(logits, targets)[0]
    del logits
    fwd_peak = peak_bytes()
    loss.backward()
    bwd_peak = peak_bytes()
    opt.step()
    opt.zero_grad(set_to_none=True)
    D.barrier()
    step_s = time.perf_counter() - t0
    step_peak = peak_bytes()
    t0 = time.perf_counter()
    save_model_dir(model, setup.tokenizer, Path(args.out) / "saved", max_shard_size=args.max_shard_size)
    save_s = time.perf_counter() - t0
    rec = {"rank": D.get_rank(), "bare": bare, "setup_peak": setup_peak, "step_peak": step_peak, "fwd_peak": fwd_peak, "bwd_peak": bwd_peak,
           "save_peak": peak_bytes(), "load_s": load_s, "step_s": step_s, "save_s": save_s,
           "loss": float(loss)}
    (Path(args.out) / f"rank{D.get_rank()}.json").write_text(json.dumps(rec))
    D.barrier()
    D.destroy()


def plan_for(args, n: int):
    from psr.plan import estimate_training

    cfg = model_config(args).to_dict()
    cfg["model_type"] = "llama"
    return estimate_training(cfg, objective="sft", micro_batch_size=1, max_seq_len=args.seq_len, dtype="float32",
                             activation_checkpointing=True, nproc_per_node=n, device="cpu")


def run(args) -> None:
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="psr_fsdp_bench_"))
    t0 = time.perf_counter()
    model_dir = build_model_dir(work / "model", args)
    build_s = time.perf_counter() - t0
    plan1 = plan_for(args, 1)
    print(f"model: llama-shaped, {plan1.shape.n_params / 1e9:.3f}B parameters (hidden {args.hidden}, "
          f"{args.layers} layers, vocab {args.vocab}, tied), fp32, written in {build_s:.0f} s to {model_dir}")
    print(f"step: SFT, micro-batch 1 x {args.seq_len} tokens, AdamW, activation checkpointing; gloo, "
          f"OMP_NUM_THREADS=1 per process; {os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}")
    print(f"{'N':>3} {'setup peak':>11} {'plan':>8} {'err':>6} {'step peak':>10} {'plan':>8} {'err':>6} "
          f"{'load s':>7} {'step s':>7} {'save s':>7}  (MiB per rank above the bare process, largest rank)")
    rows = {}
    for n in [int(x) for x in args.nprocs.split(",")]:
        out = work / f"run_{n}"
        out.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, OMP_NUM_THREADS="1")
        if not args.glibc_default:
            # glibc keeps freed multi-MB buffers in its arenas when the dynamic mmap threshold has grown
            # (FSDP2 frees each block's all-gather buffer, gloo's threads allocate in arenas of their
            # own): RSS then counts freed memory. A fixed threshold maps such buffers on their own and
            # returns them on free, so the peak is what was live (docstring, --glibc_default)
            env.setdefault("MALLOC_MMAP_THRESHOLD_", str(1 << 20))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
               __file__, "--worker", "--model_dir", str(model_dir), "--out", str(out)] + \
              [f"--{k}={getattr(args, k)}" for k in ("vocab", "hidden", "intermediate", "layers", "heads",
                                                      "kv_heads", "seq_len", "max_shard_size")]
        p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
        if p.returncode != 0:
            sys.exit(f"N={n} failed:\n{p.stderr[-3000:]}")
        recs = [json.loads((out / f"rank{r}.json").read_text()) for r in range(n)]
        setup = max(r["setup_peak"] - r["bare"] for r in recs)
        step = max(r["step_peak"] - r["bare"] for r in recs)
        plan = plan_for(args, n)
        p_setup, p_step = plan.term("parameters"), plan.total
        rows[n] = step
        print(f"{n:>3} {setup / MIB:>11.0f} {p_setup / MIB:>8.0f} {100 * (p_setup - setup) / setup:>+5.0f}% "
              f"{step / MIB:>10.0f} {p_step / MIB:>8.0f} {100 * (p_step - step) / step:>+5.0f}% "
              f"{max(r['load_s'] for r in recs):>7.1f} {max(r['step_s'] for r in recs):>7.1f} "
              f"{max(r['save_s'] for r in recs):>7.1f}", flush=True)
    first, last = min(rows), max(rows)
    print(f"ratio={rows[first] / rows[last]:.2f}  ({first}-process step peak / largest per-rank step peak "
          f"at {last} processes; goal >= 6 at 8)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model_dir", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--nprocs", default="1,2,4,8")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--intermediate", type=int, default=4096)
    ap.add_argument("--layers", type=int, default=40)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--kv_heads", type=int, default=4)
    ap.add_argument("--seq_len", type=int, default=128)
    ap.add_argument("--max_shard_size", default="1GB")
    ap.add_argument("--glibc_default", action="store_true",
                    help="keep glibc's dynamic mmap threshold (RSS then includes freed buffers glibc retains)")
    ap.add_argument("--keep", help="work dir to keep (and reuse the model from); default: a temp dir")
    args = ap.parse_args()
    if args.worker:
        worker(args)
    else:
        run(args)


if __name__ == "__main__":
    main()

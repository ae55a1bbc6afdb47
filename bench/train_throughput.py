"""Training throughput: eft_ift_sft (ours) vs torchtune 0.6.1's full_finetune_distributed recipe.

    python bench/train_throughput.py [--out /tmp/train_bench] [--nprocs 1 2] [--epochs 2] [--dtype fp32]

Same tiny random qwen2 model (hidden 256, 4 layers, ~2M params, built here), same token ids and
labels (the tiny IFT/EFT data, tokenised once by psr.training.sft_data; fed to torchtune as a
pre-tokenised dataset), same global batch (8 = micro-batch 4 × accumulation × processes), same
AdamW, clipping and epochs; fp32 by default. Both run under torchrun (gloo on CPU) with 1 and with 2
processes, one run each. Throughput = non-padding tokens trained ÷ wall time of the recipe's train
loop (our ``psr.training.loop.train`` / torchtune's ``FullFinetuneRecipeDistributed.train``, both
including their end-of-epoch checkpoint saves), timed by a small launcher that wraps that method.

torchtune's shipped recipe does not run on CPU; the benchmark copies it to a temporary directory and
patches the copy (never the installed package, never committed): (1) the initial memory-stats logging
is limited to CUDA devices, (2) ``training.cleanup_before_training()`` (which calls the missing
``torch.cpu.empty_cache`` / ``reset_peak_memory_stats``) becomes ``gc.collect()``.

Output: one line per (recipe, nprocs) and the last line ``ratio=<ours ÷ torchtune>`` (geometric
mean over the process counts; higher is better).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HIDDEN, LAYERS, HEADS, KV_HEADS, INTER = 256, 4, 4, 2, 512
GLOBAL_BATCH, MICRO = 8, 4

TT_HELPER = '''
import json
import torch

class PretokenizedTokenizer:
    """The only tokenizer attribute full_finetune_distributed uses with a pre-tokenised dataset."""
    def __init__(self, pad_id, max_seq_len=None):
        self.pad_id = pad_id
        self.max_seq_len = max_seq_len

def pretokenized_dataset(tokenizer, path):
    return [json.loads(l) for l in open(path)]
'''

TT_LAUNCH = '''
import sys, time
sys.path.insert(0, {tmp!r})
import full_finetune_distributed_cpu as r
_train = r.FullFinetuneRecipeDistributed.train
def timed(self, *a, **k):
    t0 = time.perf_counter()
    out = _train(self, *a, **k)
    if self._is_rank_zero:
        print("TRAIN_SECONDS=%.6f" % (time.perf_counter() - t0), flush=True)
    return out
r.FullFinetuneRecipeDistributed.train = timed
sys.exit(r.recipe_main())
'''

OURS_LAUNCH = '''
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("eft_ift_sft", {recipe!r})
m = importlib.util.module_from_spec(spec); sys.modules["eft_ift_sft"] = m; spec.loader.exec_module(m)
from psr import distributed as D
from psr.config import recipe_main
_train = m.train
def timed(*a, **k):
    t0 = time.perf_counter()
    out = _train(*a, **k)
    if D.is_rank0():
        print("TRAIN_SECONDS=%.6f" % (time.perf_counter() - t0), flush=True)
    return out
m.train = timed
recipe_main(m.EftIftSftConfig, m.main)
'''


def patched_torchtune_recipe(tmp: Path) -> Path:
    import importlib.util

    spec = importlib.util.find_spec("recipes")  # torchtune's recipes dir, installed beside torchtune
    src = Path(spec.origin).parent / "full_finetune_distributed.py"
    text = src.read_text()
    mem = "        if self._is_rank_zero:\n            memory_stats = training.get_memory_stats(device=self._device)"
    assert text.count(mem) == 1, "torchtune recipe changed: memory-stats patch does not apply"
    text = text.replace(mem, mem.replace("if self._is_rank_zero:", 'if self._is_rank_zero and self._device.type == "cuda":'))
    cleanup = "training.cleanup_before_training()"
    assert text.count(cleanup) == 1, "torchtune recipe changed: empty_cache patch does not apply"
    text = text.replace(cleanup, "__import__('gc').collect()  # CPU: torch.cpu has no empty_cache")
    dst = tmp / "full_finetune_distributed_cpu.py"
    dst.write_text(text)
    (tmp / "psr_bench_tt.py").write_text(TT_HELPER)
    return dst


def build_assets(work: Path, dtype: str):
    from psr.data.schemas import load_eft, load_ift
    from psr.models.hf import load_tokenizer
    from psr.models.tiny import build_tiny_model_dir
    from psr.testing import write_tiny_sft_data
    from psr.training.sft_data import build_sft_examples

    model = build_tiny_model_dir(work / "model", seed=0, hidden_size=HIDDEN, num_layers=LAYERS, num_heads=HEADS,
                                 num_kv_heads=KV_HEADS, intermediate_size=INTER)
    ift, eft = write_tiny_sft_data(work / "data", n_ift=48, n_eft=16, seed=0)
    tok = load_tokenizer(model)
    examples, _ = build_sft_examples(tok, load_ift(ift), load_eft(eft), 1024)
    with (work / "pretokenized.jsonl").open("w") as f:
        for e in examples:
            f.write(json.dumps({"tokens": e.input_ids, "labels": e.labels}) + "\n")
    cfg = json.loads((model / "config.json").read_text())
    return model, ift, eft, tok, examples, cfg


def torchtune_config(path: Path, model: Path, data: Path, tok, cfg: dict, out: Path, epochs: int, nprocs: int,
                     dtype: str, lr: float) -> None:
    import yaml

    c = {
        "output_dir": str(out),
        "tokenizer": {"_component_": "psr_bench_tt.PretokenizedTokenizer", "pad_id": tok.pad_token_id},
        "dataset": {"_component_": "psr_bench_tt.pretokenized_dataset", "path": str(data)},
        "seed": 0, "shuffle": True,
        "model": {"_component_": "torchtune.models.qwen2.qwen2", "vocab_size": cfg["vocab_size"],
                  "num_layers": LAYERS, "num_heads": HEADS, "num_kv_heads": KV_HEADS, "embed_dim": HIDDEN,
                  "intermediate_dim": INTER, "max_seq_len": 2048, "norm_eps": cfg.get("rms_norm_eps", 1e-6),
                  "rope_base": float((cfg.get("rope_parameters") or {}).get("rope_theta", cfg.get("rope_theta", 10000.0))),
                  "tie_word_embeddings": True},
        "checkpointer": {"_component_": "torchtune.training.FullModelHFCheckpointer", "checkpoint_dir": str(model),
                         "checkpoint_files": ["model.safetensors"], "recipe_checkpoint": None,
                         "output_dir": str(out), "model_type": "QWEN2"},
        "resume_from_checkpoint": False,
        "batch_size": MICRO, "epochs": epochs,
        "optimizer": {"_component_": "torch.optim.AdamW", "lr": lr, "fused": False},
        "loss": {"_component_": "torchtune.modules.loss.CEWithChunkedOutputLoss"},
        "max_steps_per_epoch": None,
        "gradient_accumulation_steps": GLOBAL_BATCH // (MICRO * nprocs),
        "clip_grad_norm": 1.0, "compile": False, "optimizer_in_bwd": False,
        "device": "cpu", "enable_activation_checkpointing": False, "enable_activation_offloading": False,
        "dtype": dtype,
        "metric_logger": {"_component_": "torchtune.training.metric_logging.DiskLogger", "log_dir": str(out / "logs")},
        "log_every_n_steps": 1, "log_peak_memory_stats": False,
    }
    path.write_text(yaml.safe_dump(c))


def run(cmd: list[str], env: dict) -> float:
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    m = re.findall(r"TRAIN_SECONDS=([0-9.]+)", p.stdout)
    if not m:
        raise RuntimeError(f"no TRAIN_SECONDS in output:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return float(m[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--nprocs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--lr", type=float, default=1e-4)
    args = ap.parse_args()
    work = Path(args.out or tempfile.mkdtemp(prefix="train_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="tt_recipe_"))
    try:
        model, ift, eft, tok, examples, cfg = build_assets(work, args.dtype)
        patched_torchtune_recipe(tmp)
        n_params = None
        tokens = args.epochs * sum(len(e) for e in examples)
        assert len(examples) % GLOBAL_BATCH == 0  # no partial batch in either recipe: same tokens trained
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2)))}
        env["PYTHONPATH"] = os.pathsep.join([str(tmp), str(REPO), env.get("PYTHONPATH", "")])
        (tmp / "tt_launch.py").write_text(TT_LAUNCH.format(tmp=str(tmp)))
        (tmp / "ours_launch.py").write_text(OURS_LAUNCH.format(recipe=str(REPO / "recipes" / "eft_ift_sft.py")))
        print(f"model: qwen2 hidden={HIDDEN} layers={LAYERS} vocab={cfg['vocab_size']}; {len(examples)} examples, "
              f"{tokens} tokens over {args.epochs} epochs; global batch {GLOBAL_BATCH}, micro-batch {MICRO}, dtype {args.dtype}")
        ratios = []
        for n in args.nprocs:
            threads = max(1, (os.cpu_count() or 2) // n)
            env_n = {**env, "OMP_NUM_THREADS": str(threads)}
            torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n)]
            tt_cfg = work / f"tt_{n}.yaml"
            torchtune_config(tt_cfg, model, work / "pretokenized.jsonl", tok, cfg, work / f"tt_out_{n}", args.epochs, n,
                             args.dtype, args.lr)
            t_tt = run(torchrun + [str(tmp / "tt_launch.py"), "--config", str(tt_cfg)], env_n)
            ours_args = [f"model_dir={model}", f"ift_data={ift}", f"eft_data={eft}", f"output_dir={work / f'ours_{n}'}",
                         "device=cpu", f"dtype={'float32' if args.dtype == 'fp32' else 'bfloat16'}",
                         f"master_weights_fp32={'true' if args.dtype == 'fp32' else 'false'}",
                         f"batch_size={GLOBAL_BATCH}", f"micro_batch_size={MICRO}", f"epochs={args.epochs}",
                         f"lr={args.lr}", "warmup_steps=0", "min_lr_ratio=1.0", "max_grad_norm=1.0", "max_seq_len=1024",
                         "progress_bar=false"]
            t_ours = run(torchrun + [str(tmp / "ours_launch.py"), *ours_args], env_n)
            ours, tt = tokens / t_ours, tokens / t_tt
            ratios.append(ours / tt)
            print(f"nprocs={n}  eft_ift_sft: {ours:9.1f} tok/s ({t_ours:.2f} s)   torchtune full_finetune_distributed: "
                  f"{tt:9.1f} tok/s ({t_tt:.2f} s)   ratio {ours / tt:.3f}", flush=True)
        print(f"ratio={math.exp(sum(math.log(r) for r in ratios) / len(ratios)):.4f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

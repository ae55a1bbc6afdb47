r"""Step-DPO training cost per pair against SFT cost per example of the same length.

    python bench/dpo_throughput.py [--hidden 128] [--layers 4] [--pairs 8] [--iters 8] [--device cpu]

Both sides train the same model on the same token sequences with the same code path (one
forward + backward + AdamW step per batch, psr.training losses, logits only where a loss is read):

* SFT: the 2B sequences prompt+chosen and prompt+rejected of B pairs as 2B SFT examples (loss on
  the step tokens, psr.training.forward.labeled_logits + sft_loss), i.e. what eft_ift_sft does.
* step DPO: the B pairs as recipes/step_dpo.py trains them — one policy forward of the [2B, T]
  batch, the DPO loss against *cached* reference log-probs (psr.training.dpo).
* for information: step DPO with a live reference forward per batch (what the cache avoids).

A pair is two sequences, so with no reference forward a pair should cost two SFT examples:

    ratio = (sft_seconds_per_example * 2) / dpo_seconds_per_pair        (higher is better)

≈ 1.0 means DPO adds nothing over SFT on the same tokens; a live reference forward would show as
≈ 0.75 (a forward is about a third of forward+backward). The last line is ``ratio=<float>``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from psr.data.pairs import pair_from_record  # noqa: E402
from psr.testing import tiny_pairs  # noqa: E402
from psr.training.dpo import collate_pairs, dpo_loss, forward_logps, tokenize_pairs  # noqa: E402
from psr.training.forward import labeled_logits  # noqa: E402
from psr.training.losses import IGNORE_INDEX, sft_loss  # noqa: E402


def sft_batch(examples, pad_id):
    seqs, labels = [], []
    for t in examples:
        for resp in (t.chosen_ids, t.rejected_ids):
            seqs.append(t.prompt_ids + resp)
            labels.append([IGNORE_INDEX] * len(t.prompt_ids) + resp)
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id)
    lab = torch.full((len(seqs), T), IGNORE_INDEX)
    attn = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, (s, l) in enumerate(zip(seqs, labels)):
        ids[i, : len(s)] = torch.tensor(s)
        lab[i, : len(l)] = torch.tensor(l)
        attn[i, : len(s)] = 1
    return ids, attn, lab, len(seqs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--pairs", type=int, default=8, help="pairs per batch (B)")
    ap.add_argument("--iters", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = ap.parse_args()
    torch.manual_seed(0)
    dev = torch.device(args.device)
    from transformers import AutoModelForCausalLM

    from psr.models.hf import load_tokenizer
    from psr.models.tiny import build_tiny_model_dir

    with tempfile.TemporaryDirectory() as d:
        mdir = build_tiny_model_dir(Path(d) / "m", hidden_size=args.hidden, num_layers=args.layers,
                                    num_heads=4, num_kv_heads=2)
        tok = load_tokenizer(mdir)
        model = AutoModelForCausalLM.from_pretrained(str(mdir)).to(dev).train()
    recs = tiny_pairs(args.pairs, seed=0)
    pairs = [pair_from_record(r, f"tiny:{i}", i) for i, r in enumerate(recs)]
    ex = tokenize_pairs(tok, pairs, max_seq_len=4096)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    amp = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if args.dtype == "bfloat16" else None
    import contextlib

    ctx = amp or contextlib.nullcontext

    ids, attn, lab, n_sft = sft_batch(ex, tok.pad_token_id)
    ids, attn, lab = ids.to(dev), attn.to(dev), lab.to(dev)

    def sft_step():
        with ctx():
            logits, targets = labeled_logits(model, ids, attn, lab)
            loss, n = sft_loss(logits, targets)
        (loss / n).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    batch = collate_pairs(ex, tok.pad_token_id)
    with torch.no_grad():
        rc, rr = forward_logps(model, batch, dev, amp)
    rc, rr = rc.detach(), rr.detach()

    def dpo_step(live_ref=False):
        ref_c, ref_r = rc, rr
        if live_ref:
            with torch.no_grad():
                ref_c, ref_r = forward_logps(model, batch, dev, amp)
        pc, pr = forward_logps(model, batch, dev, amp)
        losses, _, _ = dpo_loss(pc, pr, ref_c, ref_r, beta=0.1)
        losses.mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    n_tok = int(attn.sum())
    # Interleaved (sft, dpo, live) rounds, medians: drift on a shared machine hits all three alike.
    steps = {"sft": sft_step, "dpo": dpo_step, "live": lambda: dpo_step(True)}
    for f in steps.values():
        f()
    times = {k: [] for k in steps}
    for _ in range(args.iters):
        for k, f in steps.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    sft_s = statistics.median(times["sft"]) / n_sft
    dpo_s = statistics.median(times["dpo"]) / len(ex)
    live_s = statistics.median(times["live"]) / len(ex)
    params = sum(p.numel() for p in model.parameters())
    print(f"model: qwen2 hidden={args.hidden} layers={args.layers} ({params / 1e6:.2f}M params), device={dev}, "
          f"dtype={args.dtype}, torch threads={torch.get_num_threads()}")
    print(f"batch: {len(ex)} pairs = {n_sft} sequences, {n_tok} tokens "
          f"(mean prompt {statistics.mean(len(t.prompt_ids) for t in ex):.0f}, "
          f"mean step {statistics.mean((len(t.chosen_ids) + len(t.rejected_ids)) / 2 for t in ex):.1f} tokens)")
    print(f"sft seconds per example:              {sft_s:.5f}")
    print(f"step_dpo seconds per pair (cached ref): {dpo_s:.5f}   (= {dpo_s / sft_s:.2f} SFT examples)")
    print(f"step_dpo seconds per pair (live ref):   {live_s:.5f}   (= {live_s / sft_s:.2f} SFT examples; not used)")
    print(f"ratio=(sft_s_per_example*2)/dpo_s_per_pair; live-reference equivalent={2 * sft_s / live_s:.3f}")
    print(f"ratio={2 * sft_s / dpo_s:.4f}")


if __name__ == "__main__":
    main()

"""Arith world: how compactly the arith tokenizer encodes the training records, against a
conventional byte-level BPE of the same vocabulary size trained on the same corpus.

    python bench/arith_world.py                 # 300 problems per split, vocab 2048 (~10 s)
    python bench/arith_world.py --n 500 --vocab 4096

Ours (psr.arith.tokenizer): digits split one by one, merges may cross spaces (not newlines), so
the long fixed prompts (Figure 4/5, chat template) become a few tokens.
Baseline: the GPT-2/Qwen-style pre-tokenizer (ByteLevel regex: words, numbers, punctuation are
separate pieces) with digits also split one by one, same vocab size, same corpus.
Sequence length is what training and generation pay for (attention and KV cache grow with it),
so the figure of merit is tokens per record. Prints mean/max tokens per record kind for both, the
data-generation and checker throughput, and ends with ``ratio=<baseline mean tokens / ours>``
over the IFT and EFT records (higher is better).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from psr import prompts
from psr.arith.candidates import random_wrong_step
from psr.arith.checker import check_step
from psr.arith.data import eft_records
from psr.arith.problems import make_splits
from psr.arith.tokenizer import build_arith_tokenizer, tokenizer_corpus
from psr.models.tiny import CHAT_TEMPLATE, SPECIAL_TOKENS
from psr.steps import format_steps


def baseline_tokenizer(vocab_size: int, corpus: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def record_texts(tok, n: int) -> dict[str, list[str]]:
    train, test = make_splits(n, n, 0)
    eos = "<|im_end|>"
    return {
        "ift": [prompts.chat(tok, prompts.reasoning_prompt(p.question)) + format_steps(p.steps) + eos for p in train],
        "ift_test": [prompts.chat(tok, prompts.reasoning_prompt(p.question)) + format_steps(p.steps) + eos for p in test],
        "eft": [
            prompts.chat(tok, prompts.judge_prompt(r["question"], r["prev_steps"], r["step_a"], r["step_b"])) + r["judgment"] + eos
            for r in eft_records(train, 0)
        ],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="problems per split")
    ap.add_argument("--vocab", type=int, default=2048)
    args = ap.parse_args()

    t = time.perf_counter()
    train, test = make_splits(2000, 300, 1)
    eft = eft_records(train, 1)
    t_data = time.perf_counter() - t
    print(f"data: 2000+{len(test)} problems and {len(eft)} EFT records in {t_data:.2f}s")
    rng = random.Random(0)
    items = []
    for p in train[:1000]:
        for l in range(1, p.n_ops + 1):
            items += [(p, p.steps[: l - 1], p.steps[l - 1]), (p, p.steps[: l - 1], random_wrong_step(p, l, rng).body)]
    t = time.perf_counter()
    verdicts = [check_step(p, prev, s) for p, prev, s in items]
    t_check = time.perf_counter() - t
    print(f"checker: {len(items)} steps in {t_check:.2f}s ({len(items) / t_check:,.0f} steps/s), "
          f"{sum(verdicts)} judged correct (expected {len(items) // 2})")

    corpus = tokenizer_corpus()
    ours = build_arith_tokenizer(args.vocab, corpus)
    base = baseline_tokenizer(args.vocab, corpus)
    means = {}
    for name, tok in (("ours", ours), ("baseline", base)):
        texts = record_texts(tok, args.n)
        all_lens = []
        for kind, ts in texts.items():
            lens = [len(tok(x, add_special_tokens=False)["input_ids"]) for x in ts]
            print(f"{name:9s} {kind:9s} mean {statistics.mean(lens):6.1f}  max {max(lens)}")
            if kind != "ift_test":
                all_lens += lens
        means[name] = statistics.mean(all_lens)
    print(f"mean tokens per IFT/EFT record: ours {means['ours']:.1f}, baseline {means['baseline']:.1f}")
    print(f"ratio={means['baseline'] / means['ours']:.3f}")


if __name__ == "__main__":
    main()

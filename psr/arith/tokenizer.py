r"""The arith world's tokenizer: a small BPE fit to the arith texts, digits split one by one.

* Pre-tokenization splits every digit into its own piece (``Digits(individual_digits=True)``)
  and otherwise does *not* split on whitespace (``ByteLevel(use_regex=False)``), so BPE merges
  may cross word boundaries: the long fixed prompt texts (Figures 3-5 and the chat template) are
  learned as a few long tokens, and the variable text as word-sized pieces. Numbers are always
  one token per digit, so arithmetic is learnable by a tiny model.
* A newline always ends a piece, so no token spans a line break: a policy prompt ending in
  ``"...\n"`` (the previous steps) tokenizes exactly as the same text inside a training
  sequence, and the next ``"Step l:"`` starts a fresh token at inference as in training.
* Byte-level alphabet: any text round-trips (no unknown token).
* Special tokens and chat template are those of :mod:`psr.models.tiny`: ``<|endoftext|>``
  (pad), ``<|im_start|>``, ``<|im_end|>`` (EOS, the end of a chat turn).
* Deterministic: trained on a corpus generated from a fixed seed (:func:`tokenizer_corpus`).
* The corpus also holds the SRLM baseline's scoring prompt (Yuan et al.'s Figure 2,
  :data:`psr.srlm.SRLM_JUDGE_PROMPT`) filled with arith solutions and templated judgments, so
  that prompt's fixed text is learned as a few long tokens too (it was 835 tokens, more than the
  model's 512 positions, with a BPE that never saw it) and the same tokenizer and M0 serve both
  methods of ``recipes/pipeline.py`` (``method: psr | srlm``).
"""

from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence


def chat_text(text: str) -> str:
    """``text`` as a user turn of the chat template, ready for the assistant's reply."""
    return f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"


def role_texts(problems: Sequence[Any], eft: Iterable[dict]) -> list[str]:
    """The texts of the policy (Figure 4 prompt + steps) and free-form (question + solution)
    roles for each problem, then the judge role (Figure 5 prompt + judgment) for each EFT record:
    the core of an embedded world's tokenizer corpus (arith's and psr.bags')."""
    from psr import prompts
    from psr.steps import format_steps

    texts = []
    for p in problems:
        texts.append(chat_text(prompts.reasoning_prompt(p.question)) + format_steps(p.steps) + "<|im_end|>")
        texts.append(chat_text(p.question) + p.solution + "<|im_end|>")
    for r in eft:
        texts.append(chat_text(prompts.judge_prompt(r["question"], r["prev_steps"], r["step_a"], r["step_b"]))
                     + r["judgment"] + "<|im_end|>")
    return texts


def tokenizer_corpus(n_problems: int = 400, seed: int = 12345) -> list[str]:
    """Texts as the models will see them (chat-wrapped prompts plus responses) for the three
    roles (policy with steps, judge, free-form M0), the Figure 3 prompt and the SRLM scoring
    prompt (every other problem's reference solution, judged correct or wrong in turn), from
    problems of a split (``"tokenizer"``) that neither train nor test uses."""
    from psr import prompts
    from psr.arith.data import eft_records
    from psr.arith.problems import generate_problems
    from psr.srlm import (CORRECT_JUSTIFICATION, CORRECT_SCORE, WRONG_JUSTIFICATION, WRONG_SCORE, scoring_judgment,
                          srlm_judge_prompt)
    from psr.steps import format_steps

    problems = generate_problems(n_problems, seed, "tokenizer", 1, 6)
    texts = role_texts(problems, eft_records(problems, seed))
    for p in problems[:50]:
        texts.append(chat_text(prompts.ift_split_prompt(p.question, p.solution)) + format_steps(p.steps))
    for k, p in enumerate(problems[::2]):
        ok = k % 2 == 0
        judgment = scoring_judgment(CORRECT_SCORE if ok else WRONG_SCORE, CORRECT_JUSTIFICATION if ok else WRONG_JUSTIFICATION)
        texts.append(chat_text(srlm_judge_prompt(p.question, format_steps(p.steps))) + judgment + "<|im_end|>")
    return texts


def build_arith_tokenizer(vocab_size: int = 2048, corpus: Optional[list[str]] = None, seed: int = 12345):
    """The arith tokenizer as a ``PreTrainedTokenizerFast`` (EOS ``<|im_end|>``, pad
    ``<|endoftext|>``, left padding, the tiny models' chat template)."""
    from tokenizers import pre_tokenizers

    from psr.models.tiny import train_bpe_tokenizer

    pre = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split("\n", behavior="merged_with_previous"),
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    return train_bpe_tokenizer(corpus if corpus is not None else tokenizer_corpus(seed=seed), vocab_size, pre)


def token_lengths(tok, n_problems: int = 300, seed: int = 0) -> dict[str, dict[str, float]]:
    """Token counts (prompt + response + EOS, as the SFT recipes see them) of the records the
    pipeline trains on: ``ift`` (train split), ``ift_test`` (test split, longer problems), ``eft``
    (train split, both orders), ``m0`` (question → free-form solution). Each: mean, median, max."""
    import statistics

    from psr import prompts
    from psr.arith.data import eft_records
    from psr.arith.problems import make_splits
    from psr.steps import format_steps

    train, test = make_splits(n_problems, n_problems, seed)

    def n(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    def ift(p) -> int:
        return n(prompts.chat(tok, prompts.reasoning_prompt(p.question)) + format_steps(p.steps) + tok.eos_token)

    lengths = {
        "ift": [ift(p) for p in train],
        "ift_test": [ift(p) for p in test],
        "eft": [
            n(prompts.chat(tok, prompts.judge_prompt(r["question"], r["prev_steps"], r["step_a"], r["step_b"]))
              + r["judgment"] + tok.eos_token)
            for r in eft_records(train, seed)
        ],
        "m0": [n(prompts.chat(tok, p.question) + p.solution + tok.eos_token) for p in train],
    }
    return {
        k: {"mean": statistics.mean(v), "median": statistics.median(v), "max": max(v)} for k, v in lengths.items()
    }

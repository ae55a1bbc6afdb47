r"""Figure 2 of the paper (data distribution): a 2-D t-SNE of the IFT, EFT and iteration data.

    python -m psr.tsne --encoder <model dir> --data IFT=<ift.jsonl> --data EFT=<eft_train.jsonl> \
        --data "PPD(M1)=<search_1/pairs.jsonl>" --data "PPD(M2)=<search_2/pairs.jsonl>" \
        --limit 500 --out /tmp/fig2.png
    # e.g. on an arith pipeline run:
    python -m psr.tsne --encoder RUN/stages/m1/final --data IFT=RUN/data/ift_train.jsonl \
        --data EFT=RUN/data/eft_train.jsonl --data "PPD(M1)=RUN/stages/search_1/pairs.jsonl" --out RUN/tsne.png

The paper embeds its data with BERT. There is no hub here, so the encoder is any local HF model
dir (``--encoder``): a text encoder if you have one, by default the policy itself -- each text is
embedded as the mean of the model's last hidden states over its tokens (``AutoModel``, attention
mask respected). The plot's caption names the encoder, so a figure made with the policy's hidden
states is never mistaken for the paper's BERT one.

Each ``--data NAME=PATH`` is one group (colour) of a jsonl in one of the project's schemas; the
text embedded per record (:func:`record_text`):

* IFT ``{question, steps}``: the question and its steps;
* EFT ``{question, prev_steps, step_a, step_b}``: the Figure 5 judge prompt (+ ``judgment``);
* step pairs ``{question, prev_steps, chosen}`` (step_search) or whole-response pairs ``{prompt,
  chosen}`` (srlm_search): the question, the previous steps and the chosen response;
* TEXT ``{prompt, response}``; questions ``{problem}`` or ``{question}``.

``--limit N`` keeps N records per group (a seeded sample). Output: the PNG and, beside it,
``<out>.jsonl`` with every point (group, index, x, y). Needs scikit-learn (``pip install
scikit-learn``; the ``tsne`` extra of pyproject.toml).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from psr.data.jsonl import read_jsonl


def record_text(rec: dict, where: str = "record") -> str:
    """The text of one record (module docstring); a record of no known schema is a ValueError
    naming ``where``."""
    from psr.prompts import judge_prompt
    from psr.steps import format_steps

    if "steps" in rec and "question" in rec:  # IFT
        return f"{rec['question']}\n{format_steps(list(rec['steps']))}"
    if {"step_a", "step_b", "prev_steps", "question"} <= set(rec):  # EFT
        text = judge_prompt(rec["question"], list(rec["prev_steps"]), rec["step_a"], rec["step_b"])
        return text + ("\n" + rec["judgment"] if rec.get("judgment") else "")
    if "chosen" in rec:  # preference pairs: step-wise (step_search) or whole responses (srlm_search)
        q = rec.get("question", rec.get("prompt", ""))
        prev = rec.get("prev_steps") or []
        return f"{q}\n" + "".join(f"{s}\n" for s in prev) + str(rec["chosen"])
    if "prompt" in rec and "response" in rec:  # TEXT
        return f"{rec['prompt']}{rec['response']}"
    for key in ("problem", "question"):
        if isinstance(rec.get(key), str):
            return rec[key]
    raise ValueError(f"{where}: no known schema (fields {sorted(rec)}; expected IFT, EFT, pairs, text or questions)")


def load_group(path: str | Path, limit: Optional[int], seed: int) -> list[str]:
    recs = read_jsonl(path)
    if not recs:
        raise ValueError(f"{path}: no records")
    idx = list(range(len(recs)))
    if limit is not None and limit < len(idx):
        idx = sorted(random.Random(f"tsne:{seed}:{path}").sample(idx, limit))
    return [record_text(recs[i], f"{path}:{i + 1}") for i in idx]


def embed(texts: Sequence[str], encoder: str | Path, batch_size: int = 32, max_length: int = 512,
          device: str = "cpu"):
    """Mean of the last hidden states over each text's tokens (float32 numpy array, one row per text)."""
    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(encoder))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModel.from_pretrained(str(encoder), dtype=torch.float32).to(device).eval()
    out = []
    with torch.no_grad():
        for k in range(0, len(texts), batch_size):
            batch = tok(list(texts[k:k + batch_size]), return_tensors="pt", padding=True, truncation=True,
                        max_length=max_length, add_special_tokens=False).to(device)
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).cpu().numpy())
    return np.concatenate(out).astype("float32")


def tsne_2d(x, seed: int = 0):
    """2-D t-SNE (scikit-learn; perplexity min(30, (n-1)/3), PCA init) of the rows of ``x``."""
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise SystemExit("psr.tsne needs scikit-learn: pip install scikit-learn") from None
    n = len(x)
    if n < 4:
        raise ValueError(f"t-SNE needs at least 4 points, got {n}")
    return TSNE(n_components=2, perplexity=min(30.0, max(1.0, (n - 1) / 3)), init="pca", random_state=seed).fit_transform(x)


def plot(groups: dict[str, list[str]], encoder: str | Path, out: str | Path, seed: int = 0,
         batch_size: int = 32, max_length: int = 512) -> dict:
    """Embed every group's texts with ``encoder``, t-SNE them together, save the scatter plot at
    ``out`` and the points at ``<out>.jsonl``; returns ``{caption, points, counts}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(groups)
    texts = [t for n in names for t in groups[n]]
    xy = tsne_2d(embed(texts, encoder, batch_size, max_length), seed)
    caption = (f"t-SNE of mean last-layer hidden states of {Path(encoder).resolve().name} ({encoder}); "
               "the paper used BERT embeddings")
    fig, ax = plt.subplots(figsize=(7, 6))
    points, start = [], 0
    for name in names:
        n = len(groups[name])
        ax.scatter(xy[start:start + n, 0], xy[start:start + n, 1], s=8, alpha=0.7, label=f"{name} ({n})")
        points += [{"group": name, "index": i, "x": float(xy[start + i, 0]), "y": float(xy[start + i, 1])} for i in range(n)]
        start += n
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend()
    ax.set_title("Data distribution (paper Figure 2 shape)")
    fig.text(0.5, 0.01, caption, ha="center", fontsize=7, wrap=True)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    Path(f"{out}.jsonl").write_text("".join(json.dumps(p) + "\n" for p in points))
    return {"caption": caption, "points": points, "counts": {n: len(groups[n]) for n in names}}


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m psr.tsne", description=__doc__.split("\n\n")[0])
    ap.add_argument("--encoder", required=True, help="a local HF model dir (default choice: the policy, e.g. M1)")
    ap.add_argument("--data", action="append", required=True, metavar="NAME=PATH", help="one group per flag")
    ap.add_argument("--out", required=True, help="the PNG to write (points in <out>.jsonl)")
    ap.add_argument("--limit", type=int, default=None, help="records per group (a seeded sample)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=512)
    args = ap.parse_args(argv)
    groups: dict[str, list[str]] = {}
    try:
        for spec in args.data:
            name, sep, path = spec.partition("=")
            if not sep or not name or not path:
                raise ValueError(f"--data {spec!r}: expected NAME=PATH")
            if not Path(path).is_file():
                raise ValueError(f"--data {name}: {path}: no such file")
            groups[name] = load_group(path, args.limit, args.seed)
        if not (Path(args.encoder) / "config.json").is_file():
            raise ValueError(f"--encoder {args.encoder}: no config.json (a local HF model dir is expected)")
        res = plot(groups, args.encoder, args.out, args.seed, args.batch_size, args.max_length)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.out}: {res['counts']} -- {res['caption']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

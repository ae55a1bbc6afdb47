r"""NuminaMath-CoT (LI et al. 2024), the paper's data source: 28,889 of its solutions become IFT
data (Figure 3 split) and the iteration questions (400 / 800 / 1,200) are sampled from its train
split (paper §4).

Schema of the dataset (the hub's ``AI-MO/NuminaMath-CoT``, train and test splits; read here from a
local copy, never downloaded):

* ``source`` -- where the problem comes from (``cn_k12``, ``synthetic_math``, ``orca_math``,
  ``olympiads``, ``amc_aime``, ``aops_forum``, ``math``, ``gsm8k``, ``synthetic_amc``, ...);
* ``problem`` -- the question text;
* ``solution`` -- a chain-of-thought solution, usually ending in ``\boxed{answer}``;
* ``messages`` -- the same pair as a chat: ``[{"role": "user", "content": problem},
  {"role": "assistant", "content": solution}]``.

There is no id field: a record's id is its ``id`` when the file has one, else
``<id_prefix>-<row>`` with ``row`` the 0-based row of the file (of the concatenated files of a
directory, in name order) -- stable for a given copy, whatever ``sources`` / ``limit`` select.

:func:`load_numina` reads a ``.jsonl`` file, a ``.parquet`` file, or a directory of them (the
hub's ``data/train-0000x-of-0000n.parquet`` layout) and returns records
``{id, problem, solution, answer, source, messages}`` -- the field names ``recipes/ift_build.py``
(``question_key: problem``, ``solution_key: solution``, ``answer_key: answer``) and
``recipes/step_search.py`` / ``srlm_search.py`` (``problem``) read by default. ``answer`` is the
last ``\boxed{}`` of the solution, by the grader's reading (:func:`psr.boxes.last_boxed`,
nested braces handled), or None. A bad record (missing or non-string ``problem`` / ``solution`` /
``source``, malformed ``messages``) raises :class:`psr.data.jsonl.DataError` naming ``file:line``
(jsonl) or ``file:row`` (parquet). Counted in :class:`NuminaStats`: records read, kept, filtered by
source, duplicates of an earlier problem (dropped with ``dedupe``), solutions without a boxed
answer (dropped with ``require_boxed``).

:func:`sample_questions` draws the iteration questions: a seeded shuffle of the pool without the
problems already used for IFT / EFT (compared with whitespace collapsed), the overlap counted.

Command line (writes the records as jsonl, the input of ift_build and step_search)::

    python -m psr.data.numina /data/NuminaMath-CoT/data /data/numina_train.jsonl --require-boxed
    python -m psr.data.numina train.parquet sample.jsonl --limit 1000 --sources olympiads,amc_aime
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

from psr.data.jsonl import DataError, iter_jsonl, write_jsonl
from psr.boxes import last_boxed

NUMINA_FIELDS = ("source", "problem", "solution", "messages")
_PARQUET_BATCH = 4096


@dataclass
class NuminaStats:
    records: int = 0  # rows read
    kept: int = 0
    filtered_source: int = 0  # not in `sources`
    duplicates: int = 0  # same problem text as an earlier kept record (dropped when dedupe)
    no_boxed: int = 0  # solutions without a \boxed{} answer (dropped when require_boxed)
    by_source: dict = field(default_factory=dict)  # kept records per source


def _norm(text: str) -> str:
    return " ".join(text.split())


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in (".parquet", ".jsonl"))
        if not files:
            raise DataError(f"{path}: no .parquet or .jsonl files in this directory")
        return files
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.suffix not in (".parquet", ".jsonl", ".json"):
        raise DataError(f"{path}: expected a .jsonl or .parquet file (or a directory of them)")
    return [path]


def _rows(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, record) for every row of a jsonl or parquet file."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a bad file
            raise DataError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})") from None
        names = set(pf.schema_arrow.names)
        cols = [c for c in (*NUMINA_FIELDS, "id") if c in names]
        row = 0
        for batch in pf.iter_batches(batch_size=_PARQUET_BATCH, columns=cols):
            for rec in batch.to_pylist():
                yield f"{path}:row {row}", rec
                row += 1
        return
    for n, rec in iter_jsonl(path):
        yield f"{path}:{n}", rec


def _check_messages(msgs: Any, where: str) -> list[dict]:
    if not isinstance(msgs, list):
        raise DataError(f"{where}: field 'messages' must be a list of {{role, content}}, got {type(msgs).__name__}")
    out = []
    for k, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(f"{where}: messages[{k}] must be an object with string 'role' and 'content'")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def numina_record(rec: Any, where: str, row: int, id_prefix: str = "numina") -> dict:
    """One validated record ``{id, problem, solution, answer, source, messages}``."""
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    for k in ("problem", "solution", "source"):
        if k not in rec or rec[k] is None:
            raise DataError(f"{where}: missing field {k!r} (NuminaMath-CoT fields: {list(NUMINA_FIELDS)})")
        if not isinstance(rec[k], str) or not rec[k].strip():
            raise DataError(f"{where}: field {k!r} must be a non-empty string")
    msgs = _check_messages(rec["messages"], where) if rec.get("messages") is not None else []
    rid = rec.get("id")
    return {
        "id": str(rid) if rid is not None else f"{id_prefix}-{row}",
        "problem": rec["problem"],
        "solution": rec["solution"],
        "answer": last_boxed(rec["solution"]),
        "source": rec["source"],
        "messages": msgs,
    }


def iter_numina(path: str | os.PathLike, id_prefix: str = "numina") -> Iterator[dict]:
    """Every record of ``path`` (file or directory), validated, in file order; nothing dropped."""
    row = 0
    for f in _files(Path(path)):
        for where, rec in _rows(f):
            yield numina_record(rec, where, row, id_prefix)
            row += 1


def load_numina(
    path: str | os.PathLike,
    *,
    limit: Optional[int] = None,
    sources: Optional[Sequence[str]] = None,
    require_boxed: bool = False,
    dedupe: bool = True,
    id_prefix: str = "numina",
    stats: Optional[NuminaStats] = None,
) -> list[dict]:
    """The records of ``path`` (module docstring), keeping those whose ``source`` is in
    ``sources`` (None: all), dropping repeated problems (``dedupe``) and solutions without a boxed
    answer (``require_boxed``); at most ``limit`` kept records. Counts go to ``stats``."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    stats = stats if stats is not None else NuminaStats()
    want = set(sources) if sources is not None else None
    seen: set[str] = set()
    out: list[dict] = []
    for rec in iter_numina(path, id_prefix):
        if limit is not None and len(out) >= limit:
            break
        stats.records += 1
        if want is not None and rec["source"] not in want:
            stats.filtered_source += 1
            continue
        key = _norm(rec["problem"])
        if key in seen:
            stats.duplicates += 1
            if dedupe:
                continue
        seen.add(key)
        if rec["answer"] is None:
            stats.no_boxed += 1
            if require_boxed:
                continue
        out.append(rec)
        stats.by_source[rec["source"]] = stats.by_source.get(rec["source"], 0) + 1
    stats.kept = len(out)
    return out


def sample_questions(
    records: Sequence[dict], n: int, seed: int, exclude: Iterable[str] = ()
) -> tuple[list[dict], dict]:
    """``n`` records drawn by a ``seed``-ed shuffle from ``records`` without any whose problem text
    (whitespace collapsed) is in ``exclude`` (e.g. the IFT and EFT questions). Returns (sample,
    counts ``{pool, excluded_overlap, available, sampled}``); ValueError when too few remain."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    ex = {_norm(t) for t in exclude}
    avail = [r for r in records if _norm(r["problem"]) not in ex]
    counts = {"pool": len(records), "excluded_overlap": len(records) - len(avail), "available": len(avail)}
    if n > len(avail):
        raise ValueError(f"asked for {n} questions but only {len(avail)} of {len(records)} are not among the "
                         f"{len(ex)} excluded problems")
    order = list(range(len(avail)))
    random.Random(seed).shuffle(order)
    sample = [avail[i] for i in order[:n]]
    counts["sampled"] = len(sample)
    return sample, counts


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m psr.data.numina", description=__doc__.split("\n\n")[0])
    ap.add_argument("input", help="a NuminaMath-CoT .jsonl / .parquet file or a directory of them")
    ap.add_argument("output", help="the jsonl to write ({id, problem, solution, answer, source, messages})")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--sources", default=None, help="comma-separated sources to keep (default: all)")
    ap.add_argument("--require-boxed", action="store_true", help="drop solutions without a \\boxed{} answer")
    ap.add_argument("--keep-duplicates", action="store_true", help="keep repeated problems")
    ap.add_argument("--id-prefix", default="numina")
    a = ap.parse_args(argv)
    stats = NuminaStats()
    try:
        recs = load_numina(a.input, limit=a.limit, sources=a.sources.split(",") if a.sources else None,
                           require_boxed=a.require_boxed, dedupe=not a.keep_duplicates, id_prefix=a.id_prefix,
                           stats=stats)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_jsonl(a.output, recs)
    print(json.dumps(asdict(stats)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

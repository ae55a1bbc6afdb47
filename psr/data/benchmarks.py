"""Benchmark loaders: eval/benchmarks.yaml names -> lists of {id, problem, answer, ...}.

    from psr.data.benchmarks import load_benchmark, list_benchmarks
    items = load_benchmark("math500", data_dir="../shared/data", limit=10)

Local data (the default) is ``<data_dir>/<local>`` from the benchmark's definition, in the
normalised schema of ../shared/data/README.md. ``data_dir``: the argument, else ``$PSR_DATA_DIR``,
else ``../shared/data`` next to the repository root (psr.data.paths: one rule for every input).
``source="hub"`` reads the dataset named in the definition through ``datasets.load_dataset`` (a
download; never used by the tests) and maps its fields. The definitions file is
``eval/benchmarks.yaml`` at the repository root; ``$PSR_BENCHMARKS_FILE`` points elsewhere.

Gold-answer policy (applied on both sources):
  * the gold is a string, stripped, surrounding ``$`` removed; nothing else is normalised (the
    grader does equivalence), so AIME's "025" stays "025" and matches 25 numerically;
  * an empty gold follows the definition's ``empty_gold`` (``skip`` by default: gaokao2023en
    then has 383 items) unless the ``empty_gold`` argument overrides it: ``keep`` keeps the item
    (graded wrong: an empty gold never matches), ``error`` raises DataError naming file:line;
  * every item gets ``benchmark``, ``answer_type`` (from the definition: what the grader takes,
    one of ``psr.grader.ANSWER_TYPES``; :func:`answer_type_of` gives it by name) and
    ``answer_kind``: ``choice`` for an option-letter gold (A-E), else ``math``.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from psr.boxes import last_boxed
from psr.data.jsonl import DataError, iter_jsonl
from psr.data.paths import resolve_data_dir  # the one data-dir rule (re-exported)
from psr.grader.extract import ANSWER_TYPES

__all__ = ["load_benchmark", "list_benchmarks", "benchmark_spec", "answer_type_of", "resolve_data_dir",
           "BenchmarkError"]

REPO_ROOT = Path(__file__).resolve().parents[2]
_EMPTY_POLICIES = ("skip", "keep", "error")
_CHOICE = re.compile(r"^\(?[A-E]\)?$")


class BenchmarkError(KeyError):
    """Unknown benchmark or a bad definition in eval/benchmarks.yaml."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _definitions_path() -> Path:
    return Path(os.environ.get("PSR_BENCHMARKS_FILE", REPO_ROOT / "eval" / "benchmarks.yaml"))


@lru_cache(maxsize=4)
def _load_definitions(path: str) -> dict[str, dict]:
    import yaml

    p = Path(path)
    if not p.exists():
        raise BenchmarkError(f"{p}: benchmark definitions not found (set PSR_BENCHMARKS_FILE)")
    defs = yaml.safe_load(p.read_text()) or {}
    if not isinstance(defs, dict):
        raise BenchmarkError(f"{p}: expected a mapping of benchmark name -> definition")
    for name, d in defs.items():
        if not isinstance(d, dict) or "local" not in d:
            raise BenchmarkError(f"{p}: benchmark {name!r}: needs at least a 'local' key")
        if d.get("answer_type", "math") not in ANSWER_TYPES:
            raise BenchmarkError(f"{p}: benchmark {name!r}: answer_type must be one of {ANSWER_TYPES}")
        if d.get("empty_gold", "skip") not in _EMPTY_POLICIES:
            raise BenchmarkError(f"{p}: benchmark {name!r}: empty_gold must be one of {_EMPTY_POLICIES}")
    return defs


def list_benchmarks() -> list[str]:
    """Names defined in eval/benchmarks.yaml."""
    return list(_load_definitions(str(_definitions_path())))


def benchmark_spec(name: str) -> dict[str, Any]:
    """The definition of benchmark ``name`` (a copy); BenchmarkError naming the known ones if unknown."""
    defs = _load_definitions(str(_definitions_path()))
    if name not in defs:
        raise BenchmarkError(f"unknown benchmark {name!r}; known: {', '.join(defs)} ({_definitions_path()})")
    return dict(defs[name])


def answer_type_of(name: str) -> str:
    """The grader's answer type for benchmark ``name`` (its definition's ``answer_type``, ``math``
    when unset): ``psr.grader.grade(response, gold, answer_type_of("gsm8k"))``. BenchmarkError
    for an unknown name."""
    return benchmark_spec(name).get("answer_type", "math")


def _strip_gold(ans: Any) -> str:
    if ans is None:
        return ""
    if isinstance(ans, float) and ans.is_integer():
        ans = int(ans)
    return str(ans).strip().strip("$").strip()


_ANSWER_FROM: dict[str, Callable[[Any], str]] = {
    "as_is": _strip_gold,
    "strip_dollar": lambda a: str(a or "").replace("$", "").strip(),
    "after_hash": lambda a: str(a).split("####")[-1].strip().replace(",", ""),
    "last_boxed": lambda a: last_boxed(str(a)) or "",
    "int_of_float": _strip_gold,
    "first_strip_dollar": lambda a: str((a[0] if isinstance(a, (list, tuple)) and a else a) or "").strip().strip("$"),
}


def map_hub_row(name: str, row: dict, index: int) -> dict:
    """One hub dataset row -> the normalised schema, using the definition's ``hub`` mapping."""
    hub = benchmark_spec(name).get("hub") or {}
    fields = hub.get("fields", {})
    how = hub.get("answer_from", "as_is")
    if how not in _ANSWER_FROM:
        raise BenchmarkError(f"benchmark {name!r}: hub.answer_from {how!r} unknown; one of {list(_ANSWER_FROM)}")
    for key in ("problem", "answer"):
        if fields.get(key, key) not in row:
            raise DataError(f"{hub.get('path')}[{index}]: column {fields.get(key, key)!r} (for {key}) not in {sorted(row)}")
    id_col = fields.get("id")
    rid = row.get(id_col) if id_col else None
    rec = {
        "id": f"{name}-{rid if rid is not None else index}",
        "problem": row[fields.get("problem", "problem")],
        "answer": _ANSWER_FROM[how](row[fields.get("answer", "answer")]),
    }
    if "solution" in row:
        rec["solution"] = row["solution"]
    return rec


def _from_hub(name: str) -> list[tuple[str, dict]]:
    hub = benchmark_spec(name).get("hub")
    if not hub or "path" not in hub:
        raise BenchmarkError(f"benchmark {name!r} has no hub source in {_definitions_path()}")
    from datasets import load_dataset

    ds = load_dataset(hub["path"], hub.get("name"), split=hub.get("split", "test"))
    return [(f"{hub['path']}[{i}]", map_hub_row(name, dict(row), i)) for i, row in enumerate(ds)]


def load_benchmark(name: str, data_dir: str | os.PathLike | None = None, limit: int | None = None,
                   source: str = "local", empty_gold: str | None = None) -> list[dict]:
    """Items of benchmark ``name`` as dicts with id, problem, answer, benchmark, answer_type,
    answer_kind (+ solution, meta where the data has them), in file order.

    ``limit``: the first ``limit`` items kept after the gold policy (None = all).
    ``source``: ``local`` (``<data_dir>/<local>``) or ``hub``. ``empty_gold`` overrides the
    definition's policy (see the module docstring). Bad records raise DataError naming file:line.
    """
    spec = benchmark_spec(name)
    policy = empty_gold or spec.get("empty_gold", "skip")
    if policy not in _EMPTY_POLICIES:
        raise ValueError(f"empty_gold must be one of {_EMPTY_POLICIES}, got {policy!r}")
    if limit is not None and int(limit) < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    if source == "local":
        path = resolve_data_dir(data_dir) / spec["local"]
        if not path.exists():
            raise DataError(f"{path}: no such file (benchmark {name!r}; set data_dir or PSR_DATA_DIR)")
        rows = [(f"{path}:{n}", rec) for n, rec in iter_jsonl(path, required=("id", "problem", "answer"))]
    elif source == "hub":
        rows = _from_hub(name)
    else:
        raise ValueError(f"source must be 'local' or 'hub', got {source!r}")
    items: list[dict] = []
    atype = spec.get("answer_type", "math")
    for where, rec in rows:
        if limit is not None and len(items) >= int(limit):
            break
        if not isinstance(rec["problem"], str) or not rec["problem"].strip():
            raise DataError(f"{where}: empty or non-string problem")
        gold = _strip_gold(rec["answer"])
        if not gold:
            if policy == "skip":
                continue
            if policy == "error":
                raise DataError(f"{where}: empty gold answer (benchmark {name!r}, empty_gold=error)")
        item = {**rec, "id": str(rec["id"]), "answer": gold, "benchmark": name, "answer_type": atype,
                "answer_kind": "choice" if _CHOICE.match(gold) else "math"}
        items.append(item)
    return items

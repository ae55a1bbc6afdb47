"""Trustworthy output dirs, shared by every recipe: one validation pass, a manifest of what made
the output dir, read-only inputs, one end line.

A recipe's ``main`` does, in this order::

    validate(cfg)                          # check_* helpers below: one-line ConfigError, nothing written
    D.init_distributed(...)
    run = claim_output_dir("eval", cfg, models={"model_dir": ...}, inputs={"eft_test": ...},
                           ignore={"model_dir"})            # before any model or data is loaded
    ...
    finish("eval", f"accuracy 41.20 -> {out}/summary.json")  # the recipe's last line

``claim_output_dir`` writes ``<output_dir>/manifest.json`` on the first run: every config key
that can change results (all keys but :data:`NEVER_RESULT_CHANGING` and the recipe's ``ignore``),
the identity of each input model dir (:func:`model_identity`) and input file
(:func:`file_identity`) -- their contents, not their paths, so a copied dir still matches. A re-run
continues only when all of that matches; otherwise it stops before loading anything with one line
naming every differing key (old -> new) and the ways out: ``overwrite=true`` (empties the output
dir first; only a dir that holds a psr manifest) or another output_dir. A dir holding nothing but
its manifest (an attempt that stopped on bad input) takes the new run's; a non-empty dir without
a manifest (written by an older version) is adopted: its manifest is written and the run resumes.
A path key whose identity is recorded (``model_dir``, ``pairs`` ...) is left out of the settings:
the contents decide, not where they are.

Input dirs are read-only: an output_dir equal to or inside an input model dir or data dir is
refused (:func:`check_not_inside_inputs`), and the model-dir writers (the tiny builder, the SmolLM2
converter) refuse a non-empty dir they did not write (:func:`claim_model_dir`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from psr.errors import ConfigError

MANIFEST = "manifest.json"

# Keys that cannot change a recipe's results: where things go, how progress is shown, how much
# memory or how many workers are used, and which items are selected (``limit``: a re-run with a
# different limit evaluates more or fewer of the same items; each item's result is its own).
NEVER_RESULT_CHANGING = frozenset({
    "output_dir", "overwrite", "skip_bad_lines", "progress_bar", "cpu_threads", "merge_timeout_s",
    "grader_workers", "metric_logger", "log_peak_memory_stats", "log_every_n_steps", "resume_from_checkpoint",
    "save_every_n_steps", "activation_checkpointing", "reshard_after_forward", "cpu_offload", "hybrid_shard",
    "max_shard_size", "retry_failed", "limit", "trace_judge_text", "ref_cache_dir", "ref_micro_batch_size",
    "ref_hash_weights", "micro_batch_size", "data_dir", "save_trees", "backend_kwargs",
})


@dataclass
class RunKeys:
    """Config keys every recipe has (recipe schemas inherit them)."""

    # true: an output_dir made by a different run (settings, model or inputs differ) is emptied and
    # written anew instead of refused. Only a dir holding a psr manifest.json is ever emptied.
    overwrite: bool = False
    # true: a malformed JSONL input line (not JSON, or not an object) is skipped with a warning
    # naming file:line instead of stopping the run. Every reader (psr.data.jsonl) honours it.
    skip_bad_lines: bool = False


class RunFailed(RuntimeError):
    """Some items failed; everything else was written. ``recipe_main`` prints the message as one
    line and exits with status 1."""


# --------------------------------------------------------------------------- validation


def check_positive(cfg: Any, *keys: str, allow_none: bool = False) -> None:
    """Each dotted key is an integer >= 1 (or null with ``allow_none``)."""
    for key in keys:
        v = _select(cfg, key)
        if v is None and allow_none:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{key}: must be an integer >= 1{' or null' if allow_none else ''}, got {v!r}")


def check_non_negative(cfg: Any, *keys: str, what: str = "must be >= 0") -> None:
    """Each dotted key (when not null) is a number >= 0; the error says ``<key>: <what>, got ...``."""
    for key in keys:
        v = _select(cfg, key)
        if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0):
            raise ConfigError(f"{key}: {what}, got {v!r}")


def check_probability(cfg: Any, *keys: str, open_low: bool = False) -> None:
    """Each dotted key (when not null) lies in [0, 1] ((0, 1] with ``open_low``)."""
    for key in keys:
        v = _select(cfg, key)
        if v is None:
            continue
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (0 < v <= 1 if open_low else 0 <= v <= 1)
        if not ok:
            raise ConfigError(f"{key}: must be in {'(0, 1]' if open_low else '[0, 1]'}, got {v!r}")


def check_temperature(cfg: Any, *keys: str) -> None:
    check_non_negative(cfg, *keys, what="a sampling temperature must be >= 0")


def check_output_dir(path: Any, key: str = "output_dir") -> Path:
    if path is None or str(path).strip() == "":
        raise ConfigError(f"{key}: required")
    p = Path(str(path)).expanduser()
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{key}={path}: exists and is a file, not a directory")
    return p


def check_model_dir(path: Any, key: str = "model_dir") -> Path:
    """An HF model dir: a directory with a readable config.json and weight files."""
    if path is None or str(path).strip() == "":
        raise ConfigError(f"{key}: required (an HF model dir)")
    p = Path(str(path)).expanduser()
    if not p.exists():
        raise ConfigError(f"{key}={path}: no config.json there: no such directory (an HF model dir is expected)")
    if not p.is_dir():
        raise ConfigError(f"{key}={path}: not a directory (an HF model dir is expected)")
    cfg_file = p / "config.json"
    if not cfg_file.is_file():
        raise ConfigError(f"{key}={path}: no config.json there (an HF model dir is expected)")
    try:
        conf = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{key}={path}: config.json is not valid JSON ({e})") from None
    if not isinstance(conf, dict) or "model_type" not in conf:
        raise ConfigError(f"{key}={path}: config.json has no model_type (not an HF model config)")
    if not any(p.glob("*.safetensors")) and not any(p.glob("*.bin")):
        raise ConfigError(f"{key}={path}: no *.safetensors weight files there")
    return p


def check_input_file(path: Any, key: str) -> Path:
    """An input data file that exists, is a file and is not empty (blank lines only = empty)."""
    p = Path(str(path)).expanduser()
    if not p.exists():
        raise ConfigError(f"{key}={path}: no such file")
    if not p.is_file():
        raise ConfigError(f"{key}={path}: not a file")
    with p.open("rb") as f:
        head = f.read(1 << 16)
        empty = not head.strip()
        while empty and head:
            head = f.read(1 << 16)
            empty = not head.strip()
    if empty:
        raise ConfigError(f"{key}={path}: the file is empty")
    return p


def world_size_from_env() -> int:
    """The number of processes of this launch (torchrun's WORLD_SIZE), known before
    init_distributed -- so validation can run before anything starts."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))
    except ValueError:
        return 1


def check_training(cfg: Any) -> None:
    """The keys every training recipe shares (psr.training.loop.TrainConfig), for this launch's
    world size. A micro_batch_size that does not divide the global batch over the processes is
    lowered to the largest one that does (micro_batch_size only sets memory per forward: the loss
    is averaged over the global batch, so results are the same), with one line saying so."""
    check_positive(cfg, "epochs", "batch_size", "micro_batch_size", "log_every_n_steps")
    check_positive(cfg, "max_steps", "save_every_n_steps", allow_none=True)
    if not cfg.lr > 0:
        raise ConfigError(f"lr: must be > 0, got {cfg.lr}")
    check_non_negative(cfg, "weight_decay", "max_grad_norm", "warmup_steps")
    check_probability(cfg, "warmup_ratio", "min_lr_ratio")
    betas = list(cfg.adam_betas)
    if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
        raise ConfigError(f"adam_betas: must be two numbers in [0, 1), got {betas}")
    if not cfg.adam_eps > 0:
        raise ConfigError(f"adam_eps: must be > 0, got {cfg.adam_eps}")
    world = world_size_from_env()
    b, m = int(cfg.batch_size), int(cfg.micro_batch_size)
    if b % world:
        raise ConfigError(f"batch_size={b}: must be a multiple of the number of processes ({world})")
    if b % (m * world):
        per_rank = b // world
        fit = max(d for d in range(1, min(m, per_rank) + 1) if per_rank % d == 0)
        if os.environ.get("RANK", "0") in ("", "0"):
            print(f"micro_batch_size={m} x {world} processes does not divide batch_size={b}: using "
                  f"micro_batch_size={fit} (same results; it only sets the examples per forward)", flush=True)
        cfg.micro_batch_size = fit


def write_train_summary(out: Path, summary: dict, result: Any) -> None:
    """Rank 0 writes train_summary.json -- except on a re-run of a complete run (no step taken
    now), which keeps the summary of the run that trained."""
    from psr import distributed as D

    path = Path(out) / "train_summary.json"
    if D.is_rank0() and (getattr(result, "losses", None) or not path.exists()):
        path.write_text(json.dumps(summary, indent=2))


def train_end_line(result: Any, out: Path) -> str:
    """A training recipe's last line: steps, first -> final loss, where the model is."""
    losses = list(getattr(result, "losses", []) or [])
    final = getattr(result, "final_dir", None) or (out / "final")
    loss = (f"loss {losses[0]:.4f} -> {losses[-1]:.4f} this run" if losses else "nothing left to train (already complete)")
    metrics = getattr(result, "metrics_path", out / "metrics.jsonl")
    return f"{result.steps} steps, {loss} -> model {final}, " + (f"{metrics}, " if metrics else "") + f"{out / 'train_summary.json'}"


def _select(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part] if isinstance(node, Mapping) or hasattr(node, "keys") else getattr(node, part)
    return node


# --------------------------------------------------------------------------- identities

# Files up to this size are hashed whole; larger weight files by their safetensors header plus 16
# evenly spaced 1 MiB samples (a fine-tuned model differs everywhere, so any sample catches it).
# Measured on this machine (2 shared cores): a 7B-sized dir of four sparse 3.8 GB safetensors
# shards (15.2 GB) + config takes 0.27 s (tests/test_outputs.py::test_model_identity_cost_on_a_7b_sized_dir;
# sparse files cost no disk reads: on a real disk add 4 x 17 MiB of reads);
# hashing the 15 GB whole at the 0.38 GB/s sha256 rate measured here would take ~40 s per run.
FULL_HASH_LIMIT = 16 << 20
SAMPLE_BYTES = 1 << 20
N_SAMPLES = 16
# Input data files are hashed whole up to 1 GiB (a changed line in the middle must be seen).
DATA_FULL_HASH_LIMIT = 1 << 30


def _digest_file(p: Path, full_limit: int) -> dict:
    size = p.stat().st_size
    h = hashlib.sha256()
    with p.open("rb") as f:
        if size <= full_limit:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
            return {"size": size, "sha256": h.hexdigest()}
        if p.suffix == ".safetensors":  # the header: every tensor's name, dtype, shape, offsets
            n = int.from_bytes(f.read(8), "little")
            if 0 < n < (256 << 20):
                h.update(f.read(n))
        for k in range(N_SAMPLES):
            f.seek(max(0, (size - SAMPLE_BYTES) * k // (N_SAMPLES - 1)))
            h.update(f.read(SAMPLE_BYTES))
    return {"size": size, "sampled_sha256": h.hexdigest()}


def _file_key(d: dict) -> str:
    return d.get("sha256") or d.get("sampled_sha256") or ""


def model_identity(path: str | os.PathLike) -> dict:
    """The identity of an HF model dir: every top-level file's size and hash (config.json and
    tokenizer files whole, big weight files sampled; see FULL_HASH_LIMIT), and one digest of
    them all. Names and contents only: a copy of the dir has the same identity."""
    p = Path(path).resolve()
    files = {}
    for f in sorted(p.iterdir()):
        if f.name.startswith(".") or f.name == MANIFEST or not f.is_file():
            continue
        files[f.name] = _digest_file(f, FULL_HASH_LIMIT)
    digest = hashlib.sha256(json.dumps({k: [v["size"], _file_key(v)] for k, v in files.items()},
                                       sort_keys=True).encode()).hexdigest()
    return {"path": str(p), "digest": digest, "files": files}


def file_identity(path: str | os.PathLike) -> dict:
    """The identity of an input data file: its size and content hash (sampled above 1 GiB)."""
    p = Path(path).resolve()
    d = _digest_file(p, DATA_FULL_HASH_LIMIT)
    return {"path": str(p), "digest": _file_key(d), "size": d["size"]}


# --------------------------------------------------------------------------- the guard


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
        return True
    except ValueError:
        return False


def check_not_inside_inputs(output_dir: str | os.PathLike, input_dirs: Mapping[str, Any]) -> None:
    """Refuse an output_dir equal to or inside an input model dir or data dir (one line naming both)."""
    out = Path(output_dir).expanduser().resolve()
    for key, d in input_dirs.items():
        if d is None:
            continue
        src = Path(str(d)).expanduser().resolve()
        if out == src or _inside(out, src):
            where = "is" if out == src else "is inside"
            raise ConfigError(f"output_dir={output_dir} {where} the input {key}={d}: inputs are read-only, "
                              "choose an output_dir outside it")


# --------------------------------------------------------------------------- the manifest


def _flatten(d: Any, prefix: str = "") -> dict:
    out: dict = {}
    if isinstance(d, Mapping):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        if not d and prefix:
            out[prefix[:-1]] = {}
        return out
    out[prefix[:-1]] = d
    return out


def settings_of(cfg: Any, ignore: Iterable[str] = ()) -> dict:
    """The result-changing settings of ``cfg``: flattened dotted keys, without the ignored ones
    (a key is ignored when it or one of its parents is listed)."""
    from omegaconf import DictConfig, OmegaConf

    data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    skip = set(NEVER_RESULT_CHANGING) | set(ignore)
    flat = _flatten(data)
    out = {}
    for k, v in flat.items():
        if any(k == s or k.startswith(s + ".") for s in skip):
            continue
        if v is not None and _SECRET.search(k.rsplit(".", 1)[-1]):  # never write credentials to disk
            v = "sha256:" + hashlib.sha256(str(v).encode()).hexdigest()[:16]
        out[k] = v
    return out


_SECRET = __import__("re").compile(r"(?i)(api_?key|secret|password|^auth|(^|_)token$)")


def _short(v: Any) -> str:
    s = json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v
    return s if len(s) <= 60 else s[:57] + "..."


def _diff(old: dict, new: dict) -> list[str]:
    diffs = []
    so, sn = old.get("settings", {}), new.get("settings", {})
    for k in sorted(set(so) | set(sn)):
        if so.get(k, "(unset)") != sn.get(k, "(unset)"):
            diffs.append(f"{k}: {_short(so.get(k, '(unset)'))} -> {_short(sn.get(k, '(unset)'))}")
    for section in ("models", "inputs"):
        o, n = old.get(section, {}), new.get(section, {})
        for k in sorted(set(o) | set(n)):
            a, b = o.get(k), n.get(k)
            if a is None or b is None:
                diffs.append(f"{k}: {a['path'] if a else '(none)'} -> {b['path'] if b else '(none)'}")
            elif a.get("digest") != b.get("digest"):
                what = "contents"
                if section == "models":
                    fa, fb = a.get("files", {}), b.get("files", {})
                    changed = sorted(f for f in set(fa) | set(fb)
                                     if _file_key(fa.get(f, {})) != _file_key(fb.get(f, {})))
                    what = "files " + ", ".join(changed[:4]) + (" ..." if len(changed) > 4 else "")
                diffs.append(f"{k}: {a['path']} ({a['digest'][:10]}) -> {b['path']} ({b['digest'][:10]}), "
                             f"{what} differ")
    if old.get("recipe") != new.get("recipe"):
        diffs.insert(0, f"recipe: {old.get('recipe')} -> {new.get('recipe')}")
    return diffs


@dataclass
class Run:
    recipe: str
    output_dir: Path
    manifest: dict
    resumed: bool  # the dir already held this run's manifest (a re-run continues it)
    saved: str = "what finished"  # what an interrupted run keeps


_CURRENT: Optional[Run] = None


def current_run() -> Optional[Run]:
    """The run claimed last in this process (for the interrupt message)."""
    return _CURRENT


def claim_output_dir(recipe: str, cfg: Any, models: Optional[Mapping[str, Any]] = None,
                     inputs: Optional[Mapping[str, Any]] = None, ignore: Iterable[str] = (),
                     data_dirs: Optional[Mapping[str, Any]] = None, extra: Optional[Mapping[str, Any]] = None,
                     saved: str = "what finished") -> Run:
    """Check ``cfg.output_dir`` against what made it and record this run there (see the module
    docstring). ``models``/``inputs``: key -> input model dir / data file (``None`` entries are
    skipped; a list value fingerprints each element as ``key[i]``); ``data_dirs``: further input
    dirs the output dir must not be inside; ``extra``: more result-changing settings that are not
    config keys (e.g. how a tiny model was built); ``saved``: what an interrupted run keeps (the
    Ctrl-C line). Rank 0 checks and writes; collective under torchrun."""
    global _CURRENT
    from psr import distributed as D

    out = check_output_dir(cfg.output_dir)
    models = _expand(models or {})
    inputs = _expand(inputs or {})
    check_not_inside_inputs(out, {**models, **(data_dirs or {})})
    overwrite = bool(getattr(cfg, "overwrite", False))
    if overwrite:
        for key, p in {**models, **inputs}.items():
            if _inside(Path(p).resolve(), out.resolve()):
                raise ConfigError(f"overwrite=true would delete the input {key}={p}, which is inside "
                                  f"output_dir={cfg.output_dir}; move it or choose another output_dir")
    # Rank 0 checks and writes; the other ranks get its verdict (one error on every rank).
    verdict: tuple = ("ok", None, False)
    if D.is_rank0():
        try:
            verdict = ("ok",) + _check_and_record(recipe, cfg, out, models, inputs, ignore, extra, overwrite)
        except (ConfigError, OSError) as e:
            verdict = ("error", str(e), False)
    if D.is_distributed():
        verdict = D.all_gather_objects(verdict)[0]
    if verdict[0] == "error":
        raise ConfigError(verdict[1])
    new, resumed = verdict[1], verdict[2]
    from psr.data.jsonl import set_skip_bad_lines

    set_skip_bad_lines(bool(getattr(cfg, "skip_bad_lines", False)))
    _CURRENT = Run(recipe, out, new, resumed, saved)
    return _CURRENT


def _check_and_record(recipe: str, cfg: Any, out: Path, models: dict, inputs: dict, ignore: Iterable[str],
                      extra: Optional[Mapping[str, Any]], overwrite: bool) -> tuple[dict, bool]:
    from psr import distributed as D

    new = {
        "recipe": recipe,
        "settings": {**settings_of(cfg, ignore), **(dict(extra) if extra else {})},
        "models": {k: model_identity(p) for k, p in models.items()},
        "inputs": {k: file_identity(p) for k, p in inputs.items()},
    }
    new["settings"] = json.loads(json.dumps(new["settings"], default=str))
    path = out / MANIFEST
    old = _read_manifest(path)
    resumed = False
    has_results = out.exists() and _has_results(out)
    if old is not None and not overwrite and not has_results:
        old = None  # an earlier attempt stopped before writing anything (bad data, say): nothing to mix
    if old is not None and not overwrite:
        # a key ignored now is not compared either (e.g. a stage's component once that stage is done)
        skip = set(ignore) - set(extra or {})  # an extra setting may reuse an ignored key's name
        old_cmp = {**old, "settings": {k: v for k, v in old.get("settings", {}).items()
                                       if not any(k == x or k.startswith(x + ".") for x in skip)},
                   "models": {k: v for k, v in old.get("models", {}).items()
                              if not any(k.startswith(x + ".") for x in skip)}}
        diffs = _diff(old_cmp, new)
        if diffs:
            raise ConfigError(
                f"output_dir={cfg.output_dir} holds the outputs of a different run ({'; '.join(diffs)}); "
                "re-run with its settings to continue it, or pass overwrite=true to replace it, or choose another output_dir")
        resumed = True
    elif old is None and overwrite and has_results and not path.exists():
        raise ConfigError(f"overwrite=true: output_dir={cfg.output_dir} has no {MANIFEST} (not written by a psr recipe); "
                          "not emptying it -- empty it yourself or choose another output_dir")
    elif old is None and has_results and not path.exists():
        resumed = True  # an older version's outputs: adopted (its results are kept and resumed)
        D.print0(f"{recipe}: output_dir={cfg.output_dir} has outputs but no {MANIFEST} (an older version?); "
                 "recording this run's settings there and resuming")
    if old is not None and overwrite:
        D.print0(f"{recipe}: overwrite=true: emptying {out}")
        for entry in out.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    out.mkdir(parents=True, exist_ok=True)
    if old is None or overwrite:
        record = {**new, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command_line(recipe)}
        tmp = path.with_name(MANIFEST + ".tmp")
        tmp.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    return new, resumed


def _has_results(out: Path) -> bool:
    """Whether ``out`` holds any file besides its manifest (empty dirs do not count)."""
    return any(p.name != MANIFEST and not p.is_dir() for p in out.rglob("*"))


def _expand(d: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        if v is None:
            continue
        if isinstance(v, (list, tuple)) or (hasattr(v, "__len__") and not isinstance(v, (str, os.PathLike))):
            items = [str(x) for x in v]
            if len(items) == 1:
                out[k] = items[0]
            else:
                out.update({f"{k}[{i}]": x for i, x in enumerate(items)})
        else:
            out[k] = str(v)
    return out


def _read_manifest(path: Path) -> Optional[dict]:
    if not path.exists():
        return None
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: unreadable manifest ({e}); pass overwrite=true or choose another output_dir") from None
    if not isinstance(m, dict):
        raise ConfigError(f"{path}: not a manifest; pass overwrite=true or choose another output_dir")
    return m


# --------------------------------------------------------------------------- model-dir writers


def claim_model_dir(path: str | os.PathLike, writer: str, identity: Mapping[str, Any],
                    overwrite: bool = False, record: bool = True) -> bool:
    """Before a command writes a model dir at ``path``: True when ``path`` already holds the
    finished output of the same writer and identity (reuse it), False when it may be written
    (empty, missing, or its own unfinished or ``overwrite``); ConfigError for a non-empty dir it
    did not write (or one written with another identity) unless ``overwrite``. The caller then
    writes the dir and calls :func:`finish_model_dir`. A real model dir is never touched."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{p}: exists and is a file, not a model dir")
    m = None
    if p.is_dir():
        try:
            m = json.loads((p / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            m = None
    ours = isinstance(m, dict) and m.get("written_by") == writer
    if ours and m.get("identity") == dict(identity) and m.get("complete"):
        return True
    nonempty = p.is_dir() and any(p.iterdir())
    if nonempty and not overwrite:
        if ours and not m.get("complete"):
            pass  # our own unfinished write: finish it
        elif ours:
            raise ConfigError(f"{p}: holds a model written by {writer} with other settings "
                              f"({m.get('identity')}); not overwriting it (choose another dir, or overwrite)")
        else:
            raise ConfigError(f"{p}: not empty and not written by {writer}; not writing a model there "
                              "(choose another dir, or overwrite)")
    if record:  # (record=False: only check, e.g. before a download that may still fail)
        p.mkdir(parents=True, exist_ok=True)
        (p / MANIFEST).write_text(json.dumps({"written_by": writer, "identity": dict(identity), "complete": False}) + "\n")
    return False


def finish_model_dir(path: str | os.PathLike, writer: str, identity: Mapping[str, Any]) -> None:
    (Path(path) / MANIFEST).write_text(
        json.dumps({"written_by": writer, "identity": dict(identity), "complete": True}) + "\n")


# --------------------------------------------------------------------------- end line, interrupts


def finish(recipe: str, line: str) -> None:
    """The recipe's last line (rank 0): where its outputs are and its headline figure."""
    from psr import distributed as D

    D.print0(f"{recipe}: {line}")


def command_line(recipe: Optional[str] = None) -> str:
    """The command that re-runs this process (``psr run``-style)."""
    args = list(sys.argv[1:])
    name = recipe or Path(sys.argv[0]).stem
    launch = ["psr", "run"]
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1:
        launch += ["--nproc_per_node", os.environ.get("LOCAL_WORLD_SIZE", str(world))]
    return " ".join(shlex.quote(a) for a in launch + [name] + args)


def interrupted_message() -> str:
    run = current_run()
    if run is None:
        return "interrupted before any output was written; nothing to resume"
    return (f"interrupted: saved in {run.output_dir}: {run.saved}; "
            f"resume with the same command: {command_line(run.recipe)}")

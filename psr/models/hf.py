"""HF model directories in and out of training.

API (stable; used by every training recipe):

    load_tokenizer(model_dir) -> PreTrainedTokenizerBase
        The dir's tokenizer; a missing pad token falls back to EOS (named in the log).
    load_model_for_training(model_dir, dtype="float32", device="cpu") -> PreTrainedModel
        One process: ``build_meta_model`` + ``materialize_`` with a single shard (parameters in
        ``dtype``; float32 = master weights, bf16 compute is added by psr.training.fsdp). Any
        causal-LM architecture whose checkpoint keys are its module names works; tested with
        Qwen2/Qwen2.5 and Llama-family (SmolLM2) configs.
    build_meta_model(config, dtype) / materialize_(model, model_dir, device)
        The big-model path (psr.training.fsdp.setup_model): build on the meta device, shard, then
        allocate each rank's shards and fill them from the safetensors, each rank reading only its
        own rows (``load_weights_``); rotary and other non-persistent buffers are recomputed.
    save_model_dir(model, tokenizer, out_dir, dtype=None, max_shard_size="5GB") -> Path
        Write config.json, *.safetensors (``model-0000k-of-0000N`` + ``model.safetensors.index.json``
        past ``max_shard_size``), generation_config and the tokenizer files so that
        ``AutoModelForCausalLM.from_pretrained`` and vLLM load the dir directly. Collective for an
        FSDP2 model (tensors gathered one at a time; rank 0 writes), plain call otherwise.
        ``dtype`` casts floating tensors and sets the config's dtype. Writes into a temp dir and
        renames it into place, so a killed save never leaves a half-written model dir under the
        final name.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional

import torch

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def torch_dtype(name: str | torch.dtype) -> torch.dtype:
    """``"bfloat16"`` / ``"bf16"`` / ``"float32"`` ... → ``torch.dtype``."""
    if isinstance(name, torch.dtype):
        return name
    try:
        return _DTYPES[str(name).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r} (use one of {sorted(_DTYPES)})") from None


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def load_tokenizer(model_dir: str | os.PathLike):
    from transformers import AutoTokenizer

    _quiet_transformers()
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model_config(model_dir: str | os.PathLike):
    """The dir's ``config.json`` as a transformers config; FileNotFoundError naming the dir."""
    from transformers import AutoConfig

    _quiet_transformers()
    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not an HF model dir (no config.json)")
    return AutoConfig.from_pretrained(str(path))


def build_meta_model(config: Any, dtype: str | torch.dtype = "float32"):
    """The causal LM of ``config`` with every parameter and buffer on the meta device (no memory,
    no random init), parameters typed ``dtype``, no KV cache, in train mode. Fill it with
    :func:`materialize_` after sharding."""
    from transformers import AutoModelForCausalLM

    _quiet_transformers()
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype(dtype))
    model.config.use_cache = False
    model.train()
    return model


def weight_files(model_dir: str | os.PathLike) -> dict[str, Path]:
    """Checkpoint key -> the safetensors file that holds it: ``model.safetensors.index.json`` when
    present, else every ``*.safetensors`` file of the dir (read from their headers only)."""
    from safetensors import safe_open

    path = Path(model_dir)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{index}: not a safetensors index ({e})") from None
        return {k: path / v for k, v in weight_map.items()}
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{path}: no *.safetensors weights (only safetensors model dirs are read)")
    out: dict[str, Path] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as h:
            out.update({k: f for k in h.keys()})
    return out


def _local_rows(t: torch.Tensor) -> tuple[int, int]:
    """(first row, row count) of this rank's piece of ``t`` along dim 0: the whole tensor for a
    plain tensor, the local shard for an FSDP2 DTensor (Shard(0) on any mesh dim, torch.chunk
    sizes: ceil(n / shards) rows per shard, the last ones shorter or empty)."""
    from torch.distributed.tensor import DTensor

    n = t.shape[0] if t.dim() else 1
    if not isinstance(t, DTensor):
        return 0, n
    start = 0
    for mesh_dim, placement in enumerate(t.placements):
        if placement.is_shard():
            if placement.dim != 0:
                raise ValueError(f"sharded on dim {placement.dim}: only dim-0 (FSDP2) shards are loaded")
            shards = t.device_mesh.size(mesh_dim)
            rank = t.device_mesh.get_local_rank(mesh_dim)
            chunk = -(-n // shards)
            lo, hi = min(rank * chunk, n), min((rank + 1) * chunk, n)
            start, n = start + lo, hi - lo
    return start, n


def _unique_tensors(model: Any) -> list[tuple[list[str], torch.Tensor, bool]]:
    """(names, tensor, is_parameter) for every parameter and persistent buffer, tied ones once
    (``names`` lists every name of a shared tensor, first name first)."""
    seen: dict[int, int] = {}
    out: list[tuple[list[str], torch.Tensor, bool]] = []
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            out[seen[id(p)]][0].append(name)
        else:
            seen[id(p)] = len(out)
            out.append(([name], p, True))
    for mod_name, mod in model.named_modules():
        for b_name, b in mod.named_buffers(recurse=False):
            if b is None or b_name in mod._non_persistent_buffers_set:
                continue
            out.append(([f"{mod_name}.{b_name}" if mod_name else b_name], b, False))
    return out


def restore_nonpersistent_buffers_(model: Any, device: torch.device | str) -> None:
    """Recompute the buffers that no checkpoint holds (rotary ``inv_freq`` ...), which a meta-device
    build leaves empty: each owning module is built again on the CPU from its config (HF rotary
    modules take ``config``) and its buffers are copied onto ``device``."""
    for name, mod in model.named_modules():
        names = [b for b in mod._non_persistent_buffers_set if getattr(mod, b, None) is not None]
        if not names:
            continue
        cfg = getattr(mod, "config", None)
        try:
            with torch.device("cpu"):
                fresh = type(mod)(cfg) if cfg is not None else type(mod)()
        except Exception as e:  # noqa: BLE001 - name the module instead of a constructor traceback
            raise RuntimeError(
                f"cannot rebuild the non-persistent buffers {names} of {name} ({type(mod).__name__}) "
                f"after a meta-device build: {e}") from None
        for b in names:
            mod._buffers[b] = getattr(fresh, b).to(device)
        for attr in ("attention_scaling",):  # plain attributes computed with the buffers
            if hasattr(fresh, attr):
                setattr(mod, attr, getattr(fresh, attr))


@torch.no_grad()
def load_weights_(model: Any, model_dir: str | os.PathLike) -> int:
    """Fill the parameters and persistent buffers of a materialized ``model`` (plain or FSDP2-sharded)
    from the dir's safetensors. Each rank reads only its own rows of each tensor (lazy safetensors
    slices, memory-mapped), cast to the parameter's dtype: no rank ever holds a whole model, and the
    bytes read over all ranks are one copy of the checkpoint. Tied weights (a head that shares the
    embedding) are read once. Returns the number of tensors filled; a tensor the checkpoint lacks,
    or one of another shape, is an error naming the key and the dir."""
    from safetensors import safe_open
    from torch.distributed.tensor import DTensor

    files = weight_files(model_dir)
    by_file: dict[Path, list[tuple[str, torch.Tensor]]] = {}
    for names, t, _ in _unique_tensors(model):
        key = next((n for n in names if n in files), None)
        if key is None:
            raise KeyError(f"{model_dir}: the checkpoint has no weight {names[0]!r}"
                           f"{' (tied: ' + ', '.join(names[1:]) + ')' if len(names) > 1 else ''}")
        by_file.setdefault(files[key], []).append((key, t))
    count = 0
    for path, items in by_file.items():
        for key, t in items:
            # the file is opened per tensor: its memory map (pages touched count as this process's
            # memory while mapped) is dropped after each slice, so a rank never maps more than one
            # tensor's rows of a multi-GB file; reopening costs one header parse
            with safe_open(str(path), framework="pt", device="cpu") as f:
                sl = f.get_slice(key)
                if tuple(sl.get_shape()) != tuple(t.shape):
                    raise ValueError(f"{path}: {key} has shape {tuple(sl.get_shape())}, "
                                     f"the model expects {tuple(t.shape)}")
                local = t.to_local() if isinstance(t, DTensor) else t
                lo, n = _local_rows(t)
                if n == 0:
                    continue
                src = sl[lo:lo + n] if t.dim() else sl[:]
            if tuple(src.shape) != tuple(local.shape):
                raise ValueError(f"{key}: local shard shape {tuple(local.shape)} != rows {lo}:{lo + n} "
                                 f"of {tuple(t.shape)}")
            local.copy_(src.to(local.dtype))
            del src
            count += 1
    return count


def materialize_(model: Any, model_dir: str | os.PathLike, device: torch.device | str,
                 buffer_device: torch.device | str | None = None) -> Any:
    """Allocate a meta-built (and possibly sharded) ``model`` on ``device`` (each rank only its
    shards), recompute its non-persistent buffers on ``buffer_device`` (default ``device``; the
    compute device when parameters are offloaded to the CPU) and load the weights."""
    tied = [names for names, _, is_param in _unique_tensors(model) if is_param and len(names) > 1]
    model.to_empty(device=device)
    for names in tied:  # to_empty gives each module its own copy of a shared parameter: share it again
        shared = model.get_parameter(names[0])
        for alias in names[1:]:
            owner, _, leaf = alias.rpartition(".")
            setattr(model.get_submodule(owner) if owner else model, leaf, shared)
    restore_nonpersistent_buffers_(model, buffer_device or device)
    load_weights_(model, model_dir)
    return model


def load_model_for_training(model_dir: str | os.PathLike, dtype: str | torch.dtype = "float32",
                            device: torch.device | str = "cpu"):
    """The causal LM of ``model_dir`` on ``device`` (one process, no sharding), parameters in
    ``dtype``, in train mode, no KV cache: the same meta-build + slice load as the sharded setup
    (psr.training.fsdp), with a single shard."""
    model = build_meta_model(load_model_config(model_dir), dtype)
    return materialize_(model, model_dir, device)


def decoder_layers(model: Any) -> list:
    """The transformer blocks of an HF causal LM (``model.model.layers`` for Qwen2/Llama)."""
    base = getattr(model, getattr(model, "base_model_prefix", "model"), None) or getattr(model, "model", None)
    layers = getattr(base, "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__}: cannot find its decoder layers (model.model.layers)")
    return list(layers)


# The size of one saved safetensors file (transformers' 4.x default; every writer takes it from here).
DEFAULT_MAX_SHARD_SIZE = "5GB"

_SIZE_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(size: int | str) -> int:
    """``"5GB"`` -> 5e9 bytes (KB/MB/GB decimal, KiB/MiB/GiB binary, as transformers reads them)."""
    if isinstance(size, int):
        return size
    text = str(size).strip().upper().replace(" ", "")
    num = text.rstrip("KMGTIB")
    unit = text[len(num):] or "B"
    try:
        value = float(num)
    except ValueError:
        value = -1.0
    if unit not in _SIZE_UNITS or value <= 0:
        raise ValueError(f"max_shard_size {size!r}: expected a positive size such as 5GB, 500MB or 2GiB")
    return int(value * _SIZE_UNITS[unit])


def _full_cpu(t: torch.Tensor, dtype: Optional[torch.dtype]) -> torch.Tensor:
    """The whole tensor on the CPU (an all-gather of one tensor when ``t`` is a DTensor: collective,
    every rank calls it in the same order; shards offloaded to the CPU travel through the mesh's
    device)."""
    from torch.distributed.tensor import DTensor

    if isinstance(t, DTensor):
        mesh_dev = t.device_mesh.device_type
        if t.device.type != mesh_dev:  # CPU-offloaded shard on a CUDA mesh
            local = t.to_local().to(mesh_dev)
            t = DTensor.from_local(local, t.device_mesh, t.placements, shape=t.shape, stride=t.stride())
        t = t.full_tensor()
    t = t.detach()
    if dtype is not None and t.is_floating_point():
        t = t.to(dtype)
    return t.to("cpu")


def save_model_dir(
    model: Any,
    tokenizer: Any,
    out_dir: str | os.PathLike,
    dtype: Optional[str | torch.dtype] = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
) -> Path:
    """Write an HF model dir (see module docstring) from a plain or FSDP2-sharded model.

    Collective for a sharded model: every rank calls it; the tensors are gathered one at a time and
    rank 0 writes each ``model-0000k-of-0000N.safetensors`` file as soon as its tensors are in, so
    rank 0 holds at most one file's worth (``max_shard_size``) in host memory and no rank holds the
    whole model. A model that fits in one file is written as ``model.safetensors`` without an index
    (transformers' layout). Tied weights are written once, under their first name."""
    from safetensors.torch import save_file

    from psr import distributed as D

    limit = parse_size(max_shard_size)
    dt = torch_dtype(dtype) if dtype is not None else None
    entries = _unique_tensors(model)
    if not entries:
        raise ValueError("save_model_dir: the model has no tensors")
    out_dtype = dt or next(t.dtype for _, t, _ in entries if t.is_floating_point())

    def nbytes(t: torch.Tensor) -> int:
        return t.numel() * (torch.empty((), dtype=dt if (dt and t.is_floating_point()) else t.dtype).element_size())

    shards: list[list[tuple[str, torch.Tensor]]] = [[]]
    used = 0
    for names, t, _ in entries:
        size = nbytes(t)
        if shards[-1] and used + size > limit:
            shards.append([])
            used = 0
        shards[-1].append((names[0], t))
        used += size
    total = sum(nbytes(t) for _, t, _ in entries)
    rank0 = D.is_rank0()
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    if rank0:
        _quiet_transformers()
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    weight_map: dict[str, str] = {}
    for k, shard in enumerate(shards):
        fname = "model.safetensors" if len(shards) == 1 else f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {name: _full_cpu(t, dt) for name, t in shard}  # every rank: same order of gathers
        if rank0:
            save_file({n: v.contiguous() for n, v in tensors.items()}, str(tmp / fname), metadata={"format": "pt"})
            weight_map.update({n: fname for n in tensors})
        del tensors
    if rank0:
        if len(shards) > 1:
            index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
            (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        _write_config(model, tmp, out_dtype)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        gen = getattr(model, "generation_config", None)
        if gen is not None:
            gen.save_pretrained(str(tmp))
        if not (tmp / "generation_config.json").exists():
            from transformers import GenerationConfig

            GenerationConfig(eos_token_id=getattr(tokenizer, "eos_token_id", None),
                             pad_token_id=getattr(tokenizer, "pad_token_id", None)).save_pretrained(str(tmp))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    D.barrier()
    return out


def model_class(model: Any) -> type:
    """The model's transformers class (``Qwen2ForCausalLM``), not the ``FSDPQwen2ForCausalLM``
    subclass that ``fully_shard`` swaps in: the name vLLM and transformers look up."""
    from torch.distributed.fsdp import FSDPModule

    return next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule))


def _write_config(model: Any, out: Path, dtype: torch.dtype) -> None:
    """config.json for inference: the dtype written, the KV cache on, the architecture named."""
    import copy

    config = copy.deepcopy(model.config)
    config.architectures = [model_class(model).__name__]
    config.use_cache = True
    config.dtype = dtype
    config.save_pretrained(str(out))
    path = out / "config.json"
    written = json.loads(path.read_text())
    name = str(dtype).replace("torch.", "")
    written["dtype"] = name
    if "torch_dtype" in written:
        written["torch_dtype"] = name
    path.write_text(json.dumps(written, indent=2, sort_keys=True) + "\n")

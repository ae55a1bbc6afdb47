"""Checkpoints: HF model dirs for use, resume state kept apart for exact continuation.

API (stable):

    ckpt = Checkpointer(output_dir, setup, optimizer, scheduler, save_dtype=None)
    ckpt.save_model("epoch_1") -> Path       # collective; rank 0 writes <output_dir>/epoch_1
    ckpt.save_resume(progress)               # collective; <output_dir>/resume_state/
    progress = ckpt.load_resume()            # None when there is no resume state
    ckpt.link_final("epoch_3")               # <output_dir>/final -> epoch_3 (relative symlink)

Layout of ``<output_dir>``::

    epoch_<e>/ , step_<n>/     HF model dirs (config.json, *.safetensors, tokenizer, generation_config)
    final -> epoch_<E>         the last saved model dir
    resume_state/              torch.distributed.checkpoint (DCP) shards of the model and optimizer
                               (fp32 master weights, Adam moments) + recipe_state.pt

``recipe_state.pt`` (read with ``torch.load(weights_only=True)``) holds ``progress`` (the caller's
dict: step, epoch, batch position in the epoch, ...), the LR scheduler state and every rank's
torch (and CUDA) RNG state. DCP state is resharded on load, so a run may resume on a different
number of processes. The resume dir is written to ``resume_state.tmp`` and renamed into place,
so a run killed while saving keeps the previous resume state.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Optional

import warnings

import torch

from psr import distributed as D
from psr.models.hf import DEFAULT_MAX_SHARD_SIZE, save_model_dir
from psr.training.fsdp import ModelSetup

RESUME_DIR = "resume_state"
STATE_FILE = "recipe_state.pt"


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    out = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def _set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class Checkpointer:
    def __init__(self, output_dir: str | os.PathLike, setup: ModelSetup, optimizer: torch.optim.Optimizer,
                 scheduler: Any = None, save_dtype: Optional[str] = None,
                 max_shard_size: str = DEFAULT_MAX_SHARD_SIZE):
        self.output_dir = Path(output_dir)
        self.setup = setup
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.save_dtype = save_dtype
        self.max_shard_size = max_shard_size

    @property
    def resume_dir(self) -> Path:
        return self.output_dir / RESUME_DIR

    def save_model(self, name: str) -> Path:
        # collective: tensors are gathered one at a time, rank 0 writes file by file
        return save_model_dir(self.setup.model, self.setup.tokenizer, self.output_dir / name,
                              dtype=self.save_dtype, max_shard_size=self.max_shard_size)

    def link_final(self, name: str) -> Path:
        link = self.output_dir / "final"
        if D.is_rank0():
            if link.is_symlink() or link.exists():
                link.unlink() if link.is_symlink() else shutil.rmtree(link)
            link.symlink_to(name, target_is_directory=True)
        D.barrier()
        return link

    def _dcp_state(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_state_dict

        msd, osd = get_state_dict(self.setup.model, self.optimizer)
        return {"model": msd, "optim": osd}

    def save_resume(self, progress: dict[str, Any]) -> None:
        import torch.distributed.checkpoint as dcp

        tmp = self.output_dir / (RESUME_DIR + ".tmp")
        if D.is_rank0():
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        D.barrier()
        with warnings.catch_warnings():  # "assuming ... single process": intended without torchrun
            warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
            dcp.save(self._dcp_state(), checkpoint_id=str(tmp))
        rngs = D.all_gather_objects(_rng_state(self.setup.device))
        if D.is_rank0():
            state = {
                "progress": dict(progress),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "rng": rngs,
                "world_size": D.get_world_size(),
            }
            torch.save(state, tmp / STATE_FILE)
            old = self.output_dir / (RESUME_DIR + ".old")
            if self.resume_dir.exists():
                if old.exists():
                    shutil.rmtree(old)
                os.replace(self.resume_dir, old)
            os.replace(tmp, self.resume_dir)
            if old.exists():
                shutil.rmtree(old)
        D.barrier()

    def load_resume(self) -> Optional[dict[str, Any]]:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import set_state_dict

        path = self.resume_dir / STATE_FILE
        if not path.exists():
            return None
        state = self._dcp_state()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
            dcp.load(state, checkpoint_id=str(self.resume_dir))
        set_state_dict(self.setup.model, self.optimizer, model_state_dict=state["model"],
                       optim_state_dict=state["optim"])
        saved = torch.load(path, weights_only=True, map_location="cpu")
        if self.scheduler is not None and saved.get("scheduler") is not None:
            self.scheduler.load_state_dict(saved["scheduler"])
        rank = D.get_rank()
        if saved.get("world_size") == D.get_world_size() and rank < len(saved["rng"]):
            _set_rng_state(saved["rng"][rank], self.setup.device)
        return saved["progress"]

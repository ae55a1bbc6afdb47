"""A minimal recipe used to test the launchers (psr run, tune run, torchrun).

    psr run tests/assets/echo_recipe.py --config tests/assets/echo.yaml output_dir=/tmp/echo
    psr run --nproc_per_node 2 tests/assets/echo_recipe.py --config tests/assets/echo.yaml output_dir=/tmp/echo
    tune run tests/assets/echo_recipe.py --config tests/assets/echo.yaml output_dir=/tmp/echo

Each rank writes rank<r>.json with its rank, world size, the all-reduced sum of ranks and the
resolved config.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from omegaconf import MISSING, OmegaConf

from psr import distributed as psr_dist
from psr.config import recipe_main


@dataclass
class EchoConfig:
    output_dir: str = MISSING
    message: str = "hello"
    scale: float = 1.0
    log_file: str = "${output_dir}/log.txt"
    tags: list = field(default_factory=list)


def main(cfg):
    psr_dist.init_distributed(torch.device("cpu"))
    rank, world = psr_dist.get_rank(), psr_dist.get_world_size()
    t = torch.tensor([float(rank)])
    if psr_dist.is_distributed():
        dist.all_reduce(t)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{rank}.json").write_text(
        json.dumps({"rank": rank, "world": world, "rank_sum": t.item(), "cfg": OmegaConf.to_container(cfg)})
    )
    psr_dist.destroy()


if __name__ == "__main__":
    recipe_main(EchoConfig, main)

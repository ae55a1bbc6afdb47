"""The ``psr`` command: ``psr ls``, ``psr cp``, ``psr run``, ``psr plan``.

    psr ls                                   recipes and their configs
    psr cp step_search my_search.py          copy a recipe to edit (a variant is a copy)
    psr cp tiny/step_search my.yaml          copy a config to edit
    psr run step_search --config tiny/step_search output_dir=/tmp/s
    psr run --nproc_per_node 2 step_dpo --config tiny/step_dpo output_dir=/tmp/d
    psr plan step_dpo --config qwen2_5_math_72b/step_dpo --nnodes 4 --nproc_per_node 8 --gpu_mem_gb 80 \
        --model_config /models/Qwen2.5-Math-72B/config.json       per-GPU memory plan (psr.plan)

``psr run`` runs the recipe in this process, or through ``torch.distributed.run`` (torchrun)
when torchrun options are given (``--nproc_per_node``, ``--nnodes``, ``--rdzv-endpoint`` ...).
A recipe is a name from ``psr ls`` or the path of a recipe file (e.g. one made by ``psr cp``);
a config is a YAML path or ``family/recipe``.
"""

from __future__ import annotations

import argparse
import runpy
import shutil
import sys
from pathlib import Path
from typing import Optional, Sequence

from psr.config import CONFIGS_DIR, RECIPES_DIR, ConfigError, resolve_config_path


def list_recipes() -> dict[str, list[str]]:
    """``{recipe: [family/recipe config names]}`` for every file in ``recipes/``."""
    out: dict[str, list[str]] = {}
    for r in sorted(RECIPES_DIR.glob("*.py")):
        if r.name.startswith("_"):
            continue
        out[r.stem] = sorted(f"{c.parent.name}/{r.stem}" for c in CONFIGS_DIR.glob(f"*/{r.stem}.yaml"))
    return out


def resolve_recipe(spec: str) -> Path:
    p = Path(spec)
    if p.suffix == ".py":
        if not p.is_file():
            raise ConfigError(f"recipe file {spec!r} does not exist")
        return p
    r = RECIPES_DIR / f"{spec}.py"
    if r.is_file():
        return r
    raise ConfigError(f"unknown recipe {spec!r}; known: {', '.join(list_recipes()) or '(none)'}")


def cmd_ls(_: Sequence[str]) -> int:
    recipes = list_recipes()
    width = max([len("RECIPE")] + [len(r) for r in recipes])
    print(f"{'RECIPE':<{width}}  CONFIGS")
    for r, cfgs in recipes.items():
        print(f"{r:<{width}}  {', '.join(cfgs) if cfgs else '-'}")
    return 0


def cmd_cp(argv: Sequence[str]) -> int:
    ap = argparse.ArgumentParser(prog="psr cp", description="Copy a recipe or a config to edit.")
    ap.add_argument("source", help="recipe name (e.g. step_dpo) or config (family/recipe)")
    ap.add_argument("dest", help="destination file or directory")
    ap.add_argument("--force", action="store_true", help="overwrite an existing destination")
    args = ap.parse_args(argv)
    if "/" in args.source or args.source.endswith((".yaml", ".yml")):
        src = resolve_config_path(args.source)
    else:
        src = resolve_recipe(args.source)
    dest = Path(args.dest)
    if dest.is_dir():
        dest = dest / src.name
    if dest.exists() and not args.force:
        raise ConfigError(f"{dest} exists; not overwriting it (use --force)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    print(f"copied {src} -> {dest}")
    return 0


def _torchrun_options() -> dict[str, bool]:
    """torchrun's option strings -> whether the option takes a value."""
    from torch.distributed.run import get_args_parser

    opts: dict[str, bool] = {}
    for action in get_args_parser()._actions:
        if not action.option_strings or "-h" in action.option_strings:
            continue
        takes_value = action.nargs != 0
        for o in action.option_strings:
            opts[o] = takes_value
    return opts


def split_run_args(argv: Sequence[str]) -> tuple[list[str], Optional[str], list[str]]:
    """``(torchrun_args, recipe, recipe_args)`` from a ``psr run`` command line."""
    topts = _torchrun_options()
    torchrun_args: list[str] = []
    recipe_args: list[str] = []
    recipe: Optional[str] = None
    i = 0
    argv = list(argv)
    while i < len(argv):
        a = argv[i]
        name = a.split("=", 1)[0]
        if a.startswith("-") and name in topts and name != "--config":
            torchrun_args.append(a)
            if topts[name] and "=" not in a:
                if i + 1 >= len(argv):
                    raise ConfigError(f"torchrun option {a} needs a value")
                torchrun_args.append(argv[i + 1])
                i += 1
        elif a == "--config":
            if i + 1 >= len(argv):
                raise ConfigError("--config needs a value")
            recipe_args += [a, argv[i + 1]]
            i += 1
        elif recipe is None and not a.startswith("-") and "=" not in a:
            recipe = a
        else:
            recipe_args.append(a)
        i += 1
    return torchrun_args, recipe, recipe_args


def cmd_run(argv: Sequence[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    torchrun_args, recipe, recipe_args = split_run_args(argv)
    if recipe is None:
        raise ConfigError("psr run: which recipe? (see `psr ls`)")
    path = resolve_recipe(recipe)
    # resolve family/recipe short names here so workers get a plain path
    if "--config" in recipe_args:
        k = recipe_args.index("--config") + 1
        recipe_args[k] = str(resolve_config_path(recipe_args[k]))
    if torchrun_args:
        from torch.distributed.run import main as torchrun_main

        names = {a.split("=", 1)[0] for a in torchrun_args}
        if not names & {"--nnodes", "--rdzv-endpoint", "--rdzv_endpoint", "--master-addr", "--master_addr",
                        "--master-port", "--master_port", "--standalone"}:
            torchrun_args = ["--standalone"] + torchrun_args  # single node: a free port, no clashes
        return _torchrun(torchrun_main, torchrun_args + [str(path)] + recipe_args)
    sys.argv = [str(path)] + recipe_args
    runpy.run_path(str(path), run_name="__main__")
    return 0


def _torchrun(torchrun_main, argv: list[str]) -> int:
    """Run torchrun; a failed worker's exit status is returned as ours without torchrun's
    multi-line failure report (the recipe's rank 0 already printed its one-line error), and
    Ctrl-C exits 130 without a traceback (each worker prints what is saved and how to resume)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    try:
        torchrun_main(argv)
    except ChildFailedError as e:
        try:
            _, failure = e.get_first_failure()
            code = int(failure.exitcode)
        except Exception:  # noqa: BLE001 - any shape of report: still a failure
            code = 1
        return code if code > 0 else 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # torchrun's SignalException on SIGINT/SIGTERM
        if type(e).__name__ == "SignalException":
            return 130
        raise
    return 0


def cmd_plan(argv: Sequence[str]) -> int:
    """Per-GPU memory plan from the config and the model's config.json (psr.plan; exit 1: does not fit)."""
    from psr.plan import main as plan_main

    return plan_main(list(argv))


COMMANDS = {"ls": cmd_ls, "cp": cmd_cp, "run": cmd_run, "plan": cmd_plan}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__)
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    try:
        return COMMANDS[argv[0]](argv[1:]) or 0
    except ConfigError as e:
        print(f"psr: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

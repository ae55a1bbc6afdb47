"""Recipe configuration: a dataclass schema per recipe, YAML files, ``key=value`` overrides.

A recipe declares its keys as a dataclass (one comment/docstring per field) and ends with::

    if __name__ == "__main__":
        recipe_main(MyRecipeConfig, main)

``main`` receives an omegaconf ``DictConfig`` validated against the schema: an unknown or
misspelt key is a :class:`ConfigError` naming the key and the YAML file (or the override), a
wrong type names the key, a required key left unset (``MISSING``) is reported before anything
runs. ``${output_dir}``-style interpolation works. Nested ``_component_`` blocks are fields typed
``Any`` and are built with :func:`instantiate`.

A library's settings dataclass nests as one field (``search: SearchConfig = field(default_factory=
SearchConfig)``): its defaults are the library's, defined once; its keys are set as ``search.width=4``
or as a ``search:`` block in the YAML, and a misspelt nested key is an error naming it in full
(``search.widht``) with the valid keys of that block. :func:`settings` turns the node back into the
library's dataclass (its own checks run then).

The same command line works through ``python recipes/x.py``, ``psr run x`` and ``tune run``::

    --config <path.yaml | family/recipe> [key=value ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from psr.data.jsonl import DataError
from psr.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIGS_DIR = REPO_ROOT / "configs"
RECIPES_DIR = REPO_ROOT / "recipes"


def dataclass_from_mapping(cls: type, m: Any) -> Any:
    """An instance of the dataclass ``cls`` from an instance, a dict or an omegaconf config (keys
    that are not fields of ``cls`` are ignored; None gives the defaults)."""
    if isinstance(m, cls):
        return m
    if m is None:
        return cls()
    if isinstance(m, DictConfig):
        m = OmegaConf.to_container(m, resolve=True)
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in dict(m).items() if k in names})


def settings(cls: type, node: Any, key: str) -> Any:
    """The library dataclass ``cls`` (e.g. SearchConfig) from the config node at ``key``; its own
    checks (``__post_init__``) become a ConfigError naming ``key``."""
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    try:
        return cls(**dict(node or {}))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{key}: {e}") from None


def resolve_config_path(spec: str | Path) -> Path:
    """A YAML path as given, or ``family/recipe`` → ``configs/family/recipe.yaml``."""
    p = Path(spec)
    if p.is_file():
        return p
    short = CONFIGS_DIR / (str(spec) if str(spec).endswith((".yaml", ".yml")) else f"{spec}.yaml")
    if short.is_file():
        return short
    known = sorted(str(c.relative_to(CONFIGS_DIR))[: -len(".yaml")] for c in CONFIGS_DIR.glob("*/*.yaml"))
    raise ConfigError(f"config {str(spec)!r}: no such file, and not one of: {', '.join(known) or '(none)'}")


def _key_of(e: OmegaConfBaseException) -> str:
    return str(getattr(e, "full_key", None) or getattr(e, "key", None) or "?")


def merge_checked(base: DictConfig, other: Any, where: str, schema_name: str) -> DictConfig:
    """``base`` <- ``other``: an unknown key is a ConfigError naming it in full with the valid keys
    of its block, a wrong value names the key; ``where`` says where ``other`` came from."""
    try:
        return OmegaConf.merge(base, other)  # type: ignore[return-value]
    except ConfigKeyError as e:
        key = _key_of(e)
        parent = key.rpartition(".")[0]
        node = OmegaConf.select(base, parent, default=None) if parent else base
        if not isinstance(node, DictConfig):
            node, parent = base, ""
        valid = ", ".join(sorted(str(k) for k in node.keys()))
        of = f"{schema_name}.{parent}" if parent else schema_name
        raise ConfigError(f"{where}: unknown key {key!r} for {of} (valid keys: {valid})") from None
    except ValidationError as e:
        msg = str(e.msg).splitlines()[0] if e.msg else str(e)
        raise ConfigError(f"{where}: bad value for key {_key_of(e)!r}: {msg}") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"{where}: {e}") from None
    except TypeError as e:  # e.g. `loggers.1=...` on a list: OmegaConf cannot merge a dict into it
        raise ConfigError(f"{where}: {e} (a list is replaced whole: key=[...])") from None


def load_config(schema: type, config: Optional[str | Path] = None, overrides: Sequence[str] = ()) -> DictConfig:
    """The validated config: schema defaults ← YAML file ← ``key=value`` overrides."""
    if not dataclasses.is_dataclass(schema):
        raise TypeError(f"schema must be a dataclass, got {schema!r}")
    cfg: DictConfig = OmegaConf.structured(schema)
    name = schema.__name__
    if config is not None:
        path = resolve_config_path(config)
        try:
            loaded = OmegaConf.load(path)
        except Exception as e:  # yaml syntax errors
            raise ConfigError(f"{path}: cannot parse YAML: {e}") from None
        if not isinstance(loaded, DictConfig):
            raise ConfigError(f"{path}: the top level must be a mapping of keys")
        cfg = merge_checked(cfg, loaded, str(path), name)
    for ov in overrides:
        if "=" not in ov or ov.startswith("="):
            raise ConfigError(f"override {ov!r}: expected key=value")
        try:
            dot = OmegaConf.from_dotlist([ov])
        except OmegaConfBaseException as e:
            raise ConfigError(f"override {ov!r}: {e}") from None
        cfg = merge_checked(cfg, dot, f"override {ov!r}", name)
    missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not _is_interpolation(cfg, k))
    if missing:
        where = f" in {config}" if config is not None else ""
        raise ConfigError(
            f"required key(s) not set: {', '.join(missing)} (set them{where} or on the command line, e.g. {missing[0]}=...)"
        )
    try:  # resolve interpolations now so a bad ${ref} fails before the run
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as e:
        raise ConfigError(f"interpolation error at key {_key_of(e)!r}: {e}") from None
    return cfg


def _is_interpolation(cfg: DictConfig, dotted: str) -> bool:
    parent, _, leaf = dotted.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return isinstance(node, DictConfig) and OmegaConf.is_interpolation(node, leaf)


def parse_argv(argv: Sequence[str]) -> tuple[Optional[str], list[str]]:
    """``--config X`` (or ``--config=X``) and the ``key=value`` overrides of a recipe command line."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--config", default=None)
    ns, rest = parser.parse_known_args(list(argv))
    bad = [a for a in rest if "=" not in a or a.startswith("-")]
    if bad:
        raise ConfigError(f"unexpected argument(s) {bad}: recipes take --config <file> and key=value overrides")
    return ns.config, rest


def recipe_main(schema: type, main: Callable[[DictConfig], Any], argv: Optional[Sequence[str]] = None) -> Any:
    """Entry point of a recipe: parse the command line, validate, run ``main(cfg)``.

    Configuration and input-data errors are printed as one line (``error: ...``) and exit with
    status 2 instead of a traceback; failed items (:class:`psr.outputs.RunFailed`, raised after
    everything else was written) as one line with status 1; Ctrl-C as one line (what is saved, the
    command that resumes) with status 130. Under torchrun only rank 0 prints these lines.
    """
    argv = sys.argv[1:] if argv is None else argv
    _register_schema_module(schema, getattr(main, "__globals__", None))
    if any(a in ("-h", "--help") for a in argv):
        print(describe(schema))
        return None
    try:
        config, overrides = parse_argv(argv)
        cfg = load_config(schema, config, overrides)
    except ConfigError as e:
        _say(f"error: {e}")
        sys.exit(2)
    from psr.outputs import RunFailed, interrupted_message

    try:
        return main(cfg)
    except (ConfigError, DataError) as e:
        _say(f"error: {e}")
        sys.exit(2)
    except RunFailed as e:
        _say(f"error: {e}")
        sys.exit(1)
    except KeyboardInterrupt:
        _say(interrupted_message())
        sys.exit(130)


def _say(line: str) -> None:
    """One line on stderr, from rank 0 only (every rank meets the same error)."""
    import os

    if os.environ.get("RANK", "0") in ("", "0"):
        print(line, file=sys.stderr, flush=True)


def _register_schema_module(schema: type, namespace: Optional[dict]) -> None:
    """Make the schema's string annotations resolvable when the recipe runs under runpy.

    ``tune run`` executes a recipe with ``runpy.run_module(..., run_name="__main__")``: its
    globals are a fresh namespace, while ``sys.modules["__main__"]`` stays tune's own module, so
    omegaconf cannot resolve annotations such as ``Optional[str]`` through ``schema.__module__``.
    Registering the recipe's namespace as a module fixes the lookup.
    """
    if namespace is None:
        return
    mod = sys.modules.get(schema.__module__)
    if mod is not None and mod.__dict__ is namespace:
        return
    import types

    name = f"_psr_recipe_{id(namespace):x}"
    shim = types.ModuleType(name)
    shim.__dict__.update(namespace)
    sys.modules[name] = shim
    schema.__module__ = name


def describe(schema: type) -> str:
    """The schema's keys with their defaults (``--help``); a nested dataclass (e.g. ``search``)
    lists its keys as ``search.width = 6``."""
    lines = [f"{schema.__name__} keys (set in the YAML or as key=value):"]
    _describe_fields(schema, None, "", lines)
    return "\n".join(lines)


def _describe_fields(schema: type, instance: Any, prefix: str, lines: list[str]) -> None:
    for f in dataclasses.fields(schema):
        if instance is not None:
            value: Any = getattr(instance, f.name)
        elif f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            value = f.default_factory()  # type: ignore[misc]
        else:
            value = dataclasses.MISSING
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            _describe_fields(type(value), value, f"{prefix}{f.name}.", lines)
            continue
        default = "(required)" if value is dataclasses.MISSING else repr(value)
        doc = f.metadata.get("help", "")
        lines.append(f"  {prefix}{f.name} = {default}" + (f"   # {doc}" if doc else ""))


# _component_ paths that moved (issue 20: test doubles to psr.testing, PRM inference out of
# training/); a config copied before the move names the old path and gets the new one in the error.
MOVED_COMPONENTS = {
    "psr.training.prm.PRMScorer": "psr.prm.PRMScorer",
    "psr.eft.LengthPRM": "psr.testing.LengthPRM",
    "psr.eft.ScriptedTeacher": "psr.testing.ScriptedTeacher",
    "psr.eft.tiny_generator": "psr.testing.tiny_generator",
    "psr.ift.ScriptedSplitTeacher": "psr.testing.ScriptedSplitTeacher",
}


def _locate(path: str) -> Any:
    """The object at a dotted path: the longest importable module prefix, then attributes."""
    if path in MOVED_COMPONENTS:
        raise ConfigError(f"_component_ {path!r} has moved to {MOVED_COMPONENTS[path]!r}: use that path in the config")
    parts = path.split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"_component_ {path!r}: expected a dotted path like 'package.module.Name'")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                raise ConfigError(f"_component_ {path!r}: {obj.__name__!r} has no attribute {attr!r}")
            obj = getattr(obj, attr)
        return obj
    raise ConfigError(f"_component_ {path!r}: no importable module in that path")


def instantiate(node: Any, *args: Any, **kwargs: Any) -> Any:
    """Build ``node['_component_']`` with the node's other keys (and ``kwargs``) as keyword
    arguments; nested nodes with a ``_component_`` are built first. ``None`` stays ``None``."""
    if node is None:
        return None
    if isinstance(node, (DictConfig, ListConfig)):
        node = OmegaConf.to_container(node, resolve=True)
    if not isinstance(node, dict) or "_component_" not in node:
        raise ConfigError(f"cannot instantiate {node!r}: no '_component_' key")
    params = {k: _build(v) for k, v in node.items() if k != "_component_"}
    params.update(kwargs)
    target = _locate(node["_component_"])
    return target(*args, **params)


def _build(v: Any) -> Any:
    if isinstance(v, dict) and "_component_" in v:
        return instantiate(v)
    if isinstance(v, dict):
        return {k: _build(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_build(x) for x in v]
    return v

"""Where input data files are found: one rule for every recipe and loader.

A relative input path (``questions=gsm8k/train.jsonl``, ``pairs=...``, ``data=prm800k/...``, a
benchmark's local file) is looked up

1. **as given** (absolute, or relative to the working directory): a file found there wins;
2. else under the **data dir**, which is, first that is set:

   a. the config's ``data_dir`` key (the ``data_dir`` argument here),
   b. the environment variable ``$PSR_DATA_DIR``,
   c. ``../shared/data`` next to the repository root (where this project's data lives).

   A relative data dir is taken from the working directory when it exists there, else from the
   repository root.

:func:`resolve_data_path` raises :class:`psr.data.jsonl.DataError` naming the path and every place
it looked; :func:`find_data_path` returns None instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from psr.data.jsonl import DataError

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR_ENV = "PSR_DATA_DIR"
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"

PathLike = Union[str, "os.PathLike[str]"]


def resolve_data_dir(data_dir: Optional[PathLike] = None) -> Path:
    """The data dir: ``data_dir`` when set, else ``$PSR_DATA_DIR``, else ``../shared/data`` next to
    the repository root. A relative one is taken from the working directory when it exists there,
    else from the repository root."""
    if data_dir not in (None, ""):
        raw = Path(data_dir).expanduser()  # type: ignore[arg-type]
    elif os.environ.get(DATA_DIR_ENV):
        raw = Path(os.environ[DATA_DIR_ENV]).expanduser()
    else:
        return DEFAULT_DATA_DIR
    if raw.is_absolute() or raw.exists():
        return raw
    alt = REPO_ROOT / raw
    return alt if alt.exists() else raw


def _data_dir_source(data_dir: Optional[PathLike]) -> str:
    if data_dir not in (None, ""):
        return "the data_dir key"
    if os.environ.get(DATA_DIR_ENV):
        return f"${DATA_DIR_ENV}"
    return "the default"


def find_data_path(path: PathLike, data_dir: Optional[PathLike] = None) -> Optional[Path]:
    """``path`` as given when it exists, else ``<data dir>/path`` when that exists, else None."""
    p = Path(path).expanduser()
    if p.exists():
        return p
    if p.is_absolute():
        return None
    alt = resolve_data_dir(data_dir) / p
    return alt if alt.exists() else None


def resolve_data_path(path: PathLike, data_dir: Optional[PathLike] = None, key: Optional[str] = None) -> Path:
    """The file an input path names (see the module docstring for the order); a missing one is a
    DataError naming ``key`` (the config key, when given), the path and the places looked in."""
    found = find_data_path(path, data_dir)
    if found is not None:
        return found
    p = Path(path).expanduser()
    where = f"{key}={path}" if key else str(path)
    if p.is_absolute():
        raise DataError(f"{where}: no such file")
    raise DataError(f"{where}: no such file (looked in {Path.cwd() / p} and {resolve_data_dir(data_dir) / p}: "
                    f"data dir from {_data_dir_source(data_dir)}; data_dir > ${DATA_DIR_ENV} > {DEFAULT_DATA_DIR})")

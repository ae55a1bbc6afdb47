"""jsonl in and out: one JSON object per line, errors that name file and line, appending
writers that flush per record so a killed run resumes by skipping ids already written."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence


class DataError(ValueError):
    """Bad input data; the message names the file and line (1-based)."""


def iter_jsonl(path: str | os.PathLike, required: Sequence[str] = ()) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)`` for each non-blank line of ``path``.

    Raises :class:`DataError` naming ``path:line`` for a line that is not a JSON object or lacks
    one of the ``required`` keys.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(rec, dict):
                raise DataError(f"{path}:{n}: expected a JSON object, got {type(rec).__name__}")
            missing = [k for k in required if k not in rec]
            if missing:
                raise DataError(f"{path}:{n}: missing field(s) {missing}")
            yield n, rec


def read_jsonl(path: str | os.PathLike, required: Sequence[str] = ()) -> list[dict]:
    """All records of ``path`` (see :func:`iter_jsonl`)."""
    return [rec for _, rec in iter_jsonl(path, required)]


def read_jsonl_tolerant(path: str | os.PathLike) -> list[dict]:
    """Records of an output file this project is appending to: a torn last line (a run killed
    mid-write) is ignored, any other bad line is an error naming file and line."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if n == len(lines):  # last line, no trailing newline: torn write
                break
            raise DataError(f"{path}:{n}: not valid JSON") from None
    return out


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Write ``records`` to ``path`` atomically (temp file + rename); returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


class JsonlAppender:
    """Append records to ``path``, one line each, flushed (and fsynced with ``sync=True``)
    per record. A torn last line left by a killed run is cut off when the file is opened, so
    appending resumes cleanly."""

    def __init__(self, path: str | os.PathLike, sync: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.sync = sync
        if self.path.exists():
            data = self.path.read_bytes()
            if data and not data.endswith(b"\n"):
                keep = data.rfind(b"\n") + 1
                with self.path.open("r+b") as f:
                    f.truncate(keep)
        self._f = self.path.open("a", encoding="utf-8")

    def write(self, rec: dict[str, Any]) -> None:
        self._f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self._f.flush()
        if self.sync:
            os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def done_ids(path: str | os.PathLike, key: str = "id") -> set:
    """Ids already written to an output jsonl (empty when the file does not exist)."""
    return {rec[key] for rec in read_jsonl_tolerant(path) if key in rec}

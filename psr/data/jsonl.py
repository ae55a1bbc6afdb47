"""jsonl in and out: one JSON object per line, errors that name file and line, appending
writers that flush per record so a killed run resumes by skipping ids already written."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence


class DataError(ValueError):
    """Bad input data; the message names the file and line (1-based)."""


# A malformed line (not JSON, or not a JSON object) is an error naming file:line, unless the run
# opted into skipping such lines (the ``skip_bad_lines`` key every recipe has; psr.outputs sets
# it). Skipped lines are logged and listed in SKIPPED_LINES as "file:line: reason".
_SKIP_BAD_LINES = False
SKIPPED_LINES: list[str] = []


def set_skip_bad_lines(flag: bool) -> None:
    global _SKIP_BAD_LINES
    _SKIP_BAD_LINES = bool(flag)


def skip_bad_lines() -> bool:
    return _SKIP_BAD_LINES


def json_error(e: json.JSONDecodeError) -> str:
    """``json``'s message as "Expecting value: column 3" (its own format, without "at at")."""
    return f"{e.msg}: column {e.colno}"


def malformed(where: str, reason: str) -> None:
    """A malformed input line: DataError naming ``where`` (file:line), or -- with skip_bad_lines
    -- a warning, and the line is skipped."""
    if not _SKIP_BAD_LINES:
        raise DataError(f"{where}: {reason} (skip_bad_lines=true skips such lines)")
    import logging

    SKIPPED_LINES.append(f"{where}: {reason}")
    logging.getLogger("psr.data").warning("skipping %s: %s", where, reason)


def iter_jsonl(path: str | os.PathLike, required: Sequence[str] = ()) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)`` for each non-blank line of ``path``.

    Raises :class:`DataError` naming ``path:line`` for a line that is not a JSON object (unless
    skip_bad_lines is set, see :func:`malformed`) or lacks one of the ``required`` keys.
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
                malformed(f"{path}:{n}", f"not valid JSON ({json_error(e)})")
                continue
            if not isinstance(rec, dict):
                malformed(f"{path}:{n}", f"expected a JSON object, got {type(rec).__name__}")
                continue
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
        except json.JSONDecodeError as e:
            if n == len(lines):  # last line, no trailing newline: torn write
                break
            raise DataError(f"{path}:{n}: not valid JSON ({json_error(e)})") from None
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

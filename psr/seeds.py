"""Every seed psr derives, in one place (standard library only, so anything may import it).

Derived seeds feed recorded data and resume (a re-run must draw what the first run drew), so
each derivation below is frozen: its values are pinned by tests/test_seeds.py, and a new need
gets a new function rather than a change to an old one. They differ on purpose where their
outputs are already on disk:

* :func:`derive_seed` -- per-prompt sampling seeds of the step search, the SRLM round and the
  headroom measure: SHA-256 of a JSON list, 31 bits.
* :func:`stable_hash` -- IFT/EFT data construction (teacher seeds, which MCTS mode, pair order,
  the train/test split, the shard of an item): SHA-256 of the ``\\x1f``-joined parts, 63 bits;
  :func:`stable_seed` is it reduced below 2**31 - 1 for a generator's seed.
* :func:`crc32_seed` -- CRC-32 of a text: the arith teacher's wording choice, and eval's
  per-item sampling seed (``seed + (crc32_seed(id) & 0x7FFFFFFF)``, :func:`item_seed`).
* :func:`keyed_rng` -- a ``random.Random`` seeded with a ``:``-joined string (Python hashes
  string seeds with SHA-512): the arith problems and their EFT records.
* :func:`epoch_seed` -- the data order of a training epoch (SFT mixing, batch shuffles).
"""

from __future__ import annotations

import hashlib
import json
import random
import zlib
from typing import Any

__all__ = ["derive_seed", "stable_hash", "stable_seed", "crc32_seed", "item_seed", "keyed_rng", "epoch_seed"]

SEED_MOD = 2**31 - 1


def derive_seed(base: int, *parts: Any) -> int:
    """A 31-bit seed from ``base`` and ``parts`` (stable across processes and Python versions)."""
    h = hashlib.sha256(json.dumps([int(base), *[str(p) for p in parts]]).encode()).digest()
    return int.from_bytes(h[:8], "little") & 0x7FFFFFFF


def stable_hash(*parts: Any) -> int:
    """A 63-bit hash of ``parts`` that is the same in every process (unlike ``hash``)."""
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(h[:8], "little") >> 1


def stable_seed(*parts: Any) -> int:
    """:func:`stable_hash` of ``parts`` modulo 2**31 - 1: a seed any generator backend accepts."""
    return stable_hash(*parts) % SEED_MOD


def crc32_seed(text: str) -> int:
    """CRC-32 of ``text`` (UTF-8), unsigned 32 bits."""
    return zlib.crc32(text.encode())


def item_seed(base: int, item_id: Any) -> int:
    """``base`` plus a 31-bit CRC-32 of the item id: one sampling seed per evaluated item."""
    return int(base) + (crc32_seed(str(item_id)) & 0x7FFFFFFF)


def keyed_rng(*parts: Any) -> random.Random:
    """``random.Random`` seeded with the string ``":".join(parts)`` (e.g. ``arith:train:0:5``)."""
    return random.Random(":".join(str(p) for p in parts))


def epoch_seed(seed: int, epoch: int, stride: int = 1, salt: int = 0) -> int:
    """``seed * 1_000_003 + epoch * stride + salt``: one seed per (run seed, epoch[, salt])."""
    return int(seed) * 1_000_003 + int(epoch) * int(stride) + int(salt)

"""psr.seeds: every derived seed keeps its value (recorded data and resume depend on them).

The pinned numbers were computed with the derivations as they were before they moved here
(psr.search.derive_seed, psr.ift.stable_hash, recipes/eval.py's hash_id, the arith teacher's CRC,
the arith generators' string seeds, the training epoch seeds): a change to any of them is a
change to what an existing output dir resumes with, so it must show up here.
"""

import random
import zlib

from psr.seeds import crc32_seed, derive_seed, epoch_seed, item_seed, keyed_rng, stable_hash, stable_seed


def test_derive_seed_values_are_frozen():
    assert derive_seed(7, "qb", "policy", 1, 0) == 1034477831
    assert derive_seed(0, "q", 1, 0) == 801827607
    assert derive_seed(123, "x") == 983181729
    assert derive_seed(5, "q1", "srlm_judge", 3) == 1789225759
    assert derive_seed("7", "qb", "policy", 1, 0) == derive_seed(7, "qb", "policy", "1", "0")  # ints by value


def test_stable_hash_and_stable_seed_values_are_frozen():
    assert stable_hash(1, "a") == 1836665311988765781
    assert stable_hash("shard", "q1") == 2091078761268346949
    assert stable_seed(3, "p1", 0) == stable_hash(3, "p1", 0) % (2**31 - 1) == 173074293
    assert 0 <= stable_hash("x") < 2**63


def test_crc_item_and_keyed_seeds_are_frozen():
    assert crc32_seed("a\x1fb") == zlib.crc32(b"a\x1fb") == 3635574511  # 32 bits, not masked
    assert random.Random(crc32_seed("a\x1fb")).random() == 0.36544000548914113
    assert item_seed(0, "gsm8k-0") == 1216872266 and item_seed(10, "gsm8k-0") == 1216872276
    assert keyed_rng("arith", "train", 0, 5).random() == random.Random("arith:train:0:5").random() == 0.2922520745193553
    assert keyed_rng("arith-eft", 3, "p1").random() == 0.3180695822197146


def test_epoch_seed_values_are_frozen():
    assert epoch_seed(7, 2) == 7 * 1_000_003 + 2 == 7000023  # SFT mixing
    assert epoch_seed(7, 2, stride=7919, salt=1) == 7015860  # batch shuffles

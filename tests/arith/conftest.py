import pytest

from psr.arith.problems import Operation, Problem


def make_problem(ops, givens, question, pid="hand-1"):
    ops = [Operation(*o) for o in ops]
    return Problem(
        id=pid, question=question, steps=[], answer=ops[-1].result, operations=ops, givens=givens,
        solution="", n_ops=len(ops), ctx={},
    )


@pytest.fixture
def apples():
    """3 boxes of 12 apples (36), buys 5 (41), eats 9 (32), shares among 4 (8)."""
    return make_problem(
        [("g", 3, "*", 12, 36), ("+", 36, "+", 5, 41), ("-", 41, "-", 9, 32), ("/", 32, "/", 4, 8)],
        [3, 12, 5, 9, 4],
        "Tom has 3 boxes with 12 apples in each. He buys 5 more apples. He eats 9 apples. "
        "He shares his apples equally among 4 people and keeps one share. How many apples does Tom have now?",
    )


@pytest.fixture
def money():
    """40 envelopes of $30 (1,200), spends 200 (1,000)."""
    return make_problem(
        [("g", 40, "*", 30, 1200), ("-", 1200, "-", 200, 1000)],
        [40, 30, 200],
        "Ann has 40 envelopes with $30 in each. She spends $200. How many dollars does Ann have now?",
        pid="hand-2",
    )

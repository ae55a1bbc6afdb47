"""Untrusted model text: injected code never runs, pathological inputs are wrong answers within
the timeout, a stuck or crashing worker is replaced and costs only its own item."""

import os
import time

import pytest

from psr.data.benchmarks import answer_type_of
from psr.grader import GraderPool, grade, grade_many


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "pwned"


def _payloads(path):
    p = str(path)
    return [
        f"\\boxed{{__import__('os').system('touch {p}')}}",
        f"The answer is __import__('os').system('touch {p}')",
        f"__import__('os').system('touch {p}')",
        f"\\boxed{{eval(\"__import__('os').system('touch {p}')\")}}",
        f"\\boxed{{exec(\"open('{p}','w').write('x')\")}}",
        f"\\boxed{{(lambda: __import__('subprocess').run(['touch', '{p}']))()}}",
        f"$x = __import__('os').system('touch {p}')$",
        f"\\boxed{{[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == 'Popen'][0](['touch', '{p}'])}}",
        f"\\boxed{{Symbol('x').__class__.__init__.__globals__['os'].system('touch {p}')}}",
    ]


def test_injected_code_does_not_run(marker):
    payloads = _payloads(marker)
    verdicts = grade_many([(p, "31337") for p in payloads] + [(p, "-42") for p in payloads], workers=2, timeout_s=10)
    assert verdicts == [False] * (2 * len(payloads))
    for p in payloads:
        assert grade(p, "31337", timeout_s=10) is False
    time.sleep(0.2)
    assert not marker.exists()


def test_pathological_inputs_are_wrong_within_the_timeout():
    cases = [
        ("\\boxed{10^{10^{10^{10}}}}", "1"),
        ("\\boxed{" + "{" * 5000 + "1" + "}" * 5000 + "}", "1"),
        ("\\boxed{" + "(" * 5000 + "1" + ")" * 5000 + "}", "2"),
        ("x" * (1 << 20), "1"),
        ("1" * (1 << 20), "1"),
        ("\\boxed{" + "1+" * 20000 + "1}", "0"),
        ("\\boxed{9^{9^{9^{9}}}}", "9^{9^{9^{9}}}+1"),
    ]
    t0 = time.perf_counter()
    # a timeout far above what an easy item needs on a loaded machine (\\boxed{4} must never time
    # out); the pathological items are cut by guards or by this timeout either way
    got = grade_many(cases + [("\\boxed{4}", "4")], workers=2, timeout_s=10)
    elapsed = time.perf_counter() - t0
    assert got == [False] * len(cases) + [True]
    # each item is bounded by its own timeout plus a worker restart
    assert elapsed < 10 * len(cases) + 30


def test_a_stuck_item_is_killed_and_the_rest_of_the_batch_is_graded():
    pool = GraderPool(workers=1)
    try:
        items = [("grade", "\\boxed{10^{10^{10^{10}}}}", "1", None)] + [("grade", f"\\boxed{{{k}}}", str(k), None) for k in range(5)]
        t0 = time.perf_counter()
        # 5 s: the restarted worker's first easy item must not time out on a loaded machine; the
        # stuck item never finishes, so exactly one timeout whatever the machine's speed
        got = pool.run(items, timeout_s=5.0)
        assert got == [False] + [True] * 5
        assert pool.n_timeouts == 1
        assert time.perf_counter() - t0 < 5.0 + 30
    finally:
        pool.close()


def test_a_crashing_worker_costs_only_its_item(monkeypatch):
    from psr.grader import equiv

    real = equiv.grade_local

    def crashy(response, gold, benchmark=None):
        if response == "CRASH":
            os._exit(3)  # a segfault-like death, no exception
        return real(response, gold, benchmark)

    monkeypatch.setattr(equiv, "grade_local", crashy)  # forked workers inherit the patch
    pool = GraderPool(workers=1, start_method="fork")
    try:
        items = [("grade", "\\boxed{1}", "1", None), ("grade", "CRASH", "1", None), ("grade", "\\boxed{2}", "2", None)]
        assert pool.run(items, timeout_s=5) == [True, False, True]
        assert pool.n_crashes == 1
        # the pool still works afterwards
        assert pool.run([("match", "0.5", "\\frac12", None)], timeout_s=5) == [True]
    finally:
        pool.close()


def test_grade_many_keeps_order_and_accepts_per_item_benchmarks():
    pairs = [(f"\\boxed{{{k}}}", str(k if k % 3 else k + 1)) for k in range(40)]
    got = grade_many(pairs, workers=2, timeout_s=5)
    assert got == [bool(k % 3) for k in range(40)]
    assert grade_many([("#### 7", "7", answer_type_of("gsm8k")), ("(C)", "C", answer_type_of("gaokao2023en"))],
                      workers=1) == [True, True]
    assert grade_many([], workers=2) == []
    with pytest.raises(ValueError, match="response, gold"):
        grade_many([("only one",)])


def test_grade_works_from_a_script_without_a_main_guard(tmp_path):
    """Workers must not re-import the caller's __main__ (spawn/forkserver would, and a script
    without `if __name__ == "__main__"` would then recurse)."""
    import subprocess
    import sys

    script = tmp_path / "plain.py"
    script.write_text("from psr.grader import grade, grade_many\n"
                      "print(grade('\\\\boxed{0.5}', '\\\\frac12'), grade_many([('#### 3', '3'), ('x', '4')], workers=2))\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "True [True, False]"

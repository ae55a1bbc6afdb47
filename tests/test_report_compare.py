"""psr.report.compare: two pipeline runs (method=psr and method=srlm) side by side."""

import json
import subprocess
import sys

import pytest

from psr.report import compare, write_report
from test_report import _fake_run, _w


def _srlm_run(out):
    _fake_run(out)
    st = out / "stages"
    for k, (acc, judge) in enumerate([(0.0, None), (25.0, 62.5), (50.0, 70.0)]):
        _w(st / f"eval_M{k}" / "summary.json", {"benchmarks": {"arith": {"n": 4, "accuracy": acc}}})
        _w(st / f"judge_M{k}" / "summary.json",
           {"benchmarks": {"judge": {"n": 8, "accuracy": judge, "unparseable": 8 if judge is None else 0}}} if judge is not None
           else {})
    _w(st / "search_1" / "summary.json", {"method": "srlm", "questions_written": 3, "unparseable_scores": 4,
                                          "judge_calls": 36, "tokens_generated": 1234})
    _w(st / "search_1" / "pairs.jsonl", [{"prompt": "q", "initial_reason_steps": "", "chosen": "a", "rejected": "b"}])


def test_compare_puts_both_methods_side_by_side(tmp_path):
    _fake_run(tmp_path / "psr")
    _w(tmp_path / "psr" / "stages" / "search_1" / "summary.json",
       {"questions_written": 3, "rollbacks": 5, "unparseable_verdicts": 1, "judge_calls": 90, "tokens_generated": 9876})
    write_report(tmp_path / "psr", 1, pair_checker=lambda i, p: (True, p["chosen"] == "Step 1: c"), plots=False)
    _srlm_run(tmp_path / "srlm")
    md = write_report(tmp_path / "srlm", 1, plots=False, method="srlm").read_text()
    assert md.startswith("# SRLM baseline (Yuan et al. 2024): pipeline report")
    assert "| 1 | M1 | 3 | 1 | - | 4 |" in md  # unparseable scores in the unparseable column, no rollbacks
    assert json.loads((tmp_path / "srlm" / "report.json").read_text())["method"] == "srlm"
    table = compare(tmp_path / "psr", tmp_path / "srlm")
    lines = table.splitlines()
    assert lines[0] == f"runs: psr = {tmp_path / 'psr'}, srlm = {tmp_path / 'srlm'}"
    assert lines[2] == ("| model | psr accuracy | psr judge accuracy | psr TTS | srlm accuracy | srlm judge accuracy "
                        "| srlm TTS |")
    assert lines[4:7] == ["| M0 | 0.0 | 40.0 | - | 0.0 | - | - |",
                          "| M1 | 50.0 | 70.0 | 75.0 | 25.0 | 62.5 | 75.0 |",
                          "| M2 | 75.0 | 100.0 | 100.0 | 50.0 | 70.0 | 100.0 |"]
    assert "| 1 (M1) | 3 | 2 | 9876 | 50.0 | 3 | 1 | 1234 | - |" in lines
    assert lines[-1].startswith("Judge accuracy is each method's own judge on its own held-out judge data")
    assert "Judge accuracy is each" not in compare(tmp_path / "psr", tmp_path / "psr")  # one method: no note
    # the CLI prints the same table and writes it with --out
    p = subprocess.run([sys.executable, "-m", "psr.report", "compare", str(tmp_path / "psr"), str(tmp_path / "srlm"),
                        "--out", str(tmp_path / "cmp.md")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout == table == (tmp_path / "cmp.md").read_text()


def test_compare_names_a_missing_report(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(FileNotFoundError, match=r"a/report.json: no report.json"):
        compare(tmp_path / "a", tmp_path / "a")
    p = subprocess.run([sys.executable, "-m", "psr.report", "compare", str(tmp_path / "a"), str(tmp_path / "b")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "a/report.json: no report.json" in p.stderr

"""The loop's headroom: candidates sampled at the first wrong step of each greedy failure."""

import json
import sys
from pathlib import Path

import pytest

from psr.arith.headroom import first_wrong_step, headroom, write_headroom
from psr.data.jsonl import write_jsonl
from psr.generation.base import Completion
from psr.seeds import derive_seed
from fakes import run_cmd

REPO = Path(__file__).resolve().parents[2]
S1 = "Tom has 3 * 12 = 36 apples."
S2_WRONG = "He buys 5, so 36 + 5 = 40 apples."


class Candidates:
    """A generator that answers every prompt with the given texts and records its calls."""

    def __init__(self, texts):
        self.texts, self.calls = texts, []

    def generate(self, prompts, params, stops=None, seeds=None):
        self.calls.append((list(prompts), params, stops, seeds))
        return [[Completion(t, 5, "stop") for t in self.texts[: params.n]] for _ in prompts]


def _rec(pid, response, correct=False):
    return {"id": pid, "prompt": "<prompt>\n", "response": response, "correct": correct}


def test_first_wrong_step_names_the_step_and_the_checkers_reason(apples):
    assert first_wrong_step(apples, f"Step 1: {S1}\nStep 2: {S2_WRONG}") == ([S1], 1, "arithmetic")
    assert first_wrong_step(apples, f"Step 1: {S1}") is None  # unfinished, but nothing wrong
    assert first_wrong_step(apples, "The answer is 8.") is None  # no steps at all


def test_headroom_counts_failures_with_a_correct_candidate_at_their_first_wrong_step(apples, money):
    gen = Candidates([" Step 2: He buys 5 more, so 36 + 5 = 41 apples.", " Step 2: 36 + 5 = 40.",
                      " Step 2: 36 - 5 = 31.", " Step 2: He buys 5 more, so 36 + 5 = 41 apples."])
    greedy = [_rec("hand-1", f"Step 1: {S1}\nStep 2: {S2_WRONG}"),
              _rec("hand-1", "Step 1: Tom has 3 * 12 = 36 apples. The answer is \\boxed{8}.", correct=True),  # ignored
              _rec("hand-2", "no steps here")]
    summary, rows = headroom(gen, [apples, money], greedy, width=4, temperature=0.7, top_p=0.9, max_new_tokens=24, seed=3)
    assert summary == {"failures": 2, "located": 1, "unlocated": 1, "with_correct": 1, "mean_correct": 2.0, "width": 4,
                       "temperature": 0.7, "top_p": 0.9,
                       "by_ops": {"2": {"failures": 1, "located": 0, "unlocated": 1, "with_correct": 0, "mean_correct": None, "width": 4},
                                  "4": {"failures": 1, "located": 1, "unlocated": 0, "with_correct": 1, "mean_correct": 2.0, "width": 4}}}
    assert rows == [{"id": "hand-1", "n_ops": 4, "step": 2, "reason": "arithmetic", "n_correct": 2,
                     "candidates": ["He buys 5 more, so 36 + 5 = 41 apples.", "36 + 5 = 40.", "36 - 5 = 31.",
                                    "He buys 5 more, so 36 + 5 = 41 apples."],
                     "correct": [True, False, False, True]}]
    # one call: the failure's own prompt + its correct steps, stopped before the step after it
    [(prompts, params, stops, seeds)] = gen.calls
    assert prompts == [f"<prompt>\nStep 1: {S1}\n"] and stops == [["Step 3:"]]
    assert (params.n, params.temperature, params.top_p, params.max_new_tokens) == (4, 0.7, 0.9, 24)
    assert seeds == [derive_seed(3, "hand-1", "headroom", 2)]


def test_headroom_without_failures_samples_nothing(apples):
    gen = Candidates([])
    summary, rows = headroom(gen, [apples], [_rec("hand-1", "x", correct=True)])
    assert gen.calls == [] and rows == [] and summary["failures"] == 0 and summary["mean_correct"] is None


def test_a_greedy_record_of_another_problem_set_is_an_error_naming_both_files(tmp_path, apples):
    write_jsonl(tmp_path / "problems.jsonl", [apples.to_dict()])
    write_jsonl(tmp_path / "items.jsonl", [_rec("hand-1", "x"), _rec("arith-test-9", "y")])
    with pytest.raises(ValueError, match=r"items\.jsonl: record 'arith-test-9' is not a problem of .*problems\.jsonl"):
        write_headroom(tmp_path / "no-model", tmp_path / "problems.jsonl", tmp_path / "items.jsonl", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="not one of the problems given"):
        headroom(Candidates([]), [apples], [_rec("other", "x")])


def test_command_line_writes_the_summary_and_the_candidates_with_a_real_model(tmp_path, apples):
    from psr.arith.model import ArithModelConfig, build_model_dir

    model = build_model_dir(tmp_path / "m", ArithModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                                                             intermediate_size=64))
    write_jsonl(tmp_path / "problems.jsonl", [apples.to_dict()])
    write_jsonl(tmp_path / "items.jsonl", [_rec("hand-1", f"Step 1: {S1}\nStep 2: {S2_WRONG}")])
    p = run_cmd([sys.executable, "-m", "psr.arith", "headroom", "--model", str(model), "--problems",
                 str(tmp_path / "problems.jsonl"), "--greedy", str(tmp_path / "items.jsonl"), "--out",
                 str(tmp_path / "out"), "--width", "3", "--max-new-tokens", "8"], 600, cwd=REPO)
    assert p.returncode == 0, p.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "headroom.json").read_text())
    assert (summary["failures"], summary["located"], summary["width"], summary["temperature"]) == (1, 1, 3, 0.5)
    [row] = [json.loads(line) for line in (tmp_path / "out" / "items.jsonl").open()]
    assert row["step"] == 2 and len(row["candidates"]) == 3 and row["n_correct"] == sum(row["correct"])
    assert "of 1 greedy failures have a correct candidate among 3" in p.stdout

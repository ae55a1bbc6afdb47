"""The eval recipe end to end on a tiny random model (tiny/eval config)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from psr.config import load_config
from fakes import load_recipe

REPO = Path(__file__).resolve().parents[2]


def _run(args, cwd=REPO, timeout=300):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny_eval(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("eval")
    p = _run(["-m", "psr.cli", "run", "eval", "--config", "tiny/eval", f"output_dir={out}",
              "benchmarks=[gsm8k,aime24]", "limit=4", f"data_dir={data_dir}"])
    assert p.returncode == 0, p.stderr[-3000:]
    return out


def test_tiny_eval_writes_items_and_summary(tiny_eval, data_dir):
    summary = json.loads((tiny_eval / "summary.json").read_text())
    assert set(summary["benchmarks"]) == {"gsm8k", "aime24"}
    golds = [json.loads(line)["answer"] for line in (data_dir / "gsm8k" / "test.jsonl").read_text().splitlines()[:4]]
    items = [json.loads(line) for line in (tiny_eval / "gsm8k" / "items.jsonl").read_text().splitlines()]
    assert [it["id"] for it in items] == [f"gsm8k-test-{i}" for i in range(4)]
    assert [it["gold"] for it in items] == golds
    for it in items:
        assert set(it) >= {"id", "prompt", "response", "extracted", "gold", "correct", "n_steps", "mean_step_tokens"}
        assert it["prompt"].startswith("<|im_start|>user\nLet's think step by step")
        assert 1 <= it["n_tokens"] <= 32
    g = summary["benchmarks"]["gsm8k"]
    assert g["n"] == 4 and g["accuracy"] == 100.0 * sum(it["correct"] for it in items) / 4
    assert "| gsm8k | 4 |" in (tiny_eval / "summary.md").read_text()


def test_eval_is_deterministic_and_resumes_without_redoing_items(tiny_eval, tmp_path, data_dir):
    # a first run on 2 items, then the same command with limit=4 only evaluates the 2 new ones
    args = ["-m", "psr.cli", "run", "eval", "--config", "tiny/eval", f"output_dir={tmp_path}",
            "benchmarks=[gsm8k]", f"data_dir={data_dir}", f"model_dir={tiny_eval / 'tiny_model'}"]
    assert _run(args + ["limit=2"]).returncode == 0
    first = (tmp_path / "gsm8k" / "items.jsonl").read_text().splitlines()
    p = _run(args + ["limit=4"])
    assert p.returncode == 0, p.stderr[-2000:]
    lines = (tmp_path / "gsm8k" / "items.jsonl").read_text().splitlines()
    assert lines[:2] == first and len(lines) == 4
    # greedy on the same model: identical responses to the first full run
    ref = [json.loads(x)["response"] for x in (tiny_eval / "gsm8k" / "items.jsonl").read_text().splitlines()]
    assert [json.loads(x)["response"] for x in lines] == ref


def test_judge_mode_scores_verdicts_against_labels(tmp_path, tiny_eval):
    eft = tmp_path / "eft_test.jsonl"
    recs = [{"id": f"e{i}", "question": "What is 2+3?", "prev_steps": [], "step_a": "2+3 = 5. \\boxed{5}",
             "step_b": "2+3 = 6. \\boxed{6}", "label": "A"} for i in range(3)]
    eft.write_text("".join(json.dumps(r) + "\n" for r in recs))
    p = _run(["-m", "psr.cli", "run", "eval", "--config", "tiny/eval", f"output_dir={tmp_path / 'o'}",
              "mode=judge", f"eft_test={eft}", f"model_dir={tiny_eval / 'tiny_model'}", "judge_max_new_tokens=8"])
    assert p.returncode == 0, p.stderr[-2000:]
    items = [json.loads(x) for x in (tmp_path / "o" / "judge" / "items.jsonl").read_text().splitlines()]
    assert len(items) == 3
    for it in items:  # a random model rarely writes [[A]]: correct exactly when its verdict is A
        assert it["correct"] == (it["verdict"] == "A")
    j = json.loads((tmp_path / "o" / "summary.json").read_text())["benchmarks"]["judge"]
    assert j["n"] == 3 and j["unparseable"] == sum(it["verdict"] is None for it in items)


def test_bad_eft_label_and_missing_model_are_clear_errors(tmp_path, tiny_eval):
    eft = tmp_path / "eft.jsonl"
    eft.write_text(json.dumps({"question": "q", "prev_steps": [], "step_a": "a", "step_b": "b", "label": "C"}) + "\n")
    p = _run(["-m", "psr.cli", "run", "eval", "--config", "tiny/eval", f"output_dir={tmp_path / 'o'}",
              "mode=judge", f"eft_test={eft}", f"model_dir={tiny_eval / 'tiny_model'}"])
    assert p.returncode == 2 and "label must be 'A' or 'B'" in p.stderr
    eft.write_text('{"question": "q"}\n')
    p = _run(["-m", "psr.cli", "run", "eval", "--config", "tiny/eval", f"output_dir={tmp_path / 'o'}",
              "mode=judge", f"eft_test={eft}", f"model_dir={tiny_eval / 'tiny_model'}"])
    assert p.returncode == 2 and "eft.jsonl:1: missing field(s)" in p.stderr
    p = _run(["-m", "psr.cli", "run", "eval", "--config", "tiny/eval", f"output_dir={tmp_path / 'o'}",
              "tiny_model=false", f"model_dir={tmp_path / 'nothing'}"])
    assert p.returncode == 2 and "no config.json" in p.stderr


def test_step_stats_count_steps_and_token_lengths(tiny_model_dir):
    from transformers import AutoTokenizer

    mod = load_recipe("eval")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    n, mean = mod.step_stats(tok, "Step 1: 2 + 3 = 5.\nStep 2: So \\boxed{5}.")
    lens = [len(tok(s, add_special_tokens=False).input_ids) for s in ["2 + 3 = 5.", "So \\boxed{5}."]]
    assert n == 2 and mean == sum(lens) / 2
    assert mod.step_stats(tok, "The answer is 5") == (0, None)


def test_configs_for_every_family_validate():
    mod = load_recipe("eval")
    for fam in ("tiny", "smollm2_135m", "qwen2_5_math_7b", "qwen2_5_math_72b"):
        cfg = load_config(mod.EvalConfig, f"{fam}/eval", ["output_dir=/tmp/x", "model_dir=/tmp/m"])
        assert cfg.mode == "greedy" and cfg.temperature == 0.0
    assert load_config(mod.EvalConfig, "qwen2_5_math_7b/eval", ["output_dir=/x", "model_dir=/m"]).max_new_tokens == 2048


@pytest.mark.slow
def test_two_ranks_split_items_and_merge_in_order(tmp_path, tiny_eval, data_dir):
    p = _run(["-m", "psr.cli", "run", "--nproc_per_node", "2", "eval", "--config", "tiny/eval",
              f"output_dir={tmp_path}", "benchmarks=[gsm8k]", "limit=4", f"data_dir={data_dir}",
              f"model_dir={tiny_eval / 'tiny_model'}"])
    assert p.returncode == 0, p.stderr[-3000:]
    lines = (tmp_path / "gsm8k" / "items.jsonl").read_text().splitlines()
    ref = (tiny_eval / "gsm8k" / "items.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == [json.loads(x)["id"] for x in ref]
    assert [json.loads(x)["response"] for x in lines] == [json.loads(x)["response"] for x in ref]
    assert not list((tmp_path / "gsm8k").glob("items.rank*.jsonl"))


def test_custom_benchmark_from_data_dir(tmp_path, tiny_eval):
    # a benchmark not defined in eval/benchmarks.yaml, read from <data_dir>/<name>/test.jsonl
    (tmp_path / "data" / "mini").mkdir(parents=True)
    (tmp_path / "data" / "mini" / "test.jsonl").write_text(
        "".join(json.dumps({"id": f"m{i}", "problem": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n" for i in range(3)))
    p = _run(["-m", "psr.cli", "run", "eval", "--config", "tiny/eval", f"output_dir={tmp_path / 'o'}",
              "benchmarks=[mini]", f"data_dir={tmp_path / 'data'}", f"model_dir={tiny_eval / 'tiny_model'}"])
    assert p.returncode == 0, p.stderr[-2000:]
    items = [json.loads(x) for x in (tmp_path / "o" / "mini" / "items.jsonl").read_text().splitlines()]
    assert [it["gold"] for it in items] == ["0", "2", "4"]
    p = _run(["-m", "psr.cli", "run", "eval", "--config", "tiny/eval", f"output_dir={tmp_path / 'o2'}",
              "benchmarks=[nosuch]", f"data_dir={tmp_path / 'data'}", f"model_dir={tiny_eval / 'tiny_model'}"])
    assert p.returncode == 2 and "'nosuch' is not defined" in p.stderr

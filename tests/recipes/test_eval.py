"""The eval recipe end to end on a tiny random model (tiny/eval config)."""

import json
import sys
from pathlib import Path

import pytest

from psr.config import load_config
from fakes import load_recipe, run_cmd

REPO = Path(__file__).resolve().parents[2]


def _run(args, cwd=REPO, timeout=600):
    return run_cmd([sys.executable, *args], timeout, cwd=cwd)


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
              "tiny=false", f"model_dir={tmp_path / 'nothing'}"])
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


# --------------------------------------------------------------------------- known right answers
# The random tiny model gets every item wrong and never writes a verdict, so the tests above cannot
# tell a grader wiring that always says False, or a judge score of `verdict == "A"`, from the real
# thing. Here a scripted generator (tests/fakes.py) gives known right and wrong answers.

MINI = [  # id, problem, gold
    ("m0", "What is 3 + 4?", "7"),
    ("m1", "What is half of 1?", "0.5"),
    ("m2", "What is 5 + 5?", "10"),
    ("m3", "What is 2 * 6?", "12"),
    ("m4", "What is 6 * 2 + 1?", "13"),
]


def _mini_data(root, ids):
    (root / "mini").mkdir(parents=True)
    (root / "mini" / "test.jsonl").write_text(
        "".join(json.dumps({"id": i, "problem": q, "answer": a}) + "\n" for i, q, a in MINI if i in ids))
    return root


def _plain_tokenizer(model_dir):
    """The tiny model's tokenizer without a chat template: prompts are then the plain text the
    scripted generator parses (psr.prompts.chat), while step lengths are still real token counts."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    tok.chat_template = None
    return tok


def _run_scripted(monkeypatch, gen, model_dir, out, *overrides):
    import psr.generation

    mod = load_recipe("eval")
    made = []

    def make_generator(backend, model_dir, **kw):
        made.append(kw)
        return gen

    monkeypatch.setattr(psr.generation, "make_generator", make_generator)
    cfg = load_config(mod.EvalConfig, None, [f"output_dir={out}", f"model_dir={model_dir}", "device=cpu",
                                             "grader_workers=1", "grader_timeout_s=120", *overrides])
    summary = mod.main(cfg)
    assert len(made) == 1 and gen.closed
    return summary, made[0]


def _items(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_greedy_accuracy_counts_exactly_the_right_answers(tmp_path, tiny_model_dir, monkeypatch):
    from fakes import ScriptedGenerator, always

    tok = _plain_tokenizer(tiny_model_dir)
    script = {  # problem -> the whole response body after "Step 1: "
        "What is 3 + 4?": r"3 + 4 = 7. The answer is \boxed{7}.",  # right
        "What is half of 1?": r"Half of 1 is \boxed{\frac{1}{2}}.",  # right: equal to 0.5, not the same string
        "What is 5 + 5?": r"5 + 5 = 11. \boxed{11}",  # wrong
        "What is 2 * 6?": "I am not sure.",  # no answer at all
        "What is 6 * 2 + 1?": "6 * 2 = 12.\nStep 2: 12 + 1 = 13, so \\boxed{13}",  # right, two steps
    }
    gen = ScriptedGenerator(lambda r: [script[r.question]] * r.n, always("[[A]]"), tokenizer=tok)
    data = _mini_data(tmp_path / "data", {i for i, _, _ in MINI})
    summary, made = _run_scripted(monkeypatch, gen, tiny_model_dir, tmp_path / "o", "benchmarks=[mini]",
                                  f"data_dir={data}", "max_new_tokens=64")
    assert made["stage"] == "eval" and made["expected_tokens"] == 5 * 64
    items = _items(tmp_path / "o" / "mini" / "items.jsonl")
    assert [it["id"] for it in items] == ["m0", "m1", "m2", "m3", "m4"]
    assert [it["correct"] for it in items] == [True, True, False, False, True]
    assert [it["extracted"] for it in items][:3] == ["7", r"\frac{1}{2}", "11"]
    assert items[4]["extracted"] == "13"
    assert [it["n_steps"] for it in items] == [1, 1, 1, 1, 2]
    lens = [len(tok(s, add_special_tokens=False).input_ids) for s in ("6 * 2 = 12.", r"12 + 1 = 13, so \boxed{13}")]
    assert items[4]["mean_step_tokens"] == sum(lens) / 2
    assert [it["response"] for it in items] == [f"Step 1: {script[q]}" for _, q, _ in MINI]
    m = summary["benchmarks"]["mini"]
    assert (m["n"], m["correct"], m["accuracy"]) == (5, 3, 60.0)
    assert m["mean_steps"] == 6 / 5
    assert m["mean_response_tokens"] == sum(len(it["response"].split()) + 1 for it in items) / 5
    assert summary["average_accuracy"] == 60.0
    assert "| mini | 5 | 60.00 | 1.20 |" in (tmp_path / "o" / "summary.md").read_text()


def test_judge_accuracy_scores_verdicts_against_mixed_labels(tmp_path, tiny_model_dir, monkeypatch):
    from fakes import ScriptedGenerator, prefer

    # The judge prefers the higher strength; equal strengths give no verdict (unparseable).
    strength = {"2+3 = 5.": 2, "2+3 = 6.": 1, "4*4 = 16.": 2, "4*4 = 15.": 1, "9-1 = 7.": 2, "9-1 = 8.": 1,
                "7+7 = 14.": 1, "7+7 = 15.": 1, "1+1 = 2.": 2, "1+1 = 3.": 1}
    recs = [  # step_a, step_b, label (the right step), and what the scripted judge answers
        ("2+3 = 5.", "2+3 = 6.", "A"),  # judge: A, right
        ("4*4 = 15.", "4*4 = 16.", "B"),  # judge: B, right
        ("9-1 = 7.", "9-1 = 8.", "B"),  # judge: A (fooled), wrong
        ("7+7 = 14.", "7+7 = 15.", "A"),  # judge: tie -> unparseable, wrong
        ("1+1 = 3.", "1+1 = 2.", "B"),  # judge: B, right
    ]
    eft = tmp_path / "eft_test.jsonl"
    eft.write_text("".join(json.dumps({"id": f"e{k}", "question": "Q?", "prev_steps": ["Start."], "step_a": a,
                                       "step_b": b, "label": lab}) + "\n" for k, (a, b, lab) in enumerate(recs)))
    gen = ScriptedGenerator(lambda r: [], prefer(strength), tokenizer=_plain_tokenizer(tiny_model_dir))
    summary, made = _run_scripted(monkeypatch, gen, tiny_model_dir, tmp_path / "o", "mode=judge", f"eft_test={eft}",
                                  "judge_max_new_tokens=16")
    assert made["stage"] == "eval" and made["expected_tokens"] == 5 * 16
    items = _items(tmp_path / "o" / "judge" / "items.jsonl")
    assert [it["label"] for it in items] == ["A", "B", "B", "A", "B"]
    assert [it["verdict"] for it in items] == ["A", "B", "A", None, "B"]
    assert [it["correct"] for it in items] == [True, True, False, False, True]
    j = summary["benchmarks"]["judge"]
    assert (j["n"], j["correct"], j["accuracy"], j["unparseable"]) == (5, 3, 60.0, 1)
    assert "| eft_test.jsonl | 5 | 60.00 | 1 |" in (tmp_path / "o" / "summary.md").read_text()
    # every prompt was the Figure 5 judge prompt with the record's previous steps
    prompts = [p for c in gen.calls for p in c["prompts"]]
    assert len(prompts) == 5 and all("Q?\nStep 1: Start.\n[The Start of Assistant A" in p for p in prompts)


def test_tts_answers_are_the_chain_of_steps_the_model_judged_best(tmp_path, tiny_model_dir, monkeypatch):
    from fakes import ScriptedGenerator, prefer

    cands = {  # (problem, previous steps) -> the width=2 candidates of the next step
        ("What is 3 + 4?", ()): [r"3 + 4 = 8. \boxed{8}", r"3 + 4 = 7. \boxed{7}"],
        ("What is 5 + 5?", ()): [r"5 + 5 = 10. \boxed{10}", r"5 + 5 = 11. \boxed{11}"],
        ("What is 6 * 2 + 1?", ()): ["6 * 2 = 13.", "6 * 2 = 12."],
        ("What is 6 * 2 + 1?", ("6 * 2 = 12.",)): [r"12 + 1 = 13. \boxed{13}", r"12 + 1 = 14. \boxed{14}"],
    }
    # the judge is right on 3 + 4 and 6 * 2 + 1, and prefers the wrong sum on 5 + 5
    judge = prefer({r"3 + 4 = 7. \boxed{7}": 1, r"5 + 5 = 11. \boxed{11}": 1, "6 * 2 = 12.": 1,
                    r"12 + 1 = 13. \boxed{13}": 1})
    tok = _plain_tokenizer(tiny_model_dir)
    gen = ScriptedGenerator(lambda r: cands[(r.question, r.prev_steps)], judge, tokenizer=tok)
    data = _mini_data(tmp_path / "data", {"m0", "m2", "m4"})
    tts = ("tts={width: 2, temperature: 0.5, top_p: 0.95, judge_orders: 2, max_iterations: 4, max_steps: 4, "
           "max_new_tokens_step: 16, max_new_tokens_judge: 8, questions_in_flight: 8}")
    summary, made = _run_scripted(monkeypatch, gen, tiny_model_dir, tmp_path / "o", "mode=tts", "benchmarks=[mini]",
                                  f"data_dir={data}", tts)
    assert made["stage"] == "search"
    assert made["expected_tokens"] == 3 * 4 * (2 * 16 + 1 * 2 * 8)  # questions x iterations x (w x step + judge calls)
    items = _items(tmp_path / "o" / "mini" / "items.jsonl")
    assert [it["response"] for it in items] == [
        "Step 1: 3 + 4 = 7. \\boxed{7}\n",
        "Step 1: 5 + 5 = 11. \\boxed{11}\n",
        "Step 1: 6 * 2 = 12.\nStep 2: 12 + 1 = 13. \\boxed{13}\n",
    ]
    assert [it["correct"] for it in items] == [True, False, True]
    assert [it["extracted"] for it in items] == ["7", "11", "13"]
    assert [it["n_steps"] for it in items] == [1, 1, 2]
    m = summary["benchmarks"]["mini"]
    assert (m["n"], m["correct"], m["accuracy"]) == (3, 2, 100.0 * 2 / 3)
    assert m["mean_steps"] == 4 / 3
    # both orders of each pair were judged: 2 judge calls per round, 4 rounds in all
    judge_prompts = [p for c in gen.calls if c["kind"] == "judge" for p in c["prompts"]]
    assert len(judge_prompts) == 2 * 4

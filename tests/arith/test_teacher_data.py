import pytest
import random
from collections import Counter

from psr.arith.checker import ArithOracle
from psr.arith.candidates import WRONG_KINDS
from psr.arith.data import eft_records, ift_records, load_problems, m0_records, write_initial_data
from psr.arith.problems import generate_problems
from psr.arith.teacher import ArithTeacher, judge_explanation, parse_judge_prompt, worked
from psr.data.jsonl import read_jsonl
from psr.data.schemas import validate_eft, validate_ift
from psr.generation.base import SamplingParams
from psr.judge import parse_verdict
from psr.prompts import chat, judge_prompt
from psr.steps import format_step


def test_judge_explanation_names_the_correct_step(apples):
    prev = ["3 * 12 = 36"]
    good, bad = "Step 2: 36 + 5 = 41 apples.", "Step 2: 36 + 5 = 40 apples."
    v, text = judge_explanation(apples, prev, good, bad, random.Random(0))
    assert v == "A" and parse_verdict(text) == "A" and text.endswith("[[A]]")
    assert "36 + 5 = 41" in text and "36 + 5 = 40" in text and "41" in text
    v, text = judge_explanation(apples, prev, bad, good)
    assert v == "B" and text.endswith("[[B]]")
    assert judge_explanation(apples, prev, bad, good) == judge_explanation(apples, prev, bad, good)
    v, text = judge_explanation(apples, prev, "36 + 5 = 41", "5 + 36 = 41")
    assert v is None and parse_verdict(text) is None  # both correct: no verdict
    v, text = judge_explanation(apples, prev, "36 - 5 = 31", "36 + 9 = 45")
    assert v is None and parse_verdict(text) is None  # both wrong


def test_derive_style_works_out_the_next_step_before_judging(apples):
    prev = ["3 * 12 = 36"]
    good, skipped = "Step 2: 36 + 5 = 41 apples.", "Step 2: 36 - 9 = 27 apples."
    v, text = judge_explanation(apples, prev, skipped, good, random.Random(0), style="derive")
    assert v == "B" and text.endswith("[[B]]")
    lead = text.split(" Assistant A")[0]
    assert "36 + 5 = 41" in lead and "27" not in lead  # the next step, from the checker, first
    assert text.index("36 + 5 = 41") < text.index("36 - 9 = 27")
    # the same verdicts as the assess style; only the text grows a lead
    for a, b in [(good, skipped), (skipped, good), (good, "36 + 5 = 41"), (skipped, "36 + 9 = 45")]:
        assert judge_explanation(apples, prev, a, b, style="derive")[0] == judge_explanation(apples, prev, a, b)[0]
    # after a wrong previous step the next step is still the first value not derived
    _, text = judge_explanation(apples, ["3 * 12 = 35"], "3 * 12 = 36", "36 + 5 = 41", random.Random(1), style="derive")
    assert "3 * 12 = 36" in text.split(" Assistant A")[0]
    # the last operation is named as the answer, and after it only the answer is left
    _, text = judge_explanation(apples, ["3 * 12 = 36", "36 + 5 = 41", "41 - 9 = 32"], "32 / 4 = 8. \\boxed{8}", "x",
                                random.Random(2), style="derive")
    assert "32 / 4 = 8" in text and ("final answer" in text.split(" Assistant A")[0] or "is the answer" in text)
    all_steps = ["3 * 12 = 36", "36 + 5 = 41", "41 - 9 = 32", "32 / 4 = 8"]
    _, text = judge_explanation(apples, all_steps, "The answer is \\boxed{8}.", "x", random.Random(3), style="derive")
    assert "8" in text.split(" Assistant A")[0]


@pytest.mark.parametrize("x, op, y, r, text", [
    (21, "+", 4, 25, "1 + 4 = 5, so 21 + 4 = 25"),
    (21, "+", 9, 30, "1 + 9 = 10, so 21 + 9 = 30"),  # carry
    (15, "-", 4, 11, "5 - 4 = 1, so 15 - 4 = 11"),
    (32, "-", 5, 27, "12 - 5 = 7, so 32 - 5 = 27"),  # borrow
    (17, "*", 2, 34, "10 * 2 = 20, 7 * 2 = 14, so 17 * 2 = 34"),
    (34, "/", 2, 17, "34 / 2 = 17"),  # division and one-digit operands: the plain equation
    (8, "-", 5, 3, "8 - 5 = 3"),
    (36, "+", 12, 48, "36 + 12 = 48"),
])
def test_worked_equations_go_through_the_units_digit(x, op, y, r, text):
    assert worked(x, op, y, r) == text


def test_worked_style_leads_with_the_worked_next_equation(apples):
    prev = ["3 * 12 = 36"]
    good, bad = "Step 2: 36 + 5 = 41 apples.", "Step 2: 36 + 5 = 43 apples."
    v, text = judge_explanation(apples, prev, bad, good, random.Random(0), style="worked")
    assert v == "B" and text.endswith("[[B]]")
    assert text.startswith("The question gives 3, 12, 5, 9, 4. Used: 3, 12. Next: 5. 6 + 5 = 11, so 36 + 5 = 41. ")
    assert judge_explanation(apples, prev, good, bad, style="worked")[0] == "A"


def test_unknown_judge_style_is_rejected(apples):
    with pytest.raises(ValueError, match="derive"):
        judge_explanation(apples, [], "3 * 12 = 36", "3 * 12 = 35", style="deriv")
    with pytest.raises(ValueError, match="assess"):
        ArithTeacher([apples], style="x")


def test_derive_style_eft_records_lead_with_the_reference_step():
    problems = generate_problems(30, seed=3)
    recs = eft_records(problems, seed=0, judge_style="derive")
    by_id = {p.id: p for p in problems}
    for r in recs:
        p = by_id[r["id"].split("/")[0]]
        o = p.operations[len(r["prev_steps"])]
        assert r["judgment"].split(" Assistant A")[0].find(f"{o.x} {o.op} {o.y} = {o.result}") > 0
    assert [r["label"] for r in recs] == [r["label"] for r in eft_records(problems, seed=0)]


def test_checker_judged_search_keeps_the_correct_step_and_never_asks_the_policy_to_judge(apples):
    from fakes import ScriptedGenerator
    from psr.arith import CheckerJudged
    from psr.search import SearchConfig, run_search

    steps = ["3 * 12 = 36 apples.", "36 + 5 = 41 apples.", "41 - 9 = 32 apples.",
             "32 / 4 = 8 apples. The answer is \\boxed{8}."]

    def policy(req):  # one wrong and two correct candidates at every step
        l = req.step
        good = steps[l - 1]
        return ["3 * 12 = 35 apples.", good, good] if l == 1 else [good, "36 - 5 = 31 apples.", good]

    def judge(req):
        raise AssertionError("the policy model was asked to judge")

    policy_gen = ScriptedGenerator(policy, judge)
    gen = CheckerJudged(policy_gen, [apples])
    cfg = SearchConfig(width=3, judge_orders=2, max_iterations=20, max_steps=10, questions_in_flight=4, seed=0)
    (r,) = list(run_search(gen, [{"id": apples.id, "problem": apples.question}], cfg))
    assert r.steps == list(steps) and r.stop_reason == "final_answer"
    assert [(p["chosen"], p["rejected"]) for p in r.pairs][:2] == [
        (f"Step 1: {steps[0]}\n", "Step 1: 3 * 12 = 35 apples.\n"), (f"Step 2: {steps[1]}\n", "Step 2: 36 - 5 = 31 apples.\n")]
    assert {c["kind"] for c in policy_gen.calls} == {"policy"}
    assert gen.teacher.n_prompts == r.stats["judge_calls"] > 0 and "checker" in gen.name


def test_eft_records_both_orders_consistent_labels_and_schema():
    problems = generate_problems(200, seed=11)
    recs = eft_records(problems, seed=0, pairs_per_problem=2)
    assert len(recs) == 2 * 2 * 200  # every problem has >= 2 steps; two orders per pair
    by_pair = {}
    for r in recs:
        validate_eft(r, "eft")
        assert parse_verdict(r["judgment"]) == r["label"]
        by_pair.setdefault(r["id"].rsplit("/", 1)[0], []).append(r)
    assert Counter(r["label"] for r in recs) == {"A": 400, "B": 400}
    for pid, (ab, ba) in by_pair.items():
        assert (ab["id"].endswith("/ab"), ba["id"].endswith("/ba")) == (True, True)
        assert (ab["step_a"], ab["step_b"]) == (ba["step_b"], ba["step_a"])
        assert (ab["label"], ba["label"]) == ("A", "B")
        l = len(ab["prev_steps"]) + 1
        assert ab["step_a"].startswith(f"Step {l}: ") and ab["step_b"].startswith(f"Step {l}: ")
    kinds = Counter(r["id"].split("/")[2] for r in recs)
    assert set(kinds) == set(WRONG_KINDS) and min(kinds.values()) > 30
    assert eft_records(problems[:20], seed=0) == eft_records(problems[:20], seed=0)
    assert eft_records(problems[:20], seed=0) != eft_records(problems[:20], seed=1)


def test_ift_and_m0_records():
    problems = generate_problems(30, seed=12)
    for r, p in zip(ift_records(problems), problems):
        assert validate_ift(r, "ift")["steps"] == p.steps
    for r in m0_records(problems):
        assert set(r) == {"id", "question", "solution"} and "Step 1:" not in r["solution"]


def test_arith_teacher_answers_chat_wrapped_figure5_prompts(apples):
    class Tok:  # a chat template like the arith tokenizer's
        chat_template = "x"

        def apply_chat_template(self, msgs, tokenize, add_generation_prompt):
            return f"<|im_start|>user\n{msgs[0]['content']}<|im_end|>\n<|im_start|>assistant\n"

    teacher = ArithTeacher([apples])
    prev = ["3 * 12 = 36", "36 + 5 = 41"]
    good, bad = format_step(3, "41 - 9 = 32"), format_step(3, "41 - 9 = 33")
    p_ab = chat(Tok(), judge_prompt(apples.question, prev, good, bad))
    p_ba = judge_prompt(apples.question, prev, bad, good)  # plain, no chat wrapper
    assert parse_judge_prompt(p_ab) == (apples.question, prev, good.strip(), bad.strip())
    outs = teacher.generate([p_ab, p_ba, "hello"], SamplingParams(n=2), seeds=[1, 2, 3])
    assert [len(o) for o in outs] == [2, 2, 2]
    assert [parse_verdict(o[0].text) for o in outs] == ["A", "B", None]
    unknown = judge_prompt("What is 2 + 2?", [], "Step 1: 2 + 2 = 4", "Step 1: 2 + 2 = 5")
    assert parse_verdict(teacher.generate([unknown], SamplingParams())[0][0].text) is None


def test_checker_and_teacher_plug_into_eft_build_filters(apples):
    from psr.eft import judge_pairs

    pair = {"pair_id": "hand-1/p0", "step": 2, "prev_steps": ["3 * 12 = 36"], "best": "36 + 5 = 41",
            "worst": "36 + 5 = 42"}
    oracle = ArithOracle([apples])
    assert oracle.score_steps(apples.question, pair["prev_steps"] + [pair["best"]])[-1] == 1.0
    assert oracle.score_steps(apples.question, pair["prev_steps"] + [pair["worst"]])[-1] == 0.0
    judged = judge_pairs(ArithTeacher([apples]), [{"id": apples.id, "question": apples.question, "pairs": [pair]}],
                         SamplingParams())
    assert judged[0]["pairs"][0]["status"] == "kept"


def test_write_initial_data(tmp_path):
    paths = write_initial_data(tmp_path, n_train=60, n_test=30, seed=3, eft_pairs_per_problem=1)
    assert set(paths) == {"problems_train", "problems_test", "ift_train", "m0_train", "eft_train", "eft_test", "benchmark_test"}
    train, test = load_problems(paths["problems_train"]), load_problems(paths["problems_test"])
    assert len(train) == 60 and 28 <= len(test) <= 30
    assert not {p.question for p in train} & {p.question for p in test}
    eft_test = read_jsonl(paths["eft_test"])
    assert len(eft_test) == 2 * len(test)
    assert {r["question"] for r in eft_test} <= {p.question for p in test}  # held out from the test split
    assert len(read_jsonl(paths["eft_train"])) == 120 and len(read_jsonl(paths["ift_train"])) == 60
    bench = read_jsonl(paths["benchmark_test"])
    assert [(b["id"], b["problem"], b["answer"]) for b in bench] == [(p.id, p.question, str(p.answer)) for p in test]
    again = write_initial_data(tmp_path / "again", n_train=60, n_test=30, seed=3)
    for name in paths:
        assert paths[name].read_bytes() == again[name].read_bytes()


def test_eft_ops_give_the_judge_problems_of_their_own(tmp_path):
    kw = dict(n_train=60, n_test=40, seed=3, train_ops=[1, 3], test_ops=[1, 5], eft_pairs_per_problem=1)
    plain = write_initial_data(tmp_path / "plain", **kw)
    paths = write_initial_data(tmp_path / "eft", eft_ops=[2, 4], eft_ops_weights=[0, 1, 3], n_eft_train_problems=80, **kw)
    for name in plain:  # the policy's data and the test split do not change
        if name != "eft_train":
            assert paths[name].read_bytes() == plain[name].read_bytes(), name
    eft_problems = load_problems(paths["problems_eft"])
    test_q = {p.question for p in load_problems(paths["problems_test"])}
    assert len(eft_problems) <= 80 and len(eft_problems) >= 75  # duplicates and test questions dropped
    assert not {p.question for p in eft_problems} & test_q
    counts = [p.n_ops for p in eft_problems]
    assert set(counts) == {3, 4} and counts.count(4) > 2 * counts.count(3)  # weight 0 for 2 operations
    eft = read_jsonl(paths["eft_train"])
    assert len(eft) == 2 * len(eft_problems) and {r["question"] for r in eft} == {p.question for p in eft_problems}
    with pytest.raises(ValueError, match="below test_ops"):
        write_initial_data(tmp_path / "bad", eft_ops=[1, 5], **kw)
    with pytest.raises(ValueError, match="needs eft_ops"):
        write_initial_data(tmp_path / "bad2", eft_ops_weights=[1, 1], **kw)


def test_oracle_and_teacher_build_from_problem_files(tmp_path):
    paths = write_initial_data(tmp_path, n_train=20, n_test=10, seed=4)
    train = load_problems(paths["problems_train"])
    oracle = ArithOracle(problems_file=[str(paths["problems_train"]), str(paths["problems_test"])])
    assert len(oracle.by_question) == 20 + len(load_problems(paths["problems_test"]))
    assert oracle.score_steps(train[3].question, train[3].steps) == [1.0] * train[3].n_ops
    teacher = ArithTeacher(problems_file=str(paths["problems_train"]))
    p = train[0]
    prompt = judge_prompt(p.question, [], format_step(1, p.steps[0]), format_step(1, "1 + 1 = 3"))
    assert parse_verdict(teacher.judge(prompt)) == "A"
    import pytest

    with pytest.raises(ValueError, match="needs problems"):
        ArithOracle()

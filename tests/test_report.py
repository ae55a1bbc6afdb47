"""The pipeline report: numbers collected from stage outputs land in the right table cells."""

import json

from psr.report import collect, render, write_report


def _w(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(obj, list):
        path.write_text("".join(json.dumps(r) + "\n" for r in obj))
    else:
        path.write_text(json.dumps(obj))


def _fake_run(out, iterations=1):
    st = out / "stages"
    _w(out / "data" / "arith" / "test.jsonl",
       [{"id": f"t{i}", "problem": "p", "answer": "1", "meta": {"n_ops": 2 + i % 2}} for i in range(4)])
    for k, acc in enumerate([0.0, 50.0, 75.0][: iterations + 2]):
        correct = [i < round(acc / 25) for i in range(4)]
        _w(st / f"eval_M{k}" / "summary.json", {"benchmarks": {"arith": {
            "n": 4, "accuracy": acc, "mean_steps": 3.0 - 0.5 * k if k else None, "mean_step_tokens": 10.0 + k if k else None}}})
        _w(st / f"eval_M{k}" / "arith" / "items.jsonl", [{"id": f"t{i}", "correct": c} for i, c in enumerate(correct)])
        _w(st / f"judge_M{k}" / "summary.json", {"benchmarks": {"judge": {"n": 10, "accuracy": 40.0 + 30 * k, "unparseable": 2 - k if k < 2 else 0}}})
        if k:
            _w(st / f"tts_M{k}" / "summary.json", {"benchmarks": {"arith": {"n": 4, "accuracy": acc + 25}}})
    _w(st / "headroom_M1" / "headroom.json", {"failures": 2, "located": 2, "unlocated": 0, "with_correct": 1, "mean_correct": 1.5,
                                              "width": 6, "temperature": 0.5, "top_p": 0.95,
                                              "by_ops": {"3": {"failures": 2, "located": 2, "with_correct": 1}}})
    _w(st / "search_1" / "summary.json", {"questions_written": 3, "rollbacks": 5, "unparseable_verdicts": 1, "judge_calls": 90})
    _w(st / "search_1" / "pairs.jsonl", [{"question": "q", "step": 1, "prev_steps": [], "chosen": "Step 1: a", "rejected": "Step 1: b"},
                                          {"question": "q", "step": 1, "prev_steps": [], "chosen": "Step 1: c", "rejected": "Step 1: d"}])
    _w(out / "timings.json", {"data": 1.0, "m0": 10.0})


def test_collect_reads_every_stage_and_checks_pairs(tmp_path):
    _fake_run(tmp_path)
    checked = []

    def checker(i, pair):
        checked.append((i, pair["chosen"]))
        return (pair["chosen"] == "Step 1: a", False)

    data = collect(tmp_path, 1, checker)
    m = data["models"]
    assert [x["accuracy"] for x in m] == [0.0, 50.0, 75.0]
    assert [x["judge_accuracy"] for x in m] == [40.0, 70.0, 100.0]
    assert [x["tts_accuracy"] for x in m] == [None, 75.0, 100.0]
    assert m[2]["accuracy_by_ops"] == {"2": 100.0, "3": 50.0}  # t0,t2 (2 ops) right; t1 right, t3 wrong
    s = data["searches"][0]
    assert (s["pairs"], s["rollbacks"], s["unparseable"]) == (2, 5, 1)
    assert s["pair_quality"] == 50.0 and s["chosen_correct"] == 50.0 and s["rejected_correct"] == 0.0
    assert (s["inverted"], s["both_correct"], s["both_wrong"]) == (0.0, 0.0, 50.0)
    s = collect(tmp_path, 1, lambda i, pair: (pair["chosen"] == "Step 1: a", pair["chosen"] != "Step 1: a"))["searches"][0]
    assert (s["pair_quality"], s["inverted"], s["both_correct"], s["both_wrong"]) == (50.0, 50.0, 0.0, 0.0)
    assert checked == [(1, "Step 1: a"), (1, "Step 1: c")]


def test_report_tables_and_plots(tmp_path):
    _fake_run(tmp_path)
    path = write_report(tmp_path, 1, pair_checker=None)
    md = path.read_text()
    assert "| M1 | 4 | 50.0 | 50.0 | 50.0 |" in md  # accuracy and its 2-op / 3-op split
    assert "| M2 | 10 | 100.0 | 0 |" in md  # judge table
    assert "| M1 | 2.50 | 11.0 |" in md  # steps table
    assert "| M2 | 4 | 75.0 | 100.0 |" in md  # test-time scaling
    assert "| 1 | M1 | 3 | 2 | 5 | 1 | - | - | - | - |" in md  # no checker: pair quality unknown
    assert "| **total** | 11.0 |" in md
    assert "among w = 6 samples at T = 0.5, top_p = 0.95" in md
    assert "| M1 | 2 | 1 | 1.50 | - | 1/2 |" in md and "| M2 | 2 |" not in md  # headroom: M1's stage only
    for png in ("accuracy.png", "steps.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "report.json").read_text())["models"][0]["model"] == "M0"


def test_render_with_missing_stages_shows_dashes(tmp_path):
    md = render(collect(tmp_path, 2), [])
    assert "Headroom" not in md
    assert "| M3 | - | - |" in md and "| 2 | M2 | - | 0 |" in md

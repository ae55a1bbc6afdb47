"""Benchmark definitions (eval/benchmarks.yaml) and load_benchmark's gold-answer policy on the
real local data, plus the hub field mapping on made-up rows (no download)."""

import json

import pytest

from psr.data.benchmarks import (BenchmarkError, answer_type_of, benchmark_spec, list_benchmarks, load_benchmark,
                                 map_hub_row, resolve_data_dir)
from psr.data.jsonl import DataError

EXPECTED = {"gsm8k": 1319, "math": 5000, "math500": 500, "aime24": 30, "amc23": 40, "gaokao2023en": 383,
            "olympiadbench": 675, "minerva_math": 272}


def test_all_issue_benchmarks_are_defined_with_a_valid_answer_type():
    assert set(EXPECTED) <= set(list_benchmarks())
    for name in EXPECTED:
        spec = benchmark_spec(name)
        assert spec["answer_type"] in ("numeric", "math", "choice_or_math")
        assert spec["hub"]["path"]
    assert benchmark_spec("gsm8k")["answer_type"] == "numeric"
    assert benchmark_spec("gaokao2023en")["answer_type"] == "choice_or_math"


def test_answer_type_of_maps_a_benchmark_to_the_graders_answer_type():
    from psr.grader import ANSWER_TYPES

    assert answer_type_of("gsm8k") == "numeric" and answer_type_of("aime24") == "numeric"
    assert answer_type_of("math500") == "math"
    assert answer_type_of("gaokao2023en") == "choice_or_math"
    assert {answer_type_of(n) for n in list_benchmarks()} <= set(ANSWER_TYPES)
    with pytest.raises(BenchmarkError, match="unknown benchmark 'gsm9k'"):
        answer_type_of("gsm9k")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_local_files_load_with_the_gold_policy(data_dir, name):
    items = load_benchmark(name, data_dir=data_dir)
    assert len(items) == EXPECTED[name]
    assert benchmark_spec(name)["n_items"] == len(load_benchmark(name, data_dir=data_dir, empty_gold="keep"))
    ids = [it["id"] for it in items]
    assert len(set(ids)) == len(ids)
    for it in items:
        assert isinstance(it["problem"], str) and it["problem"].strip()
        assert it["answer"] and it["answer"] == it["answer"].strip() and not it["answer"].startswith("$")
        assert it["benchmark"] == name and it["answer_type"] == benchmark_spec(name)["answer_type"]


def test_gaokao_empty_golds_are_skipped_by_default_and_can_be_kept_or_rejected(data_dir):
    ids = {it["id"] for it in load_benchmark("gaokao2023en", data_dir=data_dir)}
    assert "gaokao2023en-167" not in ids and "gaokao2023en-192" not in ids
    kept = {it["id"]: it for it in load_benchmark("gaokao2023en", data_dir=data_dir, empty_gold="keep")}
    assert kept["gaokao2023en-167"]["answer"] == "" and len(kept) == 385
    with pytest.raises(DataError, match=r"test\.jsonl:168: empty gold"):
        load_benchmark("gaokao2023en", data_dir=data_dir, empty_gold="error")


def test_gaokao_choice_letters_are_marked(data_dir):
    items = load_benchmark("gaokao2023en", data_dir=data_dir)
    letters = [it for it in items if it["answer_kind"] == "choice"]
    assert len(letters) == 37  # 36 A-D (as the data README counts) + one five-option item with gold E
    assert sorted({it["answer"] for it in letters}) == ["A", "B", "C", "D", "E"]


def test_aime_leading_zeros_stay_in_the_gold_and_grade_numerically(data_dir):
    from psr.grader import grade_many

    items = load_benchmark("aime24", data_dir=data_dir)
    zeros = [it for it in items if it["answer"].startswith("0")]
    assert len(zeros) == 7
    verdicts = grade_many([(f"The answer is $\\boxed{{{int(it['answer'])}}}$.", it["answer"], answer_type_of("aime24"))
                           for it in zeros],
                          workers=1, timeout_s=60)  # a hang guard: each grades in ms
    assert verdicts == [True] * 7


def test_limit_and_data_dir_resolution(data_dir, monkeypatch):
    assert [it["id"] for it in load_benchmark("gsm8k", data_dir=data_dir, limit=3)] == \
        ["gsm8k-test-0", "gsm8k-test-1", "gsm8k-test-2"]
    assert load_benchmark("gsm8k", data_dir=data_dir, limit=0) == []
    monkeypatch.setenv("PSR_DATA_DIR", str(data_dir))
    assert resolve_data_dir(None) == data_dir
    assert len(load_benchmark("amc23")) == 40


def test_bad_names_and_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(BenchmarkError, match="unknown benchmark 'gsm9k'.*gsm8k"):
        load_benchmark("gsm9k")
    with pytest.raises(DataError, match="no such file"):
        load_benchmark("gsm8k", data_dir=tmp_path)
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "test.jsonl").write_text(json.dumps({"id": "a", "problem": "p", "answer": "1"}) + "\n{oops\n")
    with pytest.raises(DataError, match=r"test\.jsonl:2"):
        load_benchmark("gsm8k", data_dir=tmp_path)
    (tmp_path / "gsm8k" / "test.jsonl").write_text(json.dumps({"id": "a", "problem": "p"}) + "\n")
    with pytest.raises(DataError, match=r"test\.jsonl:1: missing field"):
        load_benchmark("gsm8k", data_dir=tmp_path)
    with pytest.raises(ValueError, match="source"):
        load_benchmark("gsm8k", source="ftp")


def test_definitions_file_errors_name_the_file(tmp_path, monkeypatch):
    bad = tmp_path / "b.yaml"
    bad.write_text("x:\n  local: x/test.jsonl\n  answer_type: fuzzy\n")
    monkeypatch.setenv("PSR_BENCHMARKS_FILE", str(bad))
    with pytest.raises(BenchmarkError, match=r"b\.yaml: benchmark 'x': answer_type"):
        list_benchmarks()


def test_hub_rows_are_mapped_to_the_schema():
    gsm = map_hub_row("gsm8k", {"question": "Q?", "answer": "work <<1+1=2>>\n#### 1,234"}, 5)
    assert gsm == {"id": "gsm8k-5", "problem": "Q?", "answer": "1234"}
    m = map_hub_row("math", {"problem": "P", "solution": "so \\boxed{\\frac{1}{2}}.", "level": "Level 1"}, 0)
    assert m["answer"] == "\\frac{1}{2}" and m["solution"].startswith("so")
    ob = map_hub_row("olympiadbench", {"id": 7, "question": "Q", "final_answer": ["$x=2$", "$3$"]}, 0)
    assert ob["id"] == "olympiadbench-7" and ob["answer"] == "x=2"
    assert map_hub_row("amc23", {"question": "Q", "answer": 27.0}, 1)["answer"] == "27"
    with pytest.raises(DataError, match="column 'question'"):
        map_hub_row("gsm8k", {"q": "Q?", "answer": "#### 1"}, 0)

"""psr/data/numina.py on small files in the NuminaMath-CoT schema written here (jsonl, parquet, a
directory of parquet shards): fields, ids, boxed answers, filters and their counts, errors
naming file:line, the seeded disjoint question sample, the command line, and ift_build-style
reading of its output."""

import json

import pytest

from psr.data.jsonl import DataError, read_jsonl
from psr.data.numina import NuminaStats, load_numina, main, sample_questions


def row(problem, solution, source="cn_k12"):
    return {"source": source, "problem": problem, "solution": solution,
            "messages": [{"role": "user", "content": problem}, {"role": "assistant", "content": solution}]}


ROWS = [
    row("What is $1+1$?", "We add: $1+1=2$. So the answer is $\\boxed{2}$."),
    row("Solve $x^2=4$ for $x>0$.", "Taking roots, $x=\\boxed{2}$.", "synthetic_math"),
    row("Simplify $\\frac{1}{2}+\\frac{1}{3}$.", "Common denominator: $\\boxed{\\frac{5}{6}}$", "olympiads"),
    row("What is  $1+1$?", "Again $\\boxed{2}$.", "orca_math"),  # the first problem, spacing aside
    row("Prove that there are infinitely many primes.", "Assume finitely many ... a contradiction.", "olympiads"),
    row("Compute $2^{10}$.", "$2^{10}=1024$, first $\\boxed{1000}$ then corrected: $\\boxed{1024}$.", "math"),
]


def write_jsonl_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_jsonl_records_fields_ids_and_boxed_answers(tmp_path):
    stats = NuminaStats()
    recs = load_numina(write_jsonl_rows(tmp_path / "n.jsonl", ROWS), stats=stats)
    assert [r["id"] for r in recs] == ["numina-0", "numina-1", "numina-2", "numina-4", "numina-5"]
    assert [r["answer"] for r in recs] == ["2", "2", "\\frac{5}{6}", None, "1024"]
    r = recs[0]
    assert set(r) == {"id", "problem", "solution", "answer", "source", "messages"}
    assert (r["problem"], r["source"]) == ("What is $1+1$?", "cn_k12")
    assert r["messages"] == [{"role": "user", "content": "What is $1+1$?"},
                             {"role": "assistant", "content": ROWS[0]["solution"]}]
    assert (stats.records, stats.kept, stats.duplicates, stats.no_boxed, stats.filtered_source) == (6, 5, 1, 1, 0)
    assert stats.by_source == {"cn_k12": 1, "synthetic_math": 1, "olympiads": 2, "math": 1}


def test_parquet_file_and_directory_of_shards_read_the_same_records(tmp_path):
    ref = load_numina(write_jsonl_rows(tmp_path / "n.jsonl", ROWS))
    assert load_numina(write_parquet(tmp_path / "train.parquet", ROWS)) == ref
    shards = tmp_path / "data"
    shards.mkdir()
    write_parquet(shards / "train-00000-of-00002.parquet", ROWS[:4])
    write_parquet(shards / "train-00001-of-00002.parquet", ROWS[4:])
    assert load_numina(shards) == ref  # rows numbered across the shards in name order


def test_filters_limit_and_options(tmp_path):
    path = write_jsonl_rows(tmp_path / "n.jsonl", ROWS)
    stats = NuminaStats()
    recs = load_numina(path, sources=["olympiads", "math"], require_boxed=True, stats=stats)
    assert [r["id"] for r in recs] == ["numina-2", "numina-5"]  # ids keep the file row
    assert (stats.filtered_source, stats.no_boxed, stats.kept) == (3, 1, 2)
    assert [r["id"] for r in load_numina(path, dedupe=False)] == [f"numina-{i}" for i in range(6)]
    assert [r["id"] for r in load_numina(path, limit=2, id_prefix="nm")] == ["nm-0", "nm-1"]
    with_ids = [dict(r, id=f"x{i}") for i, r in enumerate(ROWS)]
    assert load_numina(write_jsonl_rows(tmp_path / "ids.jsonl", with_ids))[0]["id"] == "x0"
    no_msgs = [{k: v for k, v in r.items() if k != "messages"} for r in ROWS[:1]]
    assert load_numina(write_jsonl_rows(tmp_path / "nm.jsonl", no_msgs))[0]["messages"] == []


@pytest.mark.parametrize("bad, msg", [
    ({"source": "x", "solution": "s"}, r"b\.jsonl:2: missing field 'problem'"),
    ({"source": "x", "problem": "p", "solution": ""}, r"b\.jsonl:2: field 'solution' must be a non-empty string"),
    ({"problem": "p", "solution": "s"}, r"b\.jsonl:2: missing field 'source'"),
    ({"source": "x", "problem": 3, "solution": "s"}, r"b\.jsonl:2: field 'problem'"),
    ({"source": "x", "problem": "p", "solution": "s", "messages": "hi"}, r"b\.jsonl:2: field 'messages'"),
    ({"source": "x", "problem": "p", "solution": "s", "messages": [{"role": "user"}]}, r"b\.jsonl:2: messages\[0\]"),
    ([1, 2], r"b\.jsonl:2: expected a JSON object"),
])
def test_bad_records_name_file_and_line(tmp_path, bad, msg):
    path = write_jsonl_rows(tmp_path / "b.jsonl", [ROWS[0], bad])
    with pytest.raises(DataError, match=msg):
        load_numina(path)


def test_bad_inputs_name_the_file(tmp_path):
    (tmp_path / "broken.jsonl").write_text('{"source": "x"\n')
    with pytest.raises(DataError, match=r"broken\.jsonl:1: not valid JSON"):
        load_numina(tmp_path / "broken.jsonl")
    with pytest.raises(DataError, match="no such file"):
        load_numina(tmp_path / "missing.parquet")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match=r"x\.csv: expected a \.jsonl or \.parquet"):
        load_numina(tmp_path / "x.csv")
    (tmp_path / "fake.parquet").write_text("not parquet")
    with pytest.raises(DataError, match=r"fake\.parquet: not a readable parquet file"):
        load_numina(tmp_path / "fake.parquet")
    write_parquet(tmp_path / "p.parquet", [ROWS[0], {**ROWS[1], "solution": None}])
    with pytest.raises(DataError, match=r"p\.parquet:row 1: missing field 'solution'"):
        load_numina(tmp_path / "p.parquet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .parquet or .jsonl files"):
        load_numina(tmp_path / "empty")


def test_sample_questions_is_seeded_and_disjoint_from_excluded_problems():
    pool = [{"id": f"q{i}", "problem": f"Problem number {i}."} for i in range(50)]
    used = ["Problem  number 3.", "Problem number 7.", "Not in the pool."]
    a, counts = sample_questions(pool, 10, seed=1, exclude=used)
    assert counts == {"pool": 50, "excluded_overlap": 2, "available": 48, "sampled": 10}
    assert len({r["id"] for r in a}) == 10 and not {"q3", "q7"} & {r["id"] for r in a}
    assert sample_questions(pool, 10, seed=1, exclude=used)[0] == a
    assert sample_questions(pool, 10, seed=2, exclude=used)[0] != a
    assert [r["id"] for r in a] != [f"q{i}" for i in range(10)]  # shuffled, not the first ten
    everything, _ = sample_questions(pool, 48, seed=0, exclude=used)
    assert len(everything) == 48
    with pytest.raises(ValueError, match="only 48 of 50"):
        sample_questions(pool, 49, seed=0, exclude=used)


def test_command_line_writes_jsonl_that_ift_build_style_readers_take(tmp_path, capsys):
    src = write_parquet(tmp_path / "train.parquet", ROWS)
    out = tmp_path / "out.jsonl"
    assert main([str(src), str(out), "--require-boxed", "--sources", "cn_k12,olympiads,math"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["records"], stats["kept"]) == (6, 3)
    recs = read_jsonl(out, required=["id", "problem", "solution", "answer"])
    assert [(r["id"], r["answer"]) for r in recs] == [("numina-0", "2"), ("numina-2", "\\frac{5}{6}"), ("numina-5", "1024")]
    assert main([str(tmp_path / "nope.jsonl"), str(tmp_path / "o2.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err

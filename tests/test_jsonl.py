import json

import pytest

from psr.data.jsonl import DataError, JsonlAppender, done_ids, read_jsonl, read_jsonl_tolerant, write_jsonl
from psr.distributed import shard


def test_read_jsonl_errors_name_file_and_line(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"id": 1, "q": "a"}\n\n{"id": 2}\n')
    assert read_jsonl(p) == [{"id": 1, "q": "a"}, {"id": 2}]
    with pytest.raises(DataError, match=r"d\.jsonl:3: missing field\(s\) \['q'\]"):
        read_jsonl(p, required=["id", "q"])
    p.write_text('{"id": 1}\nnot json\n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: not valid JSON"):
        read_jsonl(p)
    p.write_text('[1, 2]\n')
    with pytest.raises(DataError, match=r"d\.jsonl:1: expected a JSON object, got list"):
        read_jsonl(p)
    with pytest.raises(DataError, match="no such file"):
        read_jsonl(tmp_path / "nope.jsonl")


def test_appender_resumes_after_a_torn_write(tmp_path):
    p = tmp_path / "out.jsonl"
    with JsonlAppender(p) as w:
        w.write({"id": "a", "x": 1})
        w.write({"id": "b", "x": "ü"})
    with p.open("a") as f:
        f.write('{"id": "c", "x"')  # killed mid-record
    assert [r["id"] for r in read_jsonl_tolerant(p)] == ["a", "b"]
    assert done_ids(p) == {"a", "b"}
    with JsonlAppender(p) as w:
        w.write({"id": "c", "x": 3})
    assert [json.loads(line)["id"] for line in p.read_text().splitlines()] == ["a", "b", "c"]


def test_tolerant_reader_still_rejects_a_bad_middle_line(tmp_path):
    p = tmp_path / "out.jsonl"
    p.write_text('{"id": 1}\ngarbage\n{"id": 2}\n')
    with pytest.raises(DataError, match=r"out\.jsonl:2"):
        read_jsonl_tolerant(p)
    assert done_ids(tmp_path / "missing.jsonl") == set()


def test_write_jsonl_is_atomic_and_counts(tmp_path):
    p = tmp_path / "sub" / "w.jsonl"
    assert write_jsonl(p, ({"i": i} for i in range(3))) == 3
    assert read_jsonl(p) == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert not (tmp_path / "sub" / "w.jsonl.tmp").exists()


def test_shards_are_disjoint_and_cover_everything():
    items = list(range(11))
    parts = [shard(items, r, 3) for r in range(3)]
    assert parts == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]
    assert sorted(sum(parts, [])) == items

"""psr.data.paths: the one rule for finding input files (as given > data_dir > $PSR_DATA_DIR > default)."""

from pathlib import Path

import pytest

from psr.data.jsonl import DataError
from psr.data.paths import DEFAULT_DATA_DIR, REPO_ROOT, find_data_path, resolve_data_dir, resolve_data_path


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    """Three data dirs holding q.jsonl with different contents, and a working dir without it."""
    out = {}
    for name in ("cfg", "env", "cwd"):
        d = tmp_path / name
        (d / "sub").mkdir(parents=True)
        (d / "sub" / "q.jsonl").write_text(f'{{"from": "{name}"}}\n')
        out[name] = d
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.delenv("PSR_DATA_DIR", raising=False)
    return out


def test_precedence_config_data_dir_beats_env_beats_default(dirs, monkeypatch, tmp_path):
    assert resolve_data_dir(None) == DEFAULT_DATA_DIR == REPO_ROOT.parent / "shared" / "data"
    monkeypatch.setenv("PSR_DATA_DIR", str(dirs["env"]))
    assert resolve_data_dir(None) == dirs["env"]
    assert resolve_data_dir("") == dirs["env"]  # an empty key is unset
    assert resolve_data_dir(dirs["cfg"]) == dirs["cfg"]
    monkeypatch.chdir(tmp_path)  # q.jsonl is not under the working dir itself
    assert resolve_data_path("sub/q.jsonl", dirs["cfg"]) == dirs["cfg"] / "sub" / "q.jsonl"
    assert resolve_data_path("sub/q.jsonl") == dirs["env"] / "sub" / "q.jsonl"


def test_a_path_found_as_given_wins(dirs, monkeypatch):
    monkeypatch.setenv("PSR_DATA_DIR", str(dirs["env"]))
    # the working dir (cwd) has sub/q.jsonl itself: found as given, before any data dir
    assert resolve_data_path("sub/q.jsonl", dirs["cfg"]).read_text() == '{"from": "cwd"}\n'
    absolute = dirs["env"] / "sub" / "q.jsonl"
    assert resolve_data_path(absolute, dirs["cfg"]) == absolute


def test_a_relative_data_dir_is_taken_from_the_repo_root_when_not_in_the_working_dir(dirs):
    assert resolve_data_dir("configs") == REPO_ROOT / "configs"
    assert resolve_data_path("tiny/eval.yaml", "configs") == REPO_ROOT / "configs" / "tiny" / "eval.yaml"


def test_a_missing_file_names_the_key_the_path_and_where_it_looked(dirs, monkeypatch):
    monkeypatch.setenv("PSR_DATA_DIR", str(dirs["env"]))
    with pytest.raises(DataError) as e:
        resolve_data_path("sub/nope.jsonl", key="questions")
    msg = str(e.value)
    assert msg.startswith("questions=sub/nope.jsonl: no such file")
    assert str(dirs["cwd"] / "sub" / "nope.jsonl") in msg and str(dirs["env"] / "sub" / "nope.jsonl") in msg
    assert "$PSR_DATA_DIR" in msg
    with pytest.raises(DataError, match=r"looked in .*cfg/sub/nope.jsonl: data dir from the data_dir key"):
        resolve_data_path("sub/nope.jsonl", dirs["cfg"])
    missing = dirs["cfg"] / "nope.jsonl"
    with pytest.raises(DataError) as e:
        resolve_data_path(missing, dirs["cfg"], key="pairs")
    assert str(e.value) == f"pairs={missing}: no such file"  # absolute: nowhere else to look
    assert find_data_path("sub/nope.jsonl", dirs["cfg"]) is None
    assert find_data_path(Path("sub/q.jsonl")) == Path("sub/q.jsonl")


def test_every_recipe_and_loader_uses_the_one_rule():
    """No other module reads $PSR_DATA_DIR: psr.data.paths is the only resolver."""
    readers = []
    for d in ("psr", "recipes", "bench"):
        for p in sorted((REPO_ROOT / d).rglob("*.py")):
            if p.name != "paths.py" and 'environ.get("PSR_DATA_DIR"' in p.read_text(encoding="utf-8"):
                readers.append(str(p.relative_to(REPO_ROOT)))
    assert readers == []

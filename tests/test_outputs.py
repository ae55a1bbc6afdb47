"""psr/outputs.py: the manifest that output dirs keep, model and file identities, the read-only
input guard, the model-dir writers' claim, the shared validation helpers, and recipe_main's exit
codes for failed items and Ctrl-C."""

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from omegaconf import MISSING, OmegaConf

from psr import outputs as O
from psr.config import ConfigError
from psr.data import jsonl

REPO = Path(__file__).resolve().parents[1]


def tree_hashes(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def fake_sharded_model(path: Path, n_shards: int = 2, shard_bytes: int = 4096) -> Path:
    """A stand-in for a real downloaded model: config.json, tokenizer files and
    model-0000k-of-0000N.safetensors shards with an index (no model.safetensors)."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "qwen2", "hidden_size": 3584}))
    (path / "tokenizer.json").write_text('{"real": "tokenizer"}')
    (path / "tokenizer_config.json").write_text('{"eos_token": "<|im_end|>"}')
    weight_map = {}
    for k in range(1, n_shards + 1):
        name = f"model-{k:05d}-of-{n_shards:05d}.safetensors"
        header = json.dumps({"w%d" % k: {"dtype": "F32", "shape": [shard_bytes // 4], "data_offsets": [0, shard_bytes]}}).encode()
        (path / name).write_bytes(len(header).to_bytes(8, "little") + header + os.urandom(shard_bytes))
        weight_map[f"w{k}"] = name
    (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return path


@dataclass
class _Cfg(O.RunKeys):
    output_dir: str = MISSING
    model_dir: str = ""
    max_new_tokens: int = 32
    limit: int = 4
    progress_bar: bool = True
    api_key: str = ""


def _cfg(out, **kw):
    return OmegaConf.merge(OmegaConf.structured(_Cfg), {"output_dir": str(out), **kw})


# --------------------------------------------------------------------------- identities


def test_model_identity_is_about_contents_not_path(tmp_path):
    a = fake_sharded_model(tmp_path / "a")
    b = tmp_path / "b"
    b.mkdir()
    for f in a.iterdir():
        (b / f.name).write_bytes(f.read_bytes())
    ia, ib = O.model_identity(a), O.model_identity(b)
    assert ia["digest"] == ib["digest"] and ia["path"] != ib["path"]
    assert set(ia["files"]) == {"config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors.index.json",
                                "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
    (b / "config.json").write_text(json.dumps({"model_type": "qwen2", "hidden_size": 4096}))
    assert O.model_identity(b)["digest"] != ia["digest"]


def test_a_big_weight_file_is_sampled_and_a_changed_sample_is_seen(tmp_path):
    m = tmp_path / "m"
    m.mkdir()
    (m / "config.json").write_text('{"model_type": "llama"}')
    w = m / "model.safetensors"
    size = O.FULL_HASH_LIMIT * 3
    with w.open("wb") as f:
        f.truncate(size)
    first = O.model_identity(m)
    assert "sampled_sha256" in first["files"]["model.safetensors"]
    with w.open("r+b") as f:  # one byte inside the middle sample (sample k=8 starts at 8/15 of the span)
        f.seek((size - O.SAMPLE_BYTES) * 8 // (O.N_SAMPLES - 1) + 10)
        f.write(b"\x01")
    assert O.model_identity(m)["digest"] != first["digest"]


def test_model_identity_cost_on_a_7b_sized_dir(tmp_path):
    """Four sparse 3.8 GB shards (15.2 GB, a 7B model in bf16) + config: the identity reads the
    headers and 16 samples per shard. Measured here: ~0.05 s (the number in psr/outputs.py)."""
    m = tmp_path / "qwen7b"
    m.mkdir()
    (m / "config.json").write_text('{"model_type": "qwen2"}')
    for k in range(1, 5):
        with (m / f"model-{k:05d}-of-00004.safetensors").open("wb") as f:
            f.truncate(3_800_000_000)
    t0 = time.perf_counter()
    ident = O.model_identity(m)
    dt = time.perf_counter() - t0
    print(f"model_identity on a 15.2 GB sparse dir: {dt:.3f} s")
    assert sum(f["size"] for f in ident["files"].values()) > 15e9
    assert dt < 5.0


def test_file_identity_sees_a_changed_line(tmp_path):
    f = tmp_path / "q.jsonl"
    f.write_text('{"id": 1}\n{"id": 2}\n')
    a = O.file_identity(f)
    f.write_text('{"id": 1}\n{"id": 3}\n')
    assert O.file_identity(f)["digest"] != a["digest"] and O.file_identity(f)["size"] == a["size"]


# --------------------------------------------------------------------------- the manifest


def test_first_run_records_then_a_matching_rerun_continues(tmp_path):
    out = tmp_path / "out"
    run = O.claim_output_dir("eval", _cfg(out))
    assert not run.resumed
    m = json.loads((out / O.MANIFEST).read_text())
    assert m["recipe"] == "eval" and m["settings"]["max_new_tokens"] == 32
    assert "limit" not in m["settings"] and "progress_bar" not in m["settings"] and "output_dir" not in m["settings"]
    (out / "items.jsonl").write_text('{"id": 1}\n')
    # settings that cannot change results may differ
    assert O.claim_output_dir("eval", _cfg(out, limit=10, progress_bar=False)).resumed


def test_a_different_run_is_refused_naming_every_key_old_to_new(tmp_path):
    out, model = tmp_path / "out", fake_sharded_model(tmp_path / "m")
    O.claim_output_dir("eval", _cfg(out, model_dir=str(model)), models={"model_dir": model}, ignore={"model_dir"})
    (out / "items.jsonl").write_text('{"id": 1}\n')
    (model / "model-00002-of-00002.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(ConfigError) as e:
        O.claim_output_dir("eval", _cfg(out, model_dir=str(model), max_new_tokens=8),
                           models={"model_dir": model}, ignore={"model_dir"})
    msg = str(e.value)
    assert "max_new_tokens: 32 -> 8" in msg
    assert "model_dir:" in msg and "model-00002-of-00002.safetensors" in msg
    assert "overwrite=true" in msg and "another output_dir" in msg and "\n" not in msg
    assert (out / "items.jsonl").read_text() == '{"id": 1}\n'


def test_a_run_that_wrote_nothing_does_not_bind_the_dir(tmp_path):
    out = tmp_path / "out"
    O.claim_output_dir("eval", _cfg(out))  # then stopped on bad data, say: only the manifest
    (out / "work").mkdir()
    assert not O.claim_output_dir("eval", _cfg(out, max_new_tokens=8)).resumed
    assert json.loads((out / O.MANIFEST).read_text())["settings"]["max_new_tokens"] == 8


def test_overwrite_empties_a_dir_with_a_manifest_and_records_the_new_run(tmp_path):
    out = tmp_path / "out"
    O.claim_output_dir("eval", _cfg(out))
    (out / "items.jsonl").write_text("old\n")
    (out / "sub").mkdir()
    O.claim_output_dir("eval", _cfg(out, max_new_tokens=8, overwrite=True))
    assert sorted(p.name for p in out.iterdir()) == [O.MANIFEST]
    assert json.loads((out / O.MANIFEST).read_text())["settings"]["max_new_tokens"] == 8


def test_overwrite_never_empties_a_dir_psr_did_not_write(tmp_path):
    out = tmp_path / "home"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    with pytest.raises(ConfigError, match="not emptying"):
        O.claim_output_dir("eval", _cfg(out, overwrite=True))
    assert (out / "thesis.tex").read_text() == "years of work"


def test_overwrite_refuses_when_an_input_lives_inside_output_dir(tmp_path):
    out = tmp_path / "out"
    O.claim_output_dir("eval", _cfg(out))
    model = fake_sharded_model(out / "m")
    with pytest.raises(ConfigError, match="would delete the input model_dir"):
        O.claim_output_dir("eval", _cfg(out, overwrite=True), models={"model_dir": model})
    assert (model / "config.json").exists()


def test_an_older_runs_dir_without_manifest_is_adopted(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "items.jsonl").write_text('{"id": 1}\n')
    assert O.claim_output_dir("eval", _cfg(out)).resumed
    assert (out / O.MANIFEST).exists() and (out / "items.jsonl").exists()


def test_credentials_are_hashed_not_written(tmp_path):
    out = tmp_path / "out"
    O.claim_output_dir("ift_build", _cfg(out, api_key="sk-very-secret"))
    text = (out / O.MANIFEST).read_text()
    assert "sk-very-secret" not in text and json.loads(text)["settings"]["api_key"].startswith("sha256:")


# --------------------------------------------------------------------------- read-only inputs


def test_output_dir_inside_or_equal_to_an_input_dir_is_refused(tmp_path):
    model = fake_sharded_model(tmp_path / "real")
    before = tree_hashes(model)
    for out in (model, model / "runs" / "x"):
        with pytest.raises(ConfigError, match="inputs are read-only") as e:
            O.claim_output_dir("eval", _cfg(out), models={"model_dir": model})
        assert str(model) in str(e.value) and str(out) in str(e.value)
    with pytest.raises(ConfigError, match="data_dir"):
        O.claim_output_dir("eval", _cfg(tmp_path / "data" / "o"), data_dirs={"data_dir": tmp_path / "data"})
    assert tree_hashes(model) == before and not (model / "runs").exists()


def test_output_dir_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        O.claim_output_dir("eval", _cfg(f))


def test_tiny_builder_refuses_a_real_sharded_model_dir(tmp_path):
    from psr.models.tiny import build_tiny_model_dir

    model = fake_sharded_model(tmp_path / "real")
    before = tree_hashes(model)
    with pytest.raises(ConfigError, match="not written by psr.models.tiny"):
        build_tiny_model_dir(model)
    assert tree_hashes(model) == before


def test_tiny_builder_reuses_its_own_dir_and_refuses_other_settings(tmp_path):
    from psr.models.tiny import build_tiny_model_dir

    d = build_tiny_model_dir(tmp_path / "t", seed=3)
    before = tree_hashes(d)
    assert build_tiny_model_dir(d, seed=3) == d and tree_hashes(d) == before
    with pytest.raises(ConfigError, match="other settings"):
        build_tiny_model_dir(d, seed=4)
    assert tree_hashes(d) == before


def test_claim_model_dir_finishes_its_own_interrupted_write(tmp_path):
    d = tmp_path / "m"
    assert O.claim_model_dir(d, "w", {"a": 1}) is False
    (d / "half.safetensors").write_bytes(b"x")  # killed mid-write: unfinished, still ours
    assert O.claim_model_dir(d, "w", {"a": 1}) is False
    O.finish_model_dir(d, "w", {"a": 1})
    assert O.claim_model_dir(d, "w", {"a": 1}) is True


# --------------------------------------------------------------------------- validation helpers


def test_validation_helpers_name_the_key(tmp_path):
    cfg = OmegaConf.create({"batch_size": -4, "n": 0, "tts": {"width": 0}, "top_p": 1.5, "t": -1.0, "ok": 3})
    for key, fn in (("batch_size", O.check_positive), ("n", O.check_positive), ("tts.width", O.check_positive),
                    ("top_p", O.check_probability), ("t", O.check_temperature)):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            fn(cfg, key)
    O.check_positive(cfg, "ok")
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n  \n")
    with pytest.raises(ConfigError, match="questions=.*empty"):
        O.check_input_file(empty, "questions")
    with pytest.raises(ConfigError, match="model_dir=.*no such directory"):
        O.check_model_dir(tmp_path / "nope")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="config.json is not valid JSON"):
        O.check_model_dir(tmp_path / "m")


def test_micro_batch_is_fitted_to_the_processes_and_a_bad_batch_names_it(monkeypatch, capsys):
    from psr.training.loop import TrainConfig

    cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig), {"output_dir": "/x", "batch_size": 8, "micro_batch_size": 8})
    monkeypatch.setenv("WORLD_SIZE", "2")
    O.check_training(cfg)
    assert cfg.micro_batch_size == 4 and "micro_batch_size=4" in capsys.readouterr().out
    cfg.batch_size = 7
    with pytest.raises(ConfigError, match="batch_size=7"):
        O.check_training(cfg)
    monkeypatch.setenv("WORLD_SIZE", "1")
    cfg.batch_size, cfg.epochs = 8, 0
    with pytest.raises(ConfigError, match="epochs: must be an integer >= 1, got 0"):
        O.check_training(cfg)


# --------------------------------------------------------------------------- jsonl


def test_malformed_line_names_file_line_unless_skipping(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"id": 1}\n{"id": "unterminated\n[1, 2]\n{"id": 4}\n')
    with pytest.raises(jsonl.DataError) as e:
        jsonl.read_jsonl(f)
    assert f"{f}:2: not valid JSON" in str(e.value) and "at at" not in str(e.value)
    assert "skip_bad_lines=true" in str(e.value)
    jsonl.set_skip_bad_lines(True)
    try:
        assert [r["id"] for r in jsonl.read_jsonl(f)] == [1, 4]
    finally:
        jsonl.set_skip_bad_lines(False)


# --------------------------------------------------------------------------- recipe_main exits


RECIPE = '''
import sys, time
from dataclasses import dataclass
from omegaconf import MISSING
from psr import outputs as O
from psr.config import recipe_main

@dataclass
class C(O.RunKeys):
    output_dir: str = MISSING
    what: str = "ok"

def main(cfg):
    O.claim_output_dir("toy", cfg)
    if cfg.what == "fail":
        raise O.RunFailed("toy: 2 of 5 items failed (reasons in x/failures.jsonl)")
    if cfg.what == "sleep":
        print("ready", flush=True)
        time.sleep(60)
    O.finish("toy", "done -> " + cfg.output_dir)

if __name__ == "__main__":
    recipe_main(C, main)
'''


def _toy(tmp_path, *args):
    script = tmp_path / "toy.py"
    script.write_text(RECIPE)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return [sys.executable, str(script), *args], env


def test_failed_items_exit_1_with_one_line(tmp_path):
    cmd, env = _toy(tmp_path, f"output_dir={tmp_path / 'o'}", "what=fail")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == ["error: toy: 2 of 5 items failed (reasons in x/failures.jsonl)"]


def test_ctrl_c_prints_one_line_with_the_resume_command_and_exits_130(tmp_path):
    import signal

    cmd, env = _toy(tmp_path, f"output_dir={tmp_path / 'o'}", "what=sleep")
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert f"saved in {tmp_path / 'o'}" in lines[0] and "resume with the same command: psr run toy" in lines[0]
    assert "what=sleep" in lines[0]


def test_an_extra_setting_named_like_an_ignored_key_is_still_compared(tmp_path):
    out = tmp_path / "out"
    O.claim_output_dir("s", _cfg(out), ignore={"api_key"}, extra={"api_key": "file"})
    (out / "items.jsonl").write_text("x\n")
    assert O.claim_output_dir("s", _cfg(out), ignore={"api_key"}, extra={"api_key": "file"}).resumed
    with pytest.raises(ConfigError, match="api_key: file -> builtin:3"):
        O.claim_output_dir("s", _cfg(out), ignore={"api_key"}, extra={"api_key": "builtin:3"})

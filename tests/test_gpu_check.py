"""bench/gpu_check.py as a CPU dry run: the JSON summary's structure, every check passing, the
question source (file, data dir, built-in fallback, a broken file), and the failure paths (a
failing check, a failing recipe, a child over its timeout, a spent budget, a missing import,
an unknown check name). The full dry run with the recipe children is slow (~1 min)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fakes import run_cmd

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "bench" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gc = _load()

CHECK_KEYS = {"status", "seconds", "numbers", "error", "log"}
TOP_KEYS = {"script", "argv", "started_utc", "git_commit", "host", "device", "dtype", "dry_run", "ok",
            "total_seconds", "data", "checks", "workdir", "logdir"}
QUESTIONS = [
    {"id": "q-0", "problem": "Ann has 3 apples and buys 4 more. How many apples does she have?", "answer": "7"},
    {"id": "q-1", "problem": "A pen costs $2. How much do 5 pens cost?", "answer": "10"},
    {"id": "q-2", "problem": "Bob had 9 cards and gave away 4. How many cards are left?", "answer": "5"},
    {"id": "q-3", "problem": "A bus carries 12 people on each of 3 trips. How many people in total?", "answer": "36"},
]


@pytest.fixture
def data_file(tmp_path) -> Path:
    p = tmp_path / "data" / "gsm8k" / "test.jsonl"
    p.parent.mkdir(parents=True)
    p.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    return p


@pytest.fixture
def offline_env(monkeypatch):
    # main() sets these with setdefault; set them here so monkeypatch restores the environment
    for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(k, "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def _assert_structure(summary: dict, names: list[str]) -> None:
    assert TOP_KEYS <= set(summary)
    assert list(summary["checks"]) == names
    for name, c in summary["checks"].items():
        assert set(c) == CHECK_KEYS, name
        assert c["status"] in ("ok", "failed", "skipped")
        assert isinstance(c["seconds"], float) and c["seconds"] >= 0
        assert isinstance(c["numbers"], dict)


def test_fast_dry_run_env_logits_and_smollm2_shaped_generation_pass(tmp_path, data_file, offline_env):
    out = tmp_path / "g.json"
    t0 = time.time()
    rc = gc.main(["--device", "cpu", "--dry-run", "--checks", "env,logits,smollm2_gsm8k", "--out", str(out),
                  "--data", str(data_file.parent.parent), "--workdir", str(tmp_path / "work")])
    assert rc == 0
    s = _read(out)
    _assert_structure(s, ["env", "logits", "smollm2_gsm8k"])
    assert s["ok"] is True and s["device"] == "cpu" and s["dtype"] == "bfloat16" and s["dry_run"] is True
    assert all(c["status"] == "ok" and c["error"] is None for c in s["checks"].values())
    assert 0 < s["total_seconds"] <= time.time() - t0 + 1
    assert s["data"] == f"file {data_file} (first 4)"

    env = s["checks"]["env"]["numbers"]
    assert env["missing_modules"] == [] and env["cuda_available"] is False
    assert env["vllm"] is None or isinstance(env["vllm"], str)

    lg = s["checks"]["logits"]["numbers"]
    d, tol = lg["max_abs_diff"], lg["tolerance"]
    assert lg["positions"] == 4 * 40 - 7 - 19  # the two left-padded rows' padding is left out
    # device == cpu here: the same kernels give the same numbers; bf16 rounding is visible but within tolerance
    assert d["device_fp32_vs_cpu_fp32"] == 0.0 and d["device_bf16_vs_cpu_bf16"] == 0.0
    assert 0.0 < d["device_bf16_vs_cpu_fp32"] == d["cpu_bf16_vs_cpu_fp32"] <= tol["device_bf16_vs_cpu_fp32"]
    assert tol["device_fp32_vs_cpu_fp32"] == pytest.approx(1e-4 * max(1.0, lg["max_abs_logit_cpu_fp32"]))
    assert lg["argmax_agreement"]["device_fp32_vs_cpu_fp32"] == 1.0

    sm = s["checks"]["smollm2_gsm8k"]["numbers"]
    m = sm["model"]
    assert (m["vocab_size"], m["heads"], m["kv_heads"], m["layers"], m["hidden_size"]) == (49152, 9, 3, 2, 72)
    assert m["tie_word_embeddings"] is True and m["rope_theta"] == 100000.0
    assert sm["questions"] == 4 and sm["max_new_tokens"] == 16 and sm["dtype"] == "bfloat16"
    assert 0 < sm["generated_tokens"] <= 4 * 16
    assert sm["tokens_per_s"] == pytest.approx(sm["generated_tokens"] / sm["generate_s"], rel=0.01)
    assert sm["accuracy"] is not None and 0.0 <= sm["accuracy"] <= 1.0 and sm["grader_error"] is None
    assert "peak_cuda_memory_allocated_gib" not in sm  # CPU run: no CUDA numbers are made up


def test_full_shape_config_is_smollm2_135m():
    cfg = gc.SMOLLM2_135M
    assert (cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]) == (576, 1536, 30)
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["vocab_size"]) == (9, 3, 49152)
    assert cfg["tie_word_embeddings"] is True and cfg["rope_theta"] == 100000.0
    from transformers import LlamaConfig

    c = LlamaConfig(**cfg)
    assert gc._rope_theta(c) == 100000.0
    # parameter count from the shapes alone (tied head): SmolLM2-135M's 134.5M
    h, i, L, v, kv = 576, 1536, 30, 49152, 3 * 64
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * i + 2 * h
    assert v * h + L * per_layer + h == 134515008


def test_questions_from_a_data_dir_a_file_or_built_in_when_absent(tmp_path, data_file):
    items, src = gc.load_gsm8k(str(data_file.parent.parent), 2)
    assert [q["id"] for q in items] == ["q-0", "q-1"] and items[1]["answer"] == "10"
    assert src == f"file {data_file} (first 2)"
    items, src = gc.load_gsm8k(str(data_file), 3)
    assert [q["id"] for q in items] == ["q-0", "q-1", "q-2"] and src == f"file {data_file} (first 3)"

    missing = tmp_path / "no_data_here"
    items, src = gc.load_gsm8k(str(missing), 32)
    assert src.startswith("built-in (32 GSM8k-style questions") and str(missing / "gsm8k" / "test.jsonl") in src
    assert len(items) == 32 and len({q["id"] for q in items}) == 32 and len({q["problem"] for q in items}) == 32
    assert all(int(q["answer"]) > 0 for q in items)
    assert gc.builtin_questions(32) == items  # deterministic


def test_built_in_answers_are_what_the_problems_ask():
    # re-derive a few answers by hand from the text
    qs = gc.builtin_questions(8)
    assert qs[0]["problem"].startswith("A baker makes 15 loaves") and qs[0]["answer"] == "12"  # 15 - 2 - 1
    assert "reads 19 pages a day for 3 days, then 2 more" in qs[1]["problem"] and qs[1]["answer"] == "59"
    assert "holds 26 pencils. A school buys 4 boxes and hands out 3" in qs[2]["problem"] and qs[2]["answer"] == "101"
    assert "has 14 stickers. She buys 3 packs of 1 " in qs[6]["problem"] and qs[6]["answer"] == "17"


def test_a_broken_data_file_fails_naming_its_line(tmp_path):
    from psr.data.jsonl import DataError

    p = tmp_path / "test.jsonl"
    p.write_text(json.dumps(QUESTIONS[0]) + "\n{not json\n")
    with pytest.raises(DataError, match=r"test\.jsonl:2"):
        gc.load_gsm8k(str(p), 4)


def test_a_failing_check_is_recorded_with_its_error_and_the_exit_status_is_1(tmp_path, monkeypatch, offline_env):
    def boom(ctx):
        raise gc.CheckError("max abs diff 3 > tolerance 0.1")

    called = []
    monkeypatch.setitem(gc.CHECK_FUNCS, "logits", boom)
    monkeypatch.setitem(gc.CHECK_FUNCS, "sft", lambda ctx: called.append("sft") or {"steps": 1})
    out = tmp_path / "g.json"
    rc = gc.main(["--device", "cpu", "--dry-run", "--checks", "logits,sft", "--out", str(out)])
    assert rc == 1
    s = _read(out)
    _assert_structure(s, ["logits", "sft"])
    assert s["ok"] is False
    assert s["checks"]["logits"]["status"] == "failed"
    assert s["checks"]["logits"]["error"] == "CheckError: max abs diff 3 > tolerance 0.1"
    assert called == ["sft"] and s["checks"]["sft"] == {**s["checks"]["sft"], "status": "ok", "numbers": {"steps": 1}}


def test_an_unexpected_exception_keeps_its_traceback(tmp_path, monkeypatch, offline_env):
    def crash(ctx):
        return {}["missing"]

    monkeypatch.setitem(gc.CHECK_FUNCS, "logits", crash)
    out = tmp_path / "g.json"
    assert gc.main(["--device", "cpu", "--checks", "logits", "--out", str(out)]) == 1
    err = _read(out)["checks"]["logits"]["error"]
    assert err.startswith("KeyError: 'missing'") and "Traceback" in err and "crash" in err


def test_a_spent_budget_marks_checks_not_run(tmp_path, offline_env):
    out = tmp_path / "g.json"
    assert gc.main(["--device", "cpu", "--checks", "logits,sft", "--budget_s", "0", "--out", str(out)]) == 1
    s = _read(out)
    for name in ("logits", "sft"):
        assert s["checks"][name]["status"] == "failed"
        assert s["checks"][name]["error"].startswith("not run: the time budget (--budget_s 0)")


def test_a_failing_recipe_reports_its_exit_status_and_log_tail(tmp_path):
    args = gc.parse_args(["--device", "cpu", "--dry-run", "--out", str(tmp_path / "g.json")])
    ctx = gc.Ctx(args, tmp_path / "work", tmp_path / "logs")
    with pytest.raises(gc.CheckError) as e:
        gc.run_recipe(ctx, "sft", "eft_ift_sft", "tiny/eft_ift_sft", ["no_such_key=1"], timeout_s=120)
    msg = str(e.value)
    assert msg.startswith("eft_ift_sft exited with status 2") and "unknown key 'no_such_key'" in msg
    log = (tmp_path / "logs" / "sft.log").read_text()
    assert log.startswith("$ ") and "device=cpu dtype=bfloat16 no_such_key=1" in log.splitlines()[0]


def test_a_child_over_its_timeout_is_killed(tmp_path):
    t0 = time.time()
    with pytest.raises(gc.CheckError, match="timed out after 1 s"):
        gc.run_child([sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"],
                     tmp_path / "c.log", timeout_s=1.0)
    assert time.time() - t0 < 20
    assert "started" in (tmp_path / "c.log").read_text()


def test_unknown_check_names_are_rejected(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        gc.parse_args(["--out", str(tmp_path / "g.json"), "--checks", "logits,nope"])
    assert e.value.code == 2
    assert "unknown check(s) ['nope']" in capsys.readouterr().err


def test_dry_run_defaults_are_small_and_full_run_defaults_match_the_brief(tmp_path):
    dry = gc.parse_args(["--out", "x.json", "--dry-run", "--checks", "sft,logits"])
    assert (dry.questions, dry.max_new_tokens, dry.check_list) == (4, 16, ["logits", "sft"])
    full = gc.parse_args(["--out", "x.json"])
    assert (full.device, full.dtype, full.questions, full.max_new_tokens) == ("cuda", "bfloat16", 32, 256)
    assert full.check_list == list(gc.CHECKS) and full.budget_s + 30 <= 8 * 60  # child processes end by the budget


def test_a_missing_import_prints_a_clear_message_and_exits_2(tmp_path):
    out = tmp_path / "g.json"
    code = ("import sys, runpy; sys.modules['transformers'] = None; "
            f"sys.argv = ['gpu_check.py', '--device', 'cpu', '--out', {str(out)!r}]; "
            f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')")
    r = run_cmd([sys.executable, "-c", code], 300, cwd=str(REPO))
    assert r.returncode == 2, r.stderr[-2000:]
    assert "gpu_check: cannot import transformers" in r.stderr and "no pip" in r.stderr
    s = _read(out)
    assert s["ok"] is False and s["checks"]["env"]["status"] == "failed"
    assert "cannot import transformers" in s["checks"]["env"]["error"]


@pytest.mark.slow
def test_whole_dry_run_on_cpu_passes_every_check(tmp_path, data_file):
    """The script as the device tool runs it (a child process), every check at dry-run size:
    all ok, the vLLM ones skipped exactly when vLLM is not importable."""
    out = tmp_path / "out" / "gpu_check.json"
    r = run_cmd([sys.executable, str(SCRIPT), "--device", "cpu", "--dry-run", "--out", str(out),
                 "--data", str(data_file)], 900, cwd=str(REPO))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.splitlines()[-1].startswith("gpu_check: all ok")
    s = _read(out)
    _assert_structure(s, list(gc.CHECKS))
    assert s["ok"] is True and s["workdir"] is None  # temp work dir removed
    vllm_ok = subprocess.run([sys.executable, "-c", "import vllm"], capture_output=True).returncode == 0
    for name, c in s["checks"].items():
        want = "skipped" if (name in gc.VLLM_CHECKS and not vllm_ok) else "ok"
        assert c["status"] == want, (name, c["error"])
    ch = s["checks"]
    for name in ("sft", "dpo"):
        n = ch[name]["numbers"]
        assert n["steps"] == 2 and len(n["losses"]) == 2 and all(math.isfinite(x) for x in n["losses"])
        assert Path(ch[name]["log"]) == out.parent / "gpu_check_logs" / f"{name}.log"
    assert ch["sft"]["numbers"]["rng_state_devices"] == ["cpu"]
    assert ch["dpo"]["numbers"]["first_loss"] == pytest.approx(math.log(2), abs=0.05)
    assert ch["dpo"]["numbers"]["reference"]["device"] == "cpu"
    sn = ch["search_native"]["numbers"]
    assert sn["backend"] == ["native"] and sn["questions_written"] == 2 and sn["tokens_generated"] > 0
    assert (sn["config_device"], sn["config_dtype"]) == ("cpu", "bfloat16")
    ev = ch["eval_native"]["numbers"]
    assert ev["backend"] == "native" and ev["items"] == 2 and ev["data"] == f"file {data_file} (first 4)"

"""The ift_build recipe end to end: rules mode on GSM8k, teacher mode (scripted teacher and a
tiny random model), resume after a killed run, torchrun sharding, bad input."""

import json
import os
import sys
from pathlib import Path

import pytest

from psr.config import load_config
from psr.data.schemas import load_ift
from fakes import load_recipe, run_cmd

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "ift_build.py"


ift_build = load_recipe("ift_build")


def _run(out, *overrides, config="tiny/ift_build"):
    cfg = load_config(ift_build.IftBuildConfig, config, [f"output_dir={out}", *overrides])
    return ift_build.main(cfg)


def _lines(p):
    return [json.loads(l) for l in Path(p).read_text().splitlines()]


def test_tiny_config_rules_mode_on_gsm8k(tmp_path, data_dir):
    summary = _run(tmp_path, "limit=50", f"data_dir={data_dir}")
    recs = _lines(tmp_path / "ift.jsonl")
    assert [r["id"] for r in recs] == [f"gsm8k-train-{i}" for i in range(50)]
    assert summary["n_input"] == 50 and summary["n_accepted"] == 50 and summary["n_rejected"] == 0
    assert summary["n_answer_appended"] == 50
    gold = [json.loads(l)["answer"] for l in (data_dir / "gsm8k" / "train.jsonl").read_text().splitlines()[:50]]
    for r, g in zip(recs, gold):
        assert set(r) == {"id", "question", "steps", "answer", "answer_appended"}
        assert r["steps"][-1].endswith(f"The answer is $\\boxed{{{g}}}$.")
        assert all(s.strip() and "<<" not in s for s in r["steps"])
    assert load_ift(tmp_path / "ift.jsonl")[0]["steps"] == recs[0]["steps"]  # the trainer's schema accepts them
    assert (tmp_path / "rejects.jsonl").read_text() == ""
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert list((tmp_path / "work").iterdir()) == []


def _toy_input(path, n=6):
    rows = []
    for i in range(n):
        sol = f"Tom has {i} apples and buys <<{i}+2={i + 2}>>{i + 2} more.\nNow he has {i + 2} apples in total."
        if i % 3 == 0:
            sol = sol.replace("Tom", "Ann")
        rows.append({"id": f"t{i}", "problem": f"Apples {i}?", "solution": sol, "answer": str(i + 2)})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def test_teacher_mode_rejects_altered_solutions(tmp_path):
    _toy_input(tmp_path / "in.jsonl", 6)
    out = tmp_path / "out"
    summary = _run(out, "mode=teacher", f"input={tmp_path / 'in.jsonl'}", "teacher.alter=[Ann]", "batch_size=4")
    # t0 and t3 mention Ann: the scripted teacher changes a digit there, the validator rejects them
    assert summary["n_accepted"] == 4 and summary["rejected_by_reason"] == {"text_mismatch": 2}
    rej = _lines(out / "rejects.jsonl")
    assert [r["id"] for r in rej] == ["t0", "t3"]
    assert rej[0]["output"].startswith("Step 1: Ann has 1 apples")  # the teacher's text is kept
    acc = _lines(out / "ift.jsonl")
    assert acc[0]["id"] == "t1"
    assert acc[0]["steps"] == ["Tom has 1 apples and buys 3 more.",
                               "Now he has 3 apples in total. The answer is $\\boxed{3}$."]


def test_teacher_mode_with_a_tiny_random_model_rejects_everything(tmp_path, tiny_model_dir):
    _toy_input(tmp_path / "in.jsonl", 3)
    out = tmp_path / "out"
    teacher = ("teacher={_component_: psr.generation.factory.make_generator, backend: native, "
               f"model_dir: '{tiny_model_dir}', device: cpu, dtype: float32}}")
    summary = _run(out, "mode=teacher", f"input={tmp_path / 'in.jsonl'}", teacher, "teacher_max_new_tokens=24")
    assert summary["n_accepted"] == 0 and summary["n_rejected"] == 3
    assert set(summary["rejected_by_reason"]) <= {"no_steps", "generation_truncated", "bad_numbering", "text_mismatch"}
    assert sum(summary["rejected_by_reason"].values()) == 3


def test_resume_after_a_killed_run_gives_the_same_output(tmp_path, data_dir):
    full = tmp_path / "full"
    _run(full, "limit=20", f"data_dir={data_dir}")
    part = tmp_path / "part"
    # a killed run: 7 records appended, a torn 8th line, no merged files yet
    (part / "work").mkdir(parents=True)
    lines = (full / "ift.jsonl").read_text().splitlines()
    (part / "work" / "ift.rank0.jsonl").write_text("\n".join(lines[:7]) + "\n" + lines[7][:25])
    summary = _run(part, "limit=20", f"data_dir={data_dir}")
    assert (part / "ift.jsonl").read_text() == (full / "ift.jsonl").read_text()
    ids = [r["id"] for r in _lines(part / "ift.jsonl")]
    assert len(ids) == len(set(ids)) == 20 and summary["n_accepted"] == 20
    # running again changes nothing
    _run(part, "limit=20", f"data_dir={data_dir}")
    assert (part / "ift.jsonl").read_text() == (full / "ift.jsonl").read_text()


def test_bad_input_names_file_and_line(tmp_path):
    rows = _toy_input(tmp_path / "in.jsonl", 3)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n" + json.dumps(rows[1]) + "\n{not json\n")
    with pytest.raises(ift_build.DataError, match=rf"{bad}:3: not valid JSON"):
        _run(tmp_path / "o1", f"input={bad}")
    bad.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"id": "x", "problem": "p"}) + "\n")
    with pytest.raises(ift_build.DataError, match=rf"{bad}:2: missing field\(s\) \['solution'\]"):
        _run(tmp_path / "o2", f"input={bad}")
    bad.write_text(json.dumps(rows[0]) + "\n\n" + json.dumps(rows[0]) + "\n")
    with pytest.raises(ift_build.DataError, match=rf"{bad}:3: duplicate id 't0' \(first at line 1\)"):
        _run(tmp_path / "o3", f"input={bad}")
    # through the command line: one error line, exit status 2
    p = run_cmd([sys.executable, str(RECIPE), "--config", "tiny/ift_build", f"output_dir={tmp_path / 'o4'}",
                 f"input={bad}"], 300, cwd=REPO)
    assert p.returncode == 2 and f"{bad}:3: duplicate id" in p.stderr


def test_config_errors_name_the_key(tmp_path):
    from psr.config import ConfigError

    with pytest.raises(ConfigError, match="mode must be rules or teacher"):
        _run(tmp_path, "mode=oracle")
    with pytest.raises(ConfigError, match="unknown key 'lmit'"):
        _run(tmp_path, "lmit=3")
    with pytest.raises(ConfigError, match="mode=teacher needs a `teacher` block"):
        _run(tmp_path, "mode=teacher", config="smollm2_135m/ift_build")


def test_torchrun_two_ranks_match_one_process(tmp_path, data_dir):
    one = tmp_path / "one"
    _run(one, "limit=30", f"data_dir={data_dir}")
    two = tmp_path / "two"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = run_cmd(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(RECIPE), "--config", "tiny/ift_build", f"output_dir={two}", "limit=30", f"data_dir={data_dir}"],
        600, cwd=REPO, env=env,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert (two / "ift.jsonl").read_text() == (one / "ift.jsonl").read_text()


def test_teacher_mode_through_an_openai_compatible_http_endpoint(tmp_path):
    """A stub chat/completions server on 127.0.0.1 plays the teacher: it answers Figure 3 with a
    faithful split, except for one solution where it drops a sentence."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from psr.generation.base import SamplingParams
    from psr.testing import ScriptedSplitTeacher

    seen = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            prompt = body["messages"][0]["content"]
            seen.append(body)
            text = ScriptedSplitTeacher().generate([prompt], SamplingParams())[0][0].text
            if "Apples 2?" in prompt:
                text = text.split("\n")[0]
            out = json.dumps({"choices": [{"index": 0, "finish_reason": "stop",
                                           "message": {"role": "assistant", "content": text}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        _toy_input(tmp_path / "in.jsonl", 4)
        url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
        teacher = f"teacher={{_component_: psr.generation.http.HttpGenerator, base_url: '{url}', model: stub, api_key_env: null}}"
        summary = _run(tmp_path / "out", "mode=teacher", f"input={tmp_path / 'in.jsonl'}", teacher)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert summary["n_accepted"] == 3 and summary["rejected_by_reason"] == {"text_mismatch": 1}
    assert _lines(tmp_path / "out" / "rejects.jsonl")[0]["id"] == "t2"
    assert len(seen) == 4 and all(b["model"] == "stub" and b["temperature"] == 0.0 for b in seen)
    # the Figure 3 prompt, with the annotation-free solution, as the user message
    assert seen[0]["messages"][0]["content"].startswith("There is a math problem and its corresponding solution.")
    assert "<<" not in seen[0]["messages"][0]["content"]


@pytest.mark.parametrize("family", ["tiny", "smollm2_135m", "qwen2_5_math_7b", "qwen2_5_math_72b"])
def test_family_configs_load(family, tmp_path):
    over = [f"output_dir={tmp_path}"]
    if family.startswith("qwen"):  # the 7B/72B configs leave the question source to the user
        src = tmp_path / "numina_cot.jsonl"
        src.write_text('{"id": "n0", "problem": "1+1?", "solution": "2. \\\\boxed{2}"}\n')
        over += ["teacher.base_url=http://127.0.0.1:8000/v1", "teacher.model=m", f"input={src}"]
    cfg = load_config(ift_build.IftBuildConfig, f"{family}/ift_build", over)
    ift_build.validate(cfg)
    assert cfg.mode == ("teacher" if family.startswith("qwen") else "rules")


@pytest.mark.parametrize("family", ["qwen2_5_math_7b", "qwen2_5_math_72b"])
def test_paper_configs_refuse_to_run_without_a_question_source(family, tmp_path):
    from psr.config import ConfigError

    over = [f"output_dir={tmp_path}", "teacher.base_url=http://127.0.0.1:8000/v1", "teacher.model=m"]
    with pytest.raises(ConfigError, match=r"required key\(s\) not set: input"):
        load_config(ift_build.IftBuildConfig, f"{family}/ift_build", over)

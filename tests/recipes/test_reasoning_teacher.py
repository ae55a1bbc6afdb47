"""The paper's IFT path with the paper's teacher: NuminaMath-CoT rows (psr.data.numina's command)
split by ``teacher.model=o1`` through the 72B ift_build config, against a fake OpenAI server on
127.0.0.1 that enforces the reasoning-model rules (HTTP 400 for max_tokens / temperature / top_p /
stop), rate-limits the first request, and fails for good mid-run: the recipe's rerun resumes."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fakes import load_recipe
from reasoning_fakes import reasoning_rule_error


class FakeOpenAI:
    def __init__(self):
        self.bodies, self.rejected = [], []
        self.rate_limit_first = 1
        self.down_after = None  # answer 500 to every request after this many successes
        self.ok = 0
        self.lock = threading.Lock()

    def start(self):
        from psr.generation.base import SamplingParams
        from psr.testing import ScriptedSplitTeacher

        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def reply(self, status, obj, headers=()):
                out = json.dumps(obj).encode()
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                assert self.headers["Authorization"] == "Bearer sk-fake"
                with fake.lock:
                    fake.bodies.append(body)
                    limited = fake.rate_limit_first > 0
                    fake.rate_limit_first -= limited
                    down = fake.down_after is not None and fake.ok >= fake.down_after
                if limited:
                    return self.reply(429, {"error": {"message": "Rate limit reached"}}, [("retry-after-ms", "20")])
                rule = reasoning_rule_error(body)
                if rule:
                    fake.rejected.append(rule)
                    return self.reply(400, rule)
                if down:
                    return self.reply(500, {"error": {"message": "The server had an error"}})
                prompt = body["messages"][0]["content"]
                text = ScriptedSplitTeacher().generate([prompt], SamplingParams())[0][0].text
                with fake.lock:
                    fake.ok += 1
                return self.reply(200, {"choices": [{"index": 0, "finish_reason": "stop",
                                                     "message": {"role": "assistant", "content": text}}],
                                        "usage": {"completion_tokens": 40,
                                                  "completion_tokens_details": {"reasoning_tokens": 30}}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def fake_openai():
    f = FakeOpenAI().start()
    yield f
    f.stop()


def numina_input(tmp_path, n=6):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from psr.data.numina import main as numina_main

    rows = []
    for i in range(n):
        problem = f"Sam has {i + 2} apples and buys {i + 3} more. How many apples does Sam have?"
        solution = (f"Sam starts with {i + 2} apples. He buys {i + 3} more apples at the shop today. "
                    f"So he has {i + 2} + {i + 3} = {2 * i + 5} apples. The answer is $\\boxed{{{2 * i + 5}}}$.")
        rows.append({"source": "orca_math", "problem": problem, "solution": solution,
                     "messages": [{"role": "user", "content": problem}, {"role": "assistant", "content": solution}]})
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train-00000-of-00001.parquet")
    assert numina_main([str(tmp_path / "train-00000-of-00001.parquet"), str(tmp_path / "numina.jsonl"),
                        "--require-boxed"]) == 0
    return tmp_path / "numina.jsonl"


def run_ift(out, inp, url, *extra):
    from psr.config import load_config

    ift_build = load_recipe("ift_build")
    over = [f"output_dir={out}", f"input={inp}", f"teacher.base_url={url}", "teacher.model=o1",
            "teacher.api_key_env=PSR_FAKE_OPENAI_KEY", "teacher.backoff_s=0.001", "teacher.max_retries=2",
            "teacher.max_concurrency=2", *extra]
    return ift_build.main(load_config(ift_build.IftBuildConfig, "qwen2_5_math_72b/ift_build", over))


def test_o1_teacher_splits_numina_solutions_through_the_paper_config(tmp_path, fake_openai, monkeypatch, capsys):
    monkeypatch.setenv("PSR_FAKE_OPENAI_KEY", "sk-fake")
    inp = numina_input(tmp_path)
    summary = run_ift(tmp_path / "out", inp, fake_openai.url)
    assert fake_openai.rejected == []  # no request broke the reasoning-model rules
    assert len(fake_openai.bodies) == 7  # 6 records + the one rate-limited retry
    body = fake_openai.bodies[-1]
    assert body["max_completion_tokens"] == 4096 and not {"max_tokens", "temperature", "top_p", "stop"} & set(body)
    assert summary["n_accepted"] == 6
    recs = [json.loads(l) for l in (tmp_path / "out" / "ift.jsonl").read_text().splitlines()]
    assert [r["id"] for r in recs] == [f"numina-{i}" for i in range(6)]
    assert recs[0]["steps"][-1].endswith("$\\boxed{5}$.") and recs[0]["answer"] == "5"


def test_a_teacher_outage_after_the_retries_stops_the_run_and_the_rerun_resumes(tmp_path, fake_openai, monkeypatch):
    from psr.generation.http import HttpGeneratorError

    monkeypatch.setenv("PSR_FAKE_OPENAI_KEY", "sk-fake")
    inp = numina_input(tmp_path)
    fake_openai.down_after = 2
    with pytest.raises(HttpGeneratorError, match="HTTP 500"):
        run_ift(tmp_path / "out", inp, fake_openai.url, "batch_size=2", "teacher.max_concurrency=1")
    done = Path(tmp_path / "out" / "work").glob("ift.rank*.jsonl")
    assert sum(len(p.read_text().splitlines()) for p in done) == 2  # the first batch was written
    fake_openai.down_after = None
    n_before = len(fake_openai.bodies)
    summary = run_ift(tmp_path / "out", inp, fake_openai.url, "batch_size=2", "teacher.max_concurrency=1")
    assert len(fake_openai.bodies) - n_before == 4  # only the 4 records not yet done
    assert summary["n_accepted"] == 6 and fake_openai.rejected == []

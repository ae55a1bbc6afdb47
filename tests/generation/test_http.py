"""HttpGenerator against a stub OpenAI-compatible server on 127.0.0.1 (started in the test)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from psr.generation.base import Generator, SamplingParams
from psr.generation.http import HttpGenerator, HttpGeneratorError


class _Stub:
    """Answers /v1/chat/completions and /v1/completions; behaviour set per test."""

    def __init__(self):
        self.requests = []  # (path, headers, body)
        self.fail_first = 0  # answer 503 this many times first
        self.status = None  # a fixed error status
        self.max_choices = None  # return at most this many choices per request
        self.lock = threading.Lock()


@pytest.fixture()
def server():
    stub = _Stub()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with stub.lock:
                stub.requests.append((self.path, dict(self.headers), body))
                fail = stub.fail_first > 0
                stub.fail_first -= fail
            if fail or stub.status:
                self.send_response(503 if fail else stub.status)
                self.end_headers()
                self.wfile.write(b'{"error": "nope"}')
                return
            if self.path.endswith("/chat/completions"):
                prompt = body["messages"][0]["content"]
            else:
                prompt = body["prompt"]
            n = body["n"] if stub.max_choices is None else min(body["n"], stub.max_choices)
            choices = []
            for i in range(n):
                # The text echoes the prompt and the seed; "STOPHERE" tests the client-side cut,
                # "LONG" the length finish reason.
                text = f"echo:{prompt}|seed={body.get('seed')}|i={i}"
                ch = {"index": i, "finish_reason": "length" if "LONG" in prompt else "stop"}
                if "STOPHERE" in prompt:
                    text += " Step 2: more"
                if self.path.endswith("/chat/completions"):
                    ch["message"] = {"role": "assistant", "content": text}
                else:
                    ch["text"] = text
                choices.append(ch)
            out = json.dumps({"choices": choices, "usage": {"completion_tokens": 7 * n}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    stub.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield stub
    httpd.shutdown()
    httpd.server_close()


def test_chat_api_sends_user_message_params_and_key(server, monkeypatch):
    monkeypatch.setenv("PSR_TEST_KEY", "sk-test")
    gen = HttpGenerator(server.url, "teacher-x", api_key_env="PSR_TEST_KEY", max_concurrency=4)
    assert isinstance(gen, Generator)
    params = SamplingParams(n=2, temperature=0.7, top_p=0.95, max_new_tokens=33)
    out = gen.generate(["hello\n", "world"], params, seeds=[5, 9])
    assert [[c.text for c in cs] for cs in out] == [
        ["echo:hello|seed=5|i=0", "echo:hello|seed=5|i=1"],
        ["echo:world|seed=9|i=0", "echo:world|seed=9|i=1"],
    ]
    assert all(c.finish_reason == "eos" and c.n_tokens == 7 for cs in out for c in cs)
    path, headers, body = sorted(server.requests, key=lambda r: r[2]["seed"])[0]
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == "Bearer sk-test"
    # The trailing newline psr.prompts.chat adds without a tokenizer is not sent.
    assert body["messages"] == [{"role": "user", "content": "hello"}]
    assert (body["model"], body["n"], body["temperature"], body["top_p"], body["max_tokens"]) == (
        "teacher-x", 2, 0.7, 0.95, 33)


def test_completions_api_stops_cut_client_side_and_length(server):
    gen = HttpGenerator(server.url, "m", api="completions", api_key_env=None)
    out = gen.generate(["a STOPHERE", "LONG b"], SamplingParams(n=1), stops=[["Step 2:"], []])
    assert out[0][0].text == "echo:a STOPHERE|seed=None|i=0 "
    assert out[0][0].finish_reason == "stop"
    assert out[1][0].finish_reason == "length"
    path, headers, body = server.requests[0]
    assert path == "/v1/completions" and "Authorization" not in headers
    stops = {r[2]["prompt"]: r[2].get("stop") for r in server.requests}
    assert stops == {"a STOPHERE": ["Step 2:"], "LONG b": None}


def test_missing_choices_are_requested_again(server):
    server.max_choices = 1
    gen = HttpGenerator(server.url, "m", api_key_env=None)
    out = gen.generate(["q"], SamplingParams(n=3), seeds=[100])
    assert len(out[0]) == 3 and len(server.requests) == 3
    assert [r[2]["n"] for r in server.requests] == [3, 2, 1]
    # Each top-up request gets a fresh seed so the samples differ.
    assert [c.text for c in out[0]] == [f"echo:q|seed={s}|i=0" for s in (100, 101, 102)]


def test_retries_on_503_then_succeeds(server):
    server.fail_first = 2
    gen = HttpGenerator(server.url, "m", api_key_env=None, backoff_s=0.01)
    out = gen.generate(["q"], SamplingParams())
    assert out[0][0].text.startswith("echo:q") and len(server.requests) == 3


def test_non_retryable_status_raises_with_url_and_status(server):
    server.status = 400
    gen = HttpGenerator(server.url, "m", api_key_env=None, backoff_s=0.01)
    with pytest.raises(HttpGeneratorError, match=r"/v1/chat/completions: HTTP 400"):
        gen.generate(["q"], SamplingParams())
    assert len(server.requests) == 1


def test_unreachable_server_fails_after_retries():
    gen = HttpGenerator("http://127.0.0.1:9/v1", "m", api_key_env=None, max_retries=1, backoff_s=0.01, timeout_s=2)
    with pytest.raises(HttpGeneratorError, match="after 2 attempts"):
        gen.generate(["q"], SamplingParams())


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="api must be"):
        HttpGenerator("http://x/v1", "m", api="embeddings")
    with pytest.raises(ValueError, match="base_url"):
        HttpGenerator("localhost:8000", "m")

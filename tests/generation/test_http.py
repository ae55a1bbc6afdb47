"""HttpGenerator against a stub OpenAI-compatible server on 127.0.0.1 (started in the test).

The stub enforces the OpenAI reasoning-model rules for the models in ``stub.reasoning``: a body
with ``max_tokens``, ``stop``, or ``temperature`` / ``top_p`` other than 1 gets the real API's
HTTP 400 ``invalid_request_error`` (``unsupported_parameter`` / ``unsupported_value``)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from psr.generation.base import Generator, SamplingParams
from psr.generation.http import HttpGenerator, HttpGeneratorError
from reasoning_fakes import reasoning_rule_error


class _Stub:
    """Answers /v1/chat/completions and /v1/completions; behaviour set per test."""

    def __init__(self):
        self.requests = []  # (path, headers, body)
        self.fail_first = 0  # answer 503 this many times first
        self.status = None  # a fixed error status
        self.max_choices = None  # return at most this many choices per request
        self.reasoning = set()  # model names answered under the reasoning-model rules
        self.rate_limit_first = 0  # answer 429 (with retry-after-ms) this many times first
        self.retry_after_ms = None
        self.max_requests = 50  # a runaway client gets 500s, never an endless exchange
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
                limited = stub.rate_limit_first > 0
                stub.rate_limit_first -= limited
                runaway = len(stub.requests) > stub.max_requests
            rule = reasoning_rule_error(body) if body.get("model") in stub.reasoning else None
            if rule or limited or runaway:
                out = json.dumps(rule or {"error": {"message": "Rate limit reached", "type": "requests"}}).encode()
                self.send_response(400 if rule else 429 if limited else 500)
                if limited and stub.retry_after_ms is not None:
                    self.send_header("retry-after-ms", str(stub.retry_after_ms))
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)
                return
            if fail or stub.status:
                self.send_response(503 if fail else stub.status)
                self.end_headers()
                self.wfile.write(b'{"error": "nope"}')
                return
            if self.path.endswith("/chat/completions"):
                prompt = body["messages"][0]["content"]
            else:
                prompt = body["prompt"]
            n = body.get("n", 1) if stub.max_choices is None else min(body.get("n", 1), stub.max_choices)
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
            usage = {"completion_tokens": 7 * n}
            if body.get("model") in stub.reasoning:
                usage["completion_tokens_details"] = {"reasoning_tokens": 5 * n}
            out = json.dumps({"choices": choices, "usage": usage}).encode()
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


# --------------------------------------------------------------------------- reasoning models


@pytest.mark.parametrize("model", ["o1", "o1-2024-12-17", "o3", "o3-mini", "o4-mini", "gpt-5", "gpt-5-mini",
                                   "gpt-5.1", "openai/o3"])
def test_reasoning_models_are_detected_by_name(model):
    from psr.generation.http import is_reasoning_model

    assert is_reasoning_model(model)


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4.1-mini", "gpt-5-chat-latest", "Qwen2.5-72B-Instruct", "omni", "o"])
def test_other_models_are_not_reasoning_models(model):
    from psr.generation.http import is_reasoning_model

    assert not is_reasoning_model(model)


def test_the_fake_server_rejects_the_plain_request_shape_for_a_reasoning_model(server):
    """The rules are enforced: the request shape sent to ordinary models gets the API's 400."""
    server.reasoning = {"o1"}
    gen = HttpGenerator(server.url, "o1", api_key_env=None, reasoning_model=False)
    with pytest.raises(HttpGeneratorError, match=r"HTTP 400: .*'max_tokens' is not supported"):
        gen.generate(["q"], SamplingParams(temperature=1.0, max_new_tokens=16))
    body = {"model": "o1", "n": 1, "max_completion_tokens": 9, "temperature": 0.7}
    assert reasoning_rule_error(body)["error"]["code"] == "unsupported_value"
    assert reasoning_rule_error({**body, "temperature": 1, "top_p": 1}) is None


def test_a_reasoning_model_gets_max_completion_tokens_and_no_sampling_params(server, caplog):
    server.reasoning = {"o1"}
    gen = HttpGenerator(server.url, "o1", api_key_env=None, max_concurrency=2)
    assert gen.reasoning
    params = SamplingParams(n=2, temperature=0.7, top_p=0.95, max_new_tokens=300, stop=("Step 2:",))
    with caplog.at_level("WARNING", logger="psr.generation.http"):
        out = gen.generate(["split STOPHERE", "judge"], params, seeds=[1, 2])
    assert len(server.requests) == 4  # one choice per request, all accepted: no 400, no retry
    bodies = sorted((r[2] for r in server.requests), key=lambda b: (b["messages"][0]["content"], b["seed"]))
    assert bodies[2] == {"model": "o1", "max_completion_tokens": 300, "seed": 1,
                         "messages": [{"role": "user", "content": "split STOPHERE"}]}
    assert [(b["messages"][0]["content"], b["seed"]) for b in bodies] == [
        ("judge", 2), ("judge", 3), ("split STOPHERE", 1), ("split STOPHERE", 2)]
    # the stop string is still applied, client-side
    assert out[0][0].text == "echo:split STOPHERE|seed=1|i=0 " and out[0][0].finish_reason == "stop"
    assert [c.text for c in out[1]] == ["echo:judge|seed=2|i=0", "echo:judge|seed=3|i=0"]
    assert [(c.n_tokens, c.extra["reasoning_tokens"]) for c in out[0]] == [(7, 5), (7, 5)]
    assert sum("temperature=0.7" in r.message for r in caplog.records) == 1


def test_max_completion_tokens_and_reasoning_effort_keys(server):
    server.reasoning = {"my-azure-deployment"}
    gen = HttpGenerator(server.url, "my-azure-deployment", api_key_env=None, reasoning_model="true",
                        max_completion_tokens=25000, reasoning_effort="high")
    gen.generate(["q"], SamplingParams(max_new_tokens=512))
    body = server.requests[0][2]
    assert (body["max_completion_tokens"], body["reasoning_effort"]) == (25000, "high")
    assert not {"max_tokens", "temperature", "top_p"} & set(body)


def test_reasoning_model_false_overrides_the_name(server):
    gen = HttpGenerator(server.url, "o3-mini", api_key_env=None, reasoning_model="false")
    gen.generate(["q"], SamplingParams(temperature=0.5, max_new_tokens=8))
    body = server.requests[0][2]
    assert (body["max_tokens"], body["temperature"]) == (8, 0.5) and "max_completion_tokens" not in body


def test_reasoning_settings_are_validated_naming_the_key():
    with pytest.raises(ValueError, match="reasoning_model must be auto, true or false"):
        HttpGenerator("http://x/v1", "o1", reasoning_model="maybe")
    with pytest.raises(ValueError, match="chat API"):
        HttpGenerator("http://x/v1", "o1", api="completions")
    with pytest.raises(ValueError, match="max_completion_tokens"):
        HttpGenerator("http://x/v1", "gpt-4o", max_completion_tokens=100)
    with pytest.raises(ValueError, match="max_completion_tokens"):
        HttpGenerator("http://x/v1", "o1", max_completion_tokens=0)


def test_a_rate_limited_reasoning_request_is_retried_after_the_servers_hint(server):
    import time

    server.reasoning = {"o4-mini"}
    server.rate_limit_first = 2
    server.retry_after_ms = 150
    gen = HttpGenerator(server.url, "o4-mini", api_key_env=None, backoff_s=0.001, max_retries=3)
    t0 = time.monotonic()
    out = gen.generate(["q"], SamplingParams(max_new_tokens=64))
    assert time.monotonic() - t0 >= 0.3  # two waits of the server's 150 ms, not 1 ms and 2 ms
    assert out[0][0].text == "echo:q|seed=None|i=0" and len(server.requests) == 3


def test_rate_limits_beyond_the_retries_fail_naming_the_status(server):
    server.rate_limit_first = 10
    gen = HttpGenerator(server.url, "o1", api_key_env=None, backoff_s=0.001, max_retries=2)
    with pytest.raises(HttpGeneratorError, match=r"after 3 attempts; last error HTTP 429"):
        gen.generate(["q"], SamplingParams())
    assert len(server.requests) == 3


def test_retry_after_header_parsing():
    from psr.generation.http import _retry_after

    assert _retry_after({"retry-after-ms": "250"}) == 0.25
    assert _retry_after({"Retry-After": "2"}) == 2.0
    assert _retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert _retry_after({}) is None

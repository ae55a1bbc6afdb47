"""A Generator over an OpenAI-compatible HTTP API (OpenAI, vLLM ``serve``, SGLang, llama.cpp ...).

Used for teachers (IFT splitting, EFT judgments) where the paper used a strong API model::

    teacher:
      _component_: psr.generation.http.HttpGenerator
      base_url: http://127.0.0.1:8000/v1      # .../v1; the endpoint path is added
      model: Qwen2.5-72B-Instruct
      api_key_env: OPENAI_API_KEY             # the key is read from this env var, never from a file

``api: chat`` (default) POSTs ``{base_url}/chat/completions`` with each prompt as one user
message: pass the *plain* prompt text (``tokenizer`` is None unless given, so
``psr.prompts.chat(gen.tokenizer, text)`` returns ``text + "\\n"``; the trailing newline is
removed before sending). ``api: completions`` POSTs ``{base_url}/completions`` with the prompt
as is (apply a chat template yourself; give ``tokenizer`` = an HF tokenizer dir for that).

Behaviour:

* one request per prompt asking for ``n`` choices; a server that returns fewer choices is asked
  again for the rest; requests run in a thread pool of ``max_concurrency``;
* ``seeds[i]`` is sent as ``seed`` (servers that honour it are reproducible);
* stop strings are sent and also applied client-side (the text is cut before the earliest stop
  string), since some servers cap the number of stop strings;
* ``finish_reason``: ``"length"``, ``"stop"`` when a stop *string* ended the text (vLLM's
  ``stop_reason``, or the client-side cut), else ``"eos"``;
* ``n_tokens``: the tokenizer's count when one is given, else the server's ``completion_tokens``
  shared evenly over the choices of that response (an estimate, marked ``extra["n_tokens_estimated"]``);
* 429, 5xx and connection errors are retried ``max_retries`` times with exponential backoff;
  other HTTP errors raise :class:`HttpGeneratorError` naming the URL, the status and the body.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional, Sequence

from psr.generation.base import Completion, SamplingParams, check_generate_args


class HttpGeneratorError(RuntimeError):
    """A request that failed for good (after retries, or a non-retryable status)."""


_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class HttpGenerator:
    def __init__(
        self,
        base_url: str,
        model: str,
        api: str = "chat",
        api_key_env: Optional[str] = "OPENAI_API_KEY",
        tokenizer: Optional[str] = None,
        timeout_s: float = 600.0,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        max_concurrency: int = 16,
        extra_body: Optional[dict] = None,
    ):
        if api not in ("chat", "completions"):
            raise ValueError(f"api must be 'chat' or 'completions', got {api!r}")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api = api
        self.url = f"{self.base_url}/{'chat/completions' if api == 'chat' else 'completions'}"
        self._api_key = os.environ.get(api_key_env) if api_key_env else None
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_concurrency = max(1, int(max_concurrency))
        self.extra_body = dict(extra_body or {})
        self.name = f"http:{model}"
        self.version = f"{api}@{self.base_url}"
        self.tokenizer = None
        if tokenizer:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        self._local = threading.local()
        self.n_requests = 0

    # ------------------------------------------------------------------ HTTP

    def _post(self, body: dict) -> dict:
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        last: Optional[str] = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    self.n_requests += 1
                    payload = resp.read().decode("utf-8")
            except urllib.error.HTTPError as e:
                text = e.read().decode("utf-8", "replace")[:500]
                last = f"HTTP {e.code}: {text}"
                if e.code in _RETRY_STATUS:
                    continue
                raise HttpGeneratorError(f"POST {self.url}: {last}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
                continue
            try:
                out = json.loads(payload)
            except json.JSONDecodeError:
                raise HttpGeneratorError(f"POST {self.url}: response is not JSON: {payload[:200]!r}") from None
            if not isinstance(out, dict) or not isinstance(out.get("choices"), list):
                raise HttpGeneratorError(f"POST {self.url}: response has no 'choices': {payload[:200]!r}")
            return out
        raise HttpGeneratorError(f"POST {self.url}: failed after {self.max_retries + 1} attempts; last error {last}")

    def _body(self, prompt: str, n: int, params: SamplingParams, stop: list[str], seed: Optional[int]) -> dict:
        body: dict[str, Any] = {
            "model": self.model,
            "n": n,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
        }
        if stop:
            body["stop"] = stop
        if seed is not None:
            body["seed"] = int(seed)
        if self.api == "chat":
            text = prompt[:-1] if prompt.endswith("\n") else prompt
            body["messages"] = [{"role": "user", "content": text}]
        else:
            body["prompt"] = prompt
        body.update(self.extra_body)
        return body

    def _completion(self, choice: dict, stop: list[str], est_tokens: Optional[int]) -> Completion:
        if self.api == "chat":
            text = (choice.get("message") or {}).get("content") or ""
        else:
            text = choice.get("text") or ""
        reason = choice.get("finish_reason")
        cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
        if cut >= 0:
            text, finish = text[:cut], "stop"
        elif reason == "length":
            finish = "length"
        elif isinstance(choice.get("stop_reason"), str):
            finish = "stop"
        else:
            finish = "eos"
        extra: dict[str, Any] = {}
        if self.tokenizer is not None:
            n_tokens = len(self.tokenizer.encode(text, add_special_tokens=False))
        else:
            n_tokens = int(est_tokens or 0)
            extra["n_tokens_estimated"] = True
        return Completion(text=text, n_tokens=n_tokens, finish_reason=finish, extra=extra)

    def _one_prompt(self, prompt: str, params: SamplingParams, stop: list[str], seed: Optional[int]) -> list[Completion]:
        out: list[Completion] = []
        attempt = 0
        while len(out) < params.n:
            want = params.n - len(out)
            s = None if seed is None else seed + attempt
            resp = self._post(self._body(prompt, want, params, stop, s))
            choices = sorted(resp["choices"], key=lambda c: c.get("index", 0))[:want]
            if not choices:
                raise HttpGeneratorError(f"POST {self.url}: response has no choices")
            usage = resp.get("usage") or {}
            est = None
            if usage.get("completion_tokens") is not None:
                est = round(usage["completion_tokens"] / max(1, len(resp["choices"])))
            out += [self._completion(c, stop, est) for c in choices]
            attempt += 1
        return out

    # ------------------------------------------------------------------ Generator protocol

    def generate(
        self,
        prompts: Sequence[str],
        params: SamplingParams,
        stops: Optional[Sequence[Sequence[str]]] = None,
        seeds: Optional[Sequence[int]] = None,
    ) -> list[list[Completion]]:
        prompts = check_generate_args(prompts, params, stops, seeds)
        jobs = []
        for i, p in enumerate(prompts):
            stop = list(params.stop) + (list(stops[i]) if stops is not None else [])
            jobs.append((p, params, list(dict.fromkeys(stop)), None if seeds is None else seeds[i]))
        if len(jobs) <= 1 or self.max_concurrency == 1:
            return [self._one_prompt(*j) for j in jobs]
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(jobs))) as pool:
            return list(pool.map(lambda j: self._one_prompt(*j), jobs))

    def close(self) -> None:
        pass

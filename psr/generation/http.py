"""A Generator over an OpenAI-compatible HTTP API (OpenAI, vLLM ``serve``, SGLang, llama.cpp ...).

Used for teachers (IFT splitting, EFT judgments) where the paper used a strong API model::

    teacher:
      _component_: psr.generation.http.HttpGenerator
      base_url: http://127.0.0.1:8000/v1      # .../v1; the endpoint path is added
      model: Qwen2.5-72B-Instruct
      api_key_env: OPENAI_API_KEY             # the key is read from this env var, never from a file
      reasoning_model: auto                   # o1/o3/o4-mini/gpt-5...: max_completion_tokens, no sampling params
      max_completion_tokens: null             # reasoning models: budget incl. hidden reasoning (null: max_new_tokens)

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
* 429, 5xx and connection errors are retried ``max_retries`` times with exponential backoff
  (``backoff_s`` x 2^k; a server's ``retry-after-ms`` / ``Retry-After`` header is honoured when
  longer, capped at ``max_backoff_s``); other HTTP errors raise :class:`HttpGeneratorError`
  naming the URL, the status and the body. Resume is the calling recipe's: ift_build / eft_build
  append each finished record, so a run that still fails after the retries is rerun and skips
  what is done.

Reasoning models (OpenAI o1, o3, o4-mini, gpt-5, ...)
-----------------------------------------------------
The paper's teacher is o1. OpenAI's reasoning models reject ``max_tokens`` (they take
``max_completion_tokens``, which also covers the hidden reasoning tokens) and every sampling
parameter other than the defaults (``temperature``, ``top_p``; also ``stop``), each with an HTTP
400. ``reasoning_model`` decides which request shape is sent:

* ``auto`` (default): detected from the model name (:func:`is_reasoning_model`: ``o1``, ``o3``,
  ``o4-mini``, ``gpt-5``, ``gpt-5-mini`` ... with or without a date suffix or a provider prefix
  such as ``openai/o3``; not ``gpt-5-chat*``, which is a plain chat model);
* ``true`` / ``false``: override (e.g. an Azure deployment whose name hides the model).

For a reasoning model the body has ``max_completion_tokens`` (``max_completion_tokens`` if set,
else the call's ``max_new_tokens``: give reasoning models a budget that leaves room for their
hidden reasoning, OpenAI suggests at least 25,000), no ``temperature`` / ``top_p`` / ``stop``
(stop strings are still applied client-side), no ``n`` (one choice per request: o1-preview and
o1-mini accepted only n=1; ``n`` samples are ``n`` requests with seeds ``seed, seed+1, ...``),
and ``reasoning_effort`` when set. The sampling settings of the call are ignored (logged once). Reasoning tokens reported in ``usage`` are put in
``extra["reasoning_tokens"]`` (shared over the choices, like ``n_tokens``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional, Sequence

from psr.generation.base import Completion, SamplingParams, check_generate_args


log = logging.getLogger(__name__)

# OpenAI reasoning models: o1, o1-mini, o1-preview, o3, o3-mini, o3-pro, o4-mini, gpt-5, gpt-5-mini,
# gpt-5-nano, gpt-5.1 ... (any suffix); gpt-5-chat* is a non-reasoning chat model.
_REASONING_RE = re.compile(r"^(?:o[1-9]\d*(?:$|[-_.:])|gpt-5(?!(?:\.\d+)?-chat)(?:$|[-_.:]))")


def is_reasoning_model(model: str) -> bool:
    """Whether ``model`` names an OpenAI reasoning model (see the module docstring); a provider
    prefix (``openai/o3``) is ignored."""
    name = str(model).strip().rsplit("/", 1)[-1].lower()
    return bool(_REASONING_RE.match(name))


def resolve_reasoning_model(setting: Any, model: str) -> bool:
    """``reasoning_model`` (``auto`` | ``true`` | ``false``, or a bool) for ``model``."""
    if isinstance(setting, bool):
        return setting
    s = str(setting).strip().lower()
    if s == "auto":
        return is_reasoning_model(model)
    if s in ("true", "false"):
        return s == "true"
    raise ValueError(f"reasoning_model must be auto, true or false, got {setting!r}")


class HttpGeneratorError(RuntimeError):
    """A request that failed for good (after retries, or a non-retryable status)."""


_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


def _retry_after(headers: Any) -> Optional[float]:
    """Seconds the server asks to wait (``retry-after-ms``, else ``Retry-After`` in seconds), or None."""
    if headers is None:
        return None
    for key, scale in (("retry-after-ms", 1e-3), ("Retry-After", 1.0)):
        v = headers.get(key)
        if v is None:
            continue
        try:
            sec = float(v) * scale
        except (TypeError, ValueError):
            continue  # an HTTP date: fall back to the exponential backoff
        if sec >= 0 and sec == sec:
            return sec
    return None


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
        reasoning_model: Any = "auto",
        max_completion_tokens: Optional[int] = None,
        reasoning_effort: Optional[str] = None,
        max_backoff_s: float = 60.0,
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
        self.reasoning = resolve_reasoning_model(reasoning_model, model)
        if max_completion_tokens is not None and int(max_completion_tokens) < 1:
            raise ValueError(f"max_completion_tokens must be >= 1, got {max_completion_tokens!r}")
        self.max_completion_tokens = None if max_completion_tokens is None else int(max_completion_tokens)
        self.reasoning_effort = reasoning_effort
        if self.reasoning and api != "chat":
            raise ValueError(f"model {model!r} is a reasoning model (reasoning_model={reasoning_model!r}), "
                             f"served on the chat API only: use api=chat, or reasoning_model=false")
        if not self.reasoning and (self.max_completion_tokens is not None or reasoning_effort is not None):
            raise ValueError(f"max_completion_tokens / reasoning_effort are for reasoning models; model {model!r} "
                             f"is not one (set reasoning_model=true if it is)")
        self.max_backoff_s = float(max_backoff_s)
        self._warned_sampling = False
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
        hint: Optional[float] = None  # the server's retry-after, seconds
        for attempt in range(self.max_retries + 1):
            if attempt:
                wait = self.backoff_s * 2 ** (attempt - 1)
                if hint is not None:
                    wait = max(wait, hint)
                time.sleep(min(wait, self.max_backoff_s))
                hint = None
            req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    self.n_requests += 1
                    payload = resp.read().decode("utf-8")
            except urllib.error.HTTPError as e:
                text = e.read().decode("utf-8", "replace")[:500]
                last = f"HTTP {e.code}: {text}"
                if e.code in _RETRY_STATUS:
                    hint = _retry_after(e.headers)
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
        body: dict[str, Any] = {"model": self.model}
        if not self.reasoning:
            body["n"] = n
        if self.reasoning:
            # no sampling parameters, no max_tokens, no stop (applied client-side): see the docstring
            body["max_completion_tokens"] = self.max_completion_tokens or params.max_new_tokens
            if self.reasoning_effort is not None:
                body["reasoning_effort"] = self.reasoning_effort
            if not self._warned_sampling and (params.temperature != 1.0 or params.top_p != 1.0):
                self._warned_sampling = True
                log.warning("%s is a reasoning model: temperature=%s / top_p=%s are not sent (the API "
                            "accepts only its defaults)", self.model, params.temperature, params.top_p)
        else:
            body.update(temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_new_tokens)
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

    def _completion(self, choice: dict, stop: list[str], est_tokens: Optional[int],
                    reasoning_tokens: Optional[int] = None) -> Completion:
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
        if reasoning_tokens is not None:
            extra["reasoning_tokens"] = int(reasoning_tokens)
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
            est = rt = None
            k = max(1, len(resp["choices"]))
            if usage.get("completion_tokens") is not None:
                est = round(usage["completion_tokens"] / k)
            details = usage.get("completion_tokens_details") or {}
            if isinstance(details, dict) and details.get("reasoning_tokens") is not None:
                rt = round(details["reasoning_tokens"] / k)
            out += [self._completion(c, stop, est, rt) for c in choices]
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

"""The one argument check of ``Generator.generate`` (psr.generation.base.check_generate_args):
each bad argument gives its error, the same from the function and from every backend (native on
a tiny model; vLLM and HTTP reach the check before any engine or network work, so they are
tested without vllm installed and without a server)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from psr.generation.base import SamplingParams, check_generate_args, check_sampling_params

P = SamplingParams(n=2, temperature=0.7, top_p=0.9, max_new_tokens=4)


def _frozen(**kw) -> SamplingParams:
    """A SamplingParams with fields set past its constructor's check (as a caller that mutates a
    frozen dataclass would), so that check_generate_args' own re-check is what fires."""
    p = SamplingParams()
    for k, v in kw.items():
        object.__setattr__(p, k, v)
    return p


# (prompts, params, stops, seeds) -> (exception type, message regex)
BAD = {
    "bare str prompts": ("ab", P, None, None, TypeError, "prompts must be a sequence of strings, not a bare str"),
    "prompts not iterable": (None, P, None, None, TypeError, "prompts must be a sequence of strings, got NoneType"),
    "prompt not a str": (["a", 3], P, None, None, TypeError, r"prompts\[1\] must be a str, got int"),
    "params not SamplingParams": (["a"], {"n": 1}, None, None, TypeError, "params must be a SamplingParams, got dict"),
    "n < 1": (["a"], _frozen(n=0), None, None, ValueError, "n must be >= 1, got 0"),
    "n not an int": (["a"], _frozen(n=2.0), None, None, TypeError, "n must be an int, got float"),
    "temperature < 0": (["a"], _frozen(temperature=-0.1), None, None, ValueError, r"temperature must be >= 0, got -0.1"),
    "temperature nan": (["a"], _frozen(temperature=math.nan), None, None, ValueError, "temperature must be >= 0, got nan"),
    "temperature a str": (["a"], _frozen(temperature="0.5"), None, None, TypeError, "temperature must be a number, got str"),
    "top_p 0": (["a"], _frozen(top_p=0.0), None, None, ValueError, r"top_p must be in \(0, 1\], got 0.0"),
    "top_p > 1": (["a"], _frozen(top_p=1.5), None, None, ValueError, r"top_p must be in \(0, 1\], got 1.5"),
    "max_new_tokens 0": (["a"], _frozen(max_new_tokens=0), None, None, ValueError, "max_new_tokens must be >= 1, got 0"),
    "max_new_tokens bool": (["a"], _frozen(max_new_tokens=True), None, None, TypeError,
                            "max_new_tokens must be an int, got bool"),
    "params.stop bare str": (["a"], _frozen(stop="x"), None, None, TypeError,
                             r"list of strings, not a bare str: params.stop is 'x'"),
    "params.stop empty string": (["a"], _frozen(stop=("Step 2:", "")), None, None, ValueError,
                                 r"params.stop\[1\] is an empty string; a stop string must be non-empty"),
    "params.stop not str": (["a"], _frozen(stop=(None,)), None, None, TypeError, r"params.stop\[0\] must be a str, got NoneType"),
    "stops too short": (["a", "b"], P, [["x"]], None, ValueError, "stops has 1 entries for 2 prompts"),
    "stops a bare str": (["a", "b"], P, "xy", None, TypeError, "list of strings, not a bare str: stops is 'xy'"),
    "stops not a list": (["a"], P, 3, None, TypeError, "stops must be a list with one entry per prompt, or None; got int"),
    "stops[i] bare str": (["a"], P, ["x"], None, TypeError, r"list of strings, not a bare str: stops\[0\] is 'x'"),
    "stops[i] None": (["a", "b"], P, [["x"], None], None, TypeError,
                      r"stops\[1\] must be a list of stop strings, got NoneType"),
    "stops[i][k] not str": (["a"], P, [["x", 5]], None, TypeError, r"stops\[0\]\[1\] must be a str, got int"),
    "stops[i][k] empty": (["a"], P, [[""]], None, ValueError, r"stops\[0\]\[0\] is an empty string"),
    "seeds too long": (["a", "b"], P, None, [1, 2, 3], ValueError, "seeds has 3 entries for 2 prompts"),
    "seeds not a list": (["a"], P, None, 7, TypeError, "seeds must be a list with one entry per prompt, or None; got int"),
    "seed a float": (["a", "b"], P, None, [1, 2.5], TypeError, r"seeds\[1\] must be an int, got float"),
    "seed a str": (["a"], P, None, ["1"], TypeError, r"seeds\[0\] must be an int, got str"),
}
CASES = [pytest.param(*v, id=k) for k, v in BAD.items()]


@pytest.mark.parametrize("prompts,params,stops,seeds,exc,msg", CASES)
def test_check_generate_args_rejects(prompts, params, stops, seeds, exc, msg):
    with pytest.raises(exc, match=msg):
        check_generate_args(prompts, params, stops, seeds)


def test_check_generate_args_accepts_and_returns_a_list():
    assert check_generate_args(("a", "b"), P, None, None) == ["a", "b"]
    assert check_generate_args([], P, [], []) == []
    sp = SamplingParams(n=1, temperature=0, top_p=1, max_new_tokens=np.int64(3), stop=["Step 2:"])
    got = check_generate_args(iter(["a", "b"]), sp, [("x",), []], [np.int64(5), torch.tensor(2**40)])
    assert got == ["a", "b"]
    from omegaconf import OmegaConf

    assert check_generate_args(["a"], P, [OmegaConf.create(["Step 2:"])], [-1]) == ["a"]


def test_sampling_params_are_checked_when_built():
    """The constructor runs the same value check (the messages existing callers match on)."""
    for kw, exc, msg in [
        (dict(n=0), ValueError, "n must be >= 1"),
        (dict(temperature=-1.0), ValueError, "temperature must be >= 0"),
        (dict(top_p=0.0), ValueError, r"top_p must be in \(0, 1\]"),
        (dict(top_p=1.01), ValueError, r"top_p must be in \(0, 1\]"),
        (dict(max_new_tokens=0), ValueError, "max_new_tokens must be >= 1"),
        (dict(n=1.5), TypeError, "n must be an int, got float 1.5"),
        (dict(top_p="1"), TypeError, "top_p must be a number, got str"),
    ]:
        with pytest.raises(exc, match=msg):
            SamplingParams(**kw)
    with pytest.raises(ValueError, match="n must be >= 1"):
        dataclasses.replace(P, n=0)
    check_sampling_params(P)  # a valid one passes


# ------------------------------------------------------------------ the backends

BACKEND_CASES = [pytest.param(*BAD[k], id=k) for k in (
    "bare str prompts", "prompt not a str", "params not SamplingParams", "n < 1", "top_p > 1", "temperature nan",
    "params.stop empty string", "stops too short", "stops[i] bare str", "stops[i][k] empty", "seeds too long",
    "seed a float",
)]


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    from psr.generation.native import NativeGenerator
    from psr.models.tiny import build_tiny_model_dir

    d = build_tiny_model_dir(tmp_path_factory.mktemp("tiny"))
    return NativeGenerator(str(d), device="cpu", dtype="float32", cpu_threads=1)


@pytest.fixture(scope="module")
def vllm_gen():
    """A VLLMGenerator past its constructor (which needs vllm): its generate runs the shared
    check before it imports vllm or touches the engine."""
    from psr.generation.vllm_backend import VLLMGenerator

    g = VLLMGenerator.__new__(VLLMGenerator)
    g._llm = object()  # any engine call would fail: the check must come first
    return g


@pytest.fixture(scope="module")
def http_gen():
    """No server listens on port 9: a request would fail with HttpGeneratorError, not these."""
    from psr.generation.http import HttpGenerator

    return HttpGenerator("http://127.0.0.1:9/v1", "m", api_key_env=None, max_retries=0, timeout_s=1)


@pytest.mark.parametrize("backend", ["native", "vllm_gen", "http_gen"])
@pytest.mark.parametrize("prompts,params,stops,seeds,exc,msg", BACKEND_CASES)
def test_every_backend_rejects_with_the_shared_message(request, backend, prompts, params, stops, seeds, exc, msg):
    gen = request.getfixturevalue(backend)
    with pytest.raises(exc, match=msg):
        gen.generate(prompts, params, stops=stops, seeds=seeds)


def test_native_still_generates_after_the_check(native):
    out = native.generate(["a", "b"], SamplingParams(n=2, temperature=1.0, max_new_tokens=3, stop=["Step 2:"]),
                          stops=[[], ("\n",)], seeds=[np.int64(1), 2])
    assert [len(r) for r in out] == [2, 2] and all(1 <= c.n_tokens <= 3 for r in out for c in r)

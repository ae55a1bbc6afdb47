"""The Generator protocol: many prompts at once, n samples each.

Everything that samples text in psr (step_search, eval, IFT/EFT building) talks to a
``Generator`` and never touches tensors, so backends (native torch, vLLM, an HTTP endpoint,
a scripted fake in tests) are interchangeable.

Reproducibility contract: with ``seeds`` given, the samples for prompt ``i`` depend only on
(prompt ``i``, ``params``, ``stops[i]``, ``seeds[i]``), not on which other prompts share the
call, as far as the backend's numerics allow (the native backend documents its guarantee).
``temperature == 0`` is greedy decoding (then ``n`` identical samples are allowed to be
computed once).
"""

from __future__ import annotations

import numbers
import operator
from collections.abc import Sequence as CollectionsSequence
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, Sequence, runtime_checkable


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    # Stop strings for every prompt of the call; the output is cut *before* the stop string.
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_sampling_params(self)


@dataclass
class Completion:
    text: str  # generated text, cut before the stop string; the stop string is not included
    n_tokens: int  # tokens generated (up to and including the stop / EOS token)
    finish_reason: str  # "stop" (a stop string), "eos" (end of sequence), "length"
    extra: dict[str, Any] = field(default_factory=dict)


def _is_int(v: Any) -> bool:
    """An integer (int, numpy or 0-d torch integer), not a bool."""
    if isinstance(v, bool):
        return False
    try:
        operator.index(v)
    except TypeError:
        return False
    return True


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def check_sampling_params(params: SamplingParams) -> None:
    """Types and ranges of a :class:`SamplingParams` (run when one is built, and again by
    :func:`check_generate_args`): ``n`` and ``max_new_tokens`` ints >= 1, ``temperature`` a
    number >= 0, ``top_p`` a number in (0, 1]."""
    for name in ("n", "max_new_tokens"):
        v = getattr(params, name)
        if not _is_int(v):
            raise TypeError(f"{name} must be an int, got {type(v).__name__} {v!r}")
    for name in ("temperature", "top_p"):
        v = getattr(params, name)
        if not _is_number(v):
            raise TypeError(f"{name} must be a number, got {type(v).__name__} {v!r}")
    if params.n < 1:
        raise ValueError(f"n must be >= 1, got {params.n}")
    if not params.temperature >= 0:  # (also rejects NaN)
        raise ValueError(f"temperature must be >= 0, got {params.temperature}")
    if not 0 < params.top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {params.top_p}")
    if params.max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {params.max_new_tokens}")


def _check_stop_list(stop: Any, where: str) -> None:
    """``stop`` (``params.stop`` or ``stops[i]``) is a sequence (list, tuple) of non-empty strings."""
    if isinstance(stop, str):
        raise TypeError(f"stop strings must be given as a list of strings, not a bare str: {where} is {stop[:60]!r}")
    if not isinstance(stop, CollectionsSequence) or isinstance(stop, bytes):
        raise TypeError(f"{where} must be a list of stop strings, got {type(stop).__name__}")
    for k, x in enumerate(stop):
        if not isinstance(x, str):
            raise TypeError(f"{where}[{k}] must be a str, got {type(x).__name__}")
        if not x:
            raise ValueError(f"{where}[{k}] is an empty string; a stop string must be non-empty")


def check_generate_args(
    prompts: Sequence[str],
    params: SamplingParams,
    stops: Optional[Sequence[Sequence[str]]],
    seeds: Optional[Sequence[int]],
) -> list[str]:
    """Validate the arguments of :meth:`Generator.generate` and return the prompts as a list.

    Every backend (native, vLLM, HTTP) calls this first, so a bad argument fails the same way
    (and before any engine work) whichever backend runs:

    * ``prompts``: a sequence of str (not a bare str);
    * ``params``: a :class:`SamplingParams` with valid values (:func:`check_sampling_params`);
      ``params.stop`` a list or tuple of non-empty strings (empty ones are an error, not ignored);
    * ``stops``: None, or one list of non-empty stop strings per prompt;
    * ``seeds``: None, or one int per prompt.
    """
    if isinstance(prompts, str):
        raise TypeError("prompts must be a sequence of strings, not a bare str")
    try:
        prompts = list(prompts)
    except TypeError:
        raise TypeError(f"prompts must be a sequence of strings, got {type(prompts).__name__}") from None
    for k, p in enumerate(prompts):
        if not isinstance(p, str):
            raise TypeError(f"prompts[{k}] must be a str, got {type(p).__name__}")
    if not isinstance(params, SamplingParams):
        raise TypeError(f"params must be a SamplingParams, got {type(params).__name__}")
    check_sampling_params(params)
    if isinstance(stops, str):
        _check_stop_list(stops, "stops")  # the bare-str error
    for name, arg in (("stops", stops), ("seeds", seeds)):
        if arg is not None and (isinstance(arg, (str, bytes)) or not hasattr(arg, "__len__")):
            raise TypeError(f"{name} must be a list with one entry per prompt, or None; got {type(arg).__name__}")
    if stops is not None and len(stops) != len(prompts):
        raise ValueError(f"stops has {len(stops)} entries for {len(prompts)} prompts")
    if seeds is not None and len(seeds) != len(prompts):
        raise ValueError(f"seeds has {len(seeds)} entries for {len(prompts)} prompts")
    _check_stop_list(params.stop, "params.stop")
    if stops is not None:
        for i, st in enumerate(stops):
            _check_stop_list(st, f"stops[{i}]")
    if seeds is not None:
        for i, s in enumerate(seeds):
            if not _is_int(s):
                raise TypeError(f"seeds[{i}] must be an int, got {type(s).__name__}")
    return prompts


@runtime_checkable
class Generator(Protocol):
    """A text generator. ``tokenizer`` is the HF tokenizer (used for chat formatting and token
    counts); ``name`` and ``version`` are written into run summaries."""

    name: str
    version: str
    tokenizer: Any

    def generate(
        self,
        prompts: Sequence[str],
        params: SamplingParams,
        stops: Optional[Sequence[Sequence[str]]] = None,
        seeds: Optional[Sequence[int]] = None,
    ) -> list[list[Completion]]:
        """``params.n`` completions for each prompt, in prompt order.

        ``stops[i]`` are extra stop strings for prompt ``i`` (added to ``params.stop``);
        ``seeds[i]`` seeds prompt ``i``'s samples.
        """
        ...

    def close(self) -> None:
        """Release the engine's memory (GPU or host) before another stage starts."""
        ...

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
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass
class Completion:
    text: str  # generated text, cut before the stop string; the stop string is not included
    n_tokens: int  # tokens generated (up to and including the stop / EOS token)
    finish_reason: str  # "stop" (a stop string), "eos" (end of sequence), "length"
    extra: dict[str, Any] = field(default_factory=dict)


def check_generate_args(
    prompts: Sequence[str],
    params: SamplingParams,
    stops: Optional[Sequence[Sequence[str]]],
    seeds: Optional[Sequence[int]],
) -> list[str]:
    """Validate the arguments of :meth:`Generator.generate` (the same rules for every backend)
    and return the prompts as a list."""
    if isinstance(prompts, str):
        raise TypeError("prompts must be a sequence of strings, not a bare str")
    prompts = list(prompts)
    for k, p in enumerate(prompts):
        if not isinstance(p, str):
            raise TypeError(f"prompts[{k}] must be a str, got {type(p).__name__}")
    if not isinstance(params, SamplingParams):
        raise TypeError(f"params must be a SamplingParams, got {type(params).__name__}")
    if stops is not None and len(stops) != len(prompts):
        raise ValueError(f"stops has {len(stops)} entries for {len(prompts)} prompts")
    if seeds is not None and len(seeds) != len(prompts):
        raise ValueError(f"seeds has {len(seeds)} entries for {len(prompts)} prompts")
    if isinstance(params.stop, str) or (stops is not None and any(isinstance(s, str) for s in stops)):
        raise TypeError("stop strings must be given as a list of strings, not a bare str")
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

"""Generation backends behind one small protocol (see ``base.py``)."""

from psr.generation.base import Completion, Generator, SamplingParams

__all__ = ["Completion", "Generator", "SamplingParams"]

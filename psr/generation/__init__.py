"""Generation backends behind one small protocol (see ``base.py``)."""

from psr.generation.base import Completion, Generator, SamplingParams
from psr.generation.factory import make_generator

__all__ = ["Completion", "Generator", "SamplingParams", "make_generator"]

"""Error types shared by modules that must not import each other (standard library only).

``ConfigError`` is raised by the config loader (:mod:`psr.config`) and by the output-dir checks
(:mod:`psr.outputs`), and ``psr.config.recipe_main`` catches it together with the outputs' own
``RunFailed``; defining it here keeps ``psr.outputs`` from importing ``psr.config`` (which imports
``psr.outputs``). Import it from either place: ``psr.config.ConfigError`` is this class.
"""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A bad configuration; the message names the key and where it came from."""

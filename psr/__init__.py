"""psr: Process-based Self-Rewarding Language Models (Zhang et al., 2025, arXiv 2503.03746).

The shared package: prompts, step parsing, the pairwise tournament, the grader, data,
models, generation backends and training helpers. Recipes live in ``recipes/`` and import
from here; they never import each other.
"""

__version__ = "0.1.0"

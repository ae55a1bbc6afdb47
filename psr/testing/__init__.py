"""Test doubles: stand-ins for models, teachers and data, for tests and ``configs/tiny``.

Nothing here is a model of anything; shipped modules hold production code only. Real runs use
the trained models and the real data of the other config families.

* :mod:`psr.testing.teachers` -- :class:`LengthPRM` (a PRM whose P("+") grows with the step's
  length), :class:`ScriptedTeacher` (a scripted Figure 5 judge, one of four behaviours per pair),
  :class:`ScriptedSplitTeacher` (answers Figure 3 by psr.ift's rules);
* :mod:`psr.testing.models` -- :func:`tiny_generator` (a random tiny model behind
  ``make_generator``: the policy of ``configs/tiny/eft_build.yaml``), :func:`build_tiny_llama_dir`;
* :mod:`psr.testing.data` -- small deterministic inputs: :func:`tiny_pairs` (step_dpo),
  :func:`tiny_prm_records` (prm_train), :func:`write_tiny_sft_data` (eft_ift_sft).

The names are re-exported here, so configs write ``_component_: psr.testing.ScriptedTeacher``.
Importing this package loads no torch or transformers; the model builders do when called.
"""

from psr.testing.data import tiny_pairs, tiny_prm_records, write_tiny_sft_data
from psr.testing.models import build_tiny_llama_dir, tiny_generator
from psr.testing.teachers import LengthPRM, ScriptedSplitTeacher, ScriptedTeacher

__all__ = [
    "LengthPRM",
    "ScriptedSplitTeacher",
    "ScriptedTeacher",
    "build_tiny_llama_dir",
    "tiny_generator",
    "tiny_pairs",
    "tiny_prm_records",
    "write_tiny_sft_data",
]

r"""The arith world (DESIGN §4): seeded multi-step arithmetic word problems whose every step can be
checked exactly, so the self-rewarding loop can be measured on 2 CPU cores.

Public API (see each module's docstring for the precise definitions):

* problems: :class:`Problem`, :func:`generate_problems`, :func:`make_splits`,
  :class:`NumberRanges` (how large the numbers get)
* checker:  :func:`check_step`, :func:`check_step_detail`, :func:`check_steps`,
  :func:`score_steps`, :func:`check_solution`, :func:`final_answer`, :class:`ArithOracle`
  (PRM interface ``score_steps(question, steps)``)
* candidates: :func:`wrong_step`, :func:`wrong_steps`, :func:`random_wrong_step`,
  :func:`correct_step`, :data:`WRONG_KINDS`
* teacher: :func:`judge_explanation`, :class:`ArithTeacher` (a Generator for Figure 5 prompts)
* data: :func:`ift_records`, :func:`eft_records`, :func:`m0_records`, :func:`write_initial_data`,
  :func:`load_problems`
* tokenizer/model: :func:`build_arith_tokenizer`, :class:`ArithModelConfig`,
  :func:`load_model_config`, :func:`build_model_dir`

* headroom: :func:`psr.arith.headroom.headroom` -- how many greedy failures have a correct
  candidate among w samples at their first wrong step (what step search can pick from)

Command line: ``python -m psr.arith data --out DIR`` and ``python -m psr.arith model-dir --out DIR``
(``--help`` for options); ``python -m psr.arith stats`` prints token lengths;
``python -m psr.arith headroom --model M --problems P --greedy G --out DIR``.
"""

from psr.arith.candidates import WRONG_KINDS, Candidate, correct_step, random_wrong_step, wrong_step, wrong_steps
from psr.arith.checker import (
    ArithOracle,
    StepCheck,
    check_solution,
    check_step,
    check_step_detail,
    check_steps,
    final_answer,
    score_steps,
)
from psr.arith.data import benchmark_records, eft_records, ift_records, load_problems, m0_records, write_initial_data
from psr.arith.model import ArithModelConfig, build_model_dir, load_model_config, n_params
from psr.arith.problems import PRESETS, NumberRanges, Problem, generate_problems, make_splits
from psr.arith.teacher import ArithTeacher, CheckerJudged, judge_explanation
from psr.arith.tokenizer import build_arith_tokenizer

__all__ = [
    "WRONG_KINDS", "Candidate", "correct_step", "random_wrong_step", "wrong_step", "wrong_steps",
    "ArithOracle", "StepCheck", "check_solution", "check_step", "check_step_detail", "check_steps",
    "final_answer", "score_steps", "benchmark_records", "eft_records", "ift_records", "load_problems", "m0_records",
    "write_initial_data", "ArithModelConfig", "build_model_dir", "load_model_config", "n_params",
    "PRESETS", "NumberRanges", "Problem", "generate_problems", "make_splits", "ArithTeacher", "CheckerJudged", "judge_explanation",
    "build_arith_tokenizer",
]

"""The data guard of tests/conftest.py: a test whose real data (../shared/data, ../shared/paper)
is missing skips locally and fails under PSR_REQUIRE_DATA=1, which .ci/run sets, so a CI machine
without the data cannot pass green with those tests skipped."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# one test per guarded fixture: data_dir (benchmarks) and paper_prompts_md (the verbatim prompts)
TESTS = ["tests/test_benchmarks.py::test_gaokao_choice_letters_are_marked",
         "tests/test_prompts.py::test_templates_are_the_papers_word_for_word"]


def _pytest(tmp_path, require):
    env = {k: v for k, v in os.environ.items() if k != "PSR_REQUIRE_DATA"}
    env.update(PSR_DATA_DIR=str(tmp_path / "no_data"), PSR_PAPER_DIR=str(tmp_path / "no_paper"))
    if require:
        env["PSR_REQUIRE_DATA"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfs", "-p", "no:cacheprovider", *TESTS],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_missing_data_skips_locally_and_fails_under_psr_require_data(tmp_path):
    p = _pytest(tmp_path, require=False)
    assert p.returncode == 0 and "2 skipped" in p.stdout, p.stdout[-2000:]
    assert f"benchmark data not found at {tmp_path / 'no_data'}" in p.stdout
    assert f"the paper's prompts not found at {tmp_path / 'no_paper' / 'prompts.md'}" in p.stdout
    p = _pytest(tmp_path, require=True)
    assert p.returncode == 1 and "2 errors" in p.stdout, p.stdout[-2000:]
    assert p.stdout.count("PSR_REQUIRE_DATA=1 but ") == 2

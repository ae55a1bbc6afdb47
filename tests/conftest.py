import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("PSR_DATA_DIR", REPO.parent / "shared" / "data"))
PAPER_DIR = Path(os.environ.get("PSR_PAPER_DIR", REPO.parent / "shared" / "paper"))


def missing_data(what: str) -> None:
    """A test's real data (benchmarks, the paper's prompts) is not there: skip it locally, but
    fail it under ``PSR_REQUIRE_DATA=1`` (CI: data-dependent tests must run, not pass as skipped)."""
    if os.environ.get("PSR_REQUIRE_DATA") == "1":
        pytest.fail(f"PSR_REQUIRE_DATA=1 but {what}", pytrace=False)
    pytest.skip(f"{what} (set PSR_REQUIRE_DATA=1 to fail instead of skipping)")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.is_dir():
        missing_data(f"benchmark data not found at {DATA_DIR} (set PSR_DATA_DIR)")
    return DATA_DIR


@pytest.fixture(scope="session")
def paper_prompts_md() -> Path:
    """The paper's prompts, verbatim (../shared/paper/prompts.md)."""
    path = PAPER_DIR / "prompts.md"
    if not path.is_file():
        missing_data(f"the paper's prompts not found at {path} (set PSR_PAPER_DIR)")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random tiny qwen2 model dir shared by the whole session (read-only by convention)."""
    from psr.models.tiny import build_tiny_model_dir

    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny_model") / "model")


@pytest.fixture(scope="session")
def python() -> str:
    return sys.executable

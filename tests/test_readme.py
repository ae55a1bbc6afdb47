"""The README stays a short user guide, and what it and docs/ point at exists: links (with their
#anchors), repository paths, configs, and the `psr run` commands' config keys."""

import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
MAX_README_LINES = 160

_LINK = re.compile(r"\]\(([^)\s]+)\)")
_CODE_BLOCK = re.compile(r"```[a-z]*\n(.*?)```", re.S)
_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_REPO_PATH = re.compile(r"^(?:psr|recipes|configs|bench|eval|tests|docs|\.ci)/[\w./-]*$")
_SHORT_CONFIG = re.compile(r"--config[ =](\w+/\w+)(?=\s|$)")


def _rel(page: Path) -> str:
    return str(page.relative_to(REPO))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces -> hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = _CODE_BLOCK.sub("", page.read_text())
    return {_slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, re.M)}


def _code(page: Path) -> list[str]:
    """Code blocks (backslash-continued lines joined) and code spans of a page."""
    text = page.read_text()
    chunks = []
    for block in _CODE_BLOCK.findall(text):
        chunks += block.replace("\\\n", " ").splitlines()
    chunks += _CODE_SPAN.findall(_CODE_BLOCK.sub("", text))
    return chunks


def test_readme_is_short():
    n = len(README.read_text().splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines (at most {MAX_README_LINES}): move detail to docs/"


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_links_resolve(page):
    bad = []
    for target in _LINK.findall(page.read_text()):
        if re.match(r"^[a-z]+:", target):  # http(s), mailto
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert not bad, f"{_rel(page)}: " + "; ".join(bad)


def test_readme_links_every_docs_page():
    text = README.read_text()
    missing = [p.name for p in PAGES[1:] if f"docs/{p.name}" not in text]
    assert not missing, f"README.md does not link docs pages: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_named_paths_and_configs_exist(page):
    bad = []
    for chunk in _code(page):
        for tok in chunk.split():
            tok = tok.strip("`'\",;:()")
            if _REPO_PATH.match(tok) and not (REPO / tok).exists():
                bad.append(tok)
        for cfg in _SHORT_CONFIG.findall(chunk):
            if not (REPO / "configs" / f"{cfg}.yaml").is_file():
                bad.append(f"--config {cfg}")
    assert not bad, f"{_rel(page)} names what does not exist: {sorted(set(bad))}"


def _psr_run_commands(page: Path) -> list[tuple[str, str, list[str]]]:
    """(recipe, config, overrides) of every complete `psr run` command (no placeholders)."""
    out = []
    for chunk in _code(page):
        for m in re.finditer(r"psr run (.*)", chunk):
            line = m.group(1).split("#")[0].split("&&")[0]
            if any(p in line for p in ("<", "...", "…")):
                continue
            toks = shlex.split(line)
            while toks and toks[0].startswith("--"):  # torchrun options and their values
                toks = toks[1:] if "=" in toks[0] else toks[2:]
            if len(toks) < 3 or toks[1] != "--config":
                continue
            recipe, config = toks[0], toks[2]
            overrides = [t for t in toks[3:] if "=" in t and not t.startswith("-")]
            out.append((recipe, config, overrides))
    return out


def test_readme_commands_are_found():
    recipes = {r for r, _, _ in _psr_run_commands(README)}
    assert {"pipeline", "eval", "step_search", "step_dpo", "srlm_search"} <= recipes


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_psr_run_commands_parse(page):
    """Each command's recipe exists and its config + key=value overrides pass the recipe's schema
    (a renamed key in a recipe shows up here)."""
    from psr.plan import load_recipe_config

    for recipe, config, overrides in _psr_run_commands(page):
        assert (REPO / "recipes" / f"{recipe}.py").is_file(), f"{_rel(page)}: no recipe {recipe!r}"
        load_recipe_config(recipe, config, overrides)

"""Each search/MCTS default is defined once (the library dataclass) and nested in the recipes'
schemas; nested keys are set and checked like top-level ones; one tiny switch (``tiny: true``)."""

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fakes import load_recipe
from psr.config import ConfigError, describe, load_config
from psr.eft import MCTSConfig
from psr.search import SearchConfig
from psr.srlm import SRLMConfig

REPO = Path(__file__).resolve().parents[1]


def _obj(node):
    return OmegaConf.to_object(node)


def test_recipes_nest_the_library_configs_with_their_defaults():
    base = ["output_dir=/o", "tiny=true"]
    step = load_config(load_recipe("step_search").StepSearchConfig, None, base)
    assert _obj(step.search) == SearchConfig()
    ev = load_config(load_recipe("eval").EvalConfig, None, base)
    assert _obj(ev.tts) == SearchConfig(mode="tts")
    srlm = load_config(load_recipe("srlm_search").SrlmSearchConfig, None, base)
    assert _obj(srlm.search) == SRLMConfig()
    eft = load_config(load_recipe("eft_build").EftBuildConfig, None, ["output_dir=/o", "input=q.jsonl"])
    assert _obj(eft.mcts) == MCTSConfig()
    # the one value each: step length 512 and 32 questions in flight (step_search's, now the library's)
    assert (SearchConfig().max_new_tokens_step, SearchConfig().questions_in_flight) == (512, 32)
    # the nested seed follows the recipe's seed unless set
    assert load_config(load_recipe("step_search").StepSearchConfig, None, [*base, "seed=7"]).search.seed == 7
    assert load_config(load_recipe("eval").EvalConfig, None, [*base, "seed=7", "tts.seed=3"]).tts.seed == 3


def test_no_recipe_schema_redeclares_a_library_setting():
    cases = [("step_search", "StepSearchConfig", SearchConfig), ("srlm_search", "SrlmSearchConfig", SRLMConfig),
             ("eft_build", "EftBuildConfig", MCTSConfig)]
    for recipe, schema, lib in cases:
        top = {f.name for f in dataclasses.fields(getattr(load_recipe(recipe), schema))}
        assert top & {f.name for f in dataclasses.fields(lib)} == {"seed"}, recipe
    ev = {f.name for f in dataclasses.fields(load_recipe("eval").EvalConfig)}
    assert not ev & {"width", "judge_orders", "max_new_tokens_step", "questions_in_flight"}
    # and no recipe spells a search default out again
    for p in sorted((REPO / "recipes").glob("*.py")):
        text = p.read_text(encoding="utf-8")
        assert not re.search(r"\b(max_new_tokens_step|questions_in_flight|judge_orders)\s*:\s*int\s*=", text), p
        assert '"max_new_tokens_step": 512' not in text and "get(\"width\", 6)" not in text, p


def test_nested_overrides_and_misspelt_nested_keys():
    schema = load_recipe("step_search").StepSearchConfig
    cfg = load_config(schema, "tiny/step_search", ["output_dir=/o", "search.width=4", "search.mode=tts"])
    assert (cfg.search.width, cfg.search.mode, cfg.search.max_new_tokens_step) == (4, "tts", 16)
    with pytest.raises(ConfigError) as e:
        load_config(schema, "tiny/step_search", ["output_dir=/o", "search.widht=4"])
    msg = str(e.value)
    assert "unknown key 'search.widht' for StepSearchConfig.search" in msg and "valid keys: " in msg
    assert "width" in msg.split("valid keys: ")[1] and "output_dir" not in msg.split("valid keys: ")[1]
    with pytest.raises(ConfigError, match=r"bad value for key 'search.width'"):
        load_config(schema, None, ["output_dir=/o", "search.width=many"])
    with pytest.raises(ConfigError, match=r"unknown key 'width' for StepSearchConfig "):  # the old flat key
        load_config(schema, None, ["output_dir=/o", "width=4"])


def test_a_misspelt_nested_key_in_a_yaml_names_the_file_and_key(tmp_path):
    y = tmp_path / "s.yaml"
    y.write_text("tiny: true\nsearch:\n  width: 3\n  max_new_tokens_stp: 8\n")
    with pytest.raises(ConfigError, match=r"s\.yaml: unknown key 'search.max_new_tokens_stp'"):
        load_config(load_recipe("step_search").StepSearchConfig, y, ["output_dir=/o"])
    y.write_text("input: q.jsonl\nmcts: {num_iteration: 3}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'mcts.num_iteration' for EftBuildConfig.mcts"):
        load_config(load_recipe("eft_build").EftBuildConfig, y, ["output_dir=/o"])


def test_the_library_checks_name_the_nested_key():
    mod = load_recipe("step_search")
    cfg = load_config(mod.StepSearchConfig, "tiny/step_search", ["output_dir=/o", "search.judge_orders=3"])
    with pytest.raises(ConfigError, match=r"^search: judge_orders must be 1 or 2, got 3$"):
        mod.search_config(cfg)
    ev = load_recipe("eval")
    cfg = load_config(ev.EvalConfig, "tiny/eval", ["output_dir=/o", "mode=tts", "tts.mode=pairs"])
    with pytest.raises(ConfigError, match=r"tts.mode"):
        ev.validate(cfg)


def test_help_lists_nested_keys_with_the_library_defaults():
    text = describe(load_recipe("step_search").StepSearchConfig)
    assert "  search.width = 6" in text and "  search.max_new_tokens_step = 512" in text
    assert "  search.questions_in_flight = 32" in text and "  tiny = False" in text


def test_the_pipeline_reads_the_search_defaults_from_the_library(tmp_path):
    sys.path.insert(0, str(REPO))
    from recipes.pipeline import Pipeline, PipelineConfig

    y = tmp_path / "search.yaml"
    y.write_text("backend: native\n")  # no search block: every setting is SearchConfig's
    cfg = OmegaConf.merge(OmegaConf.structured(PipelineConfig),
                          {"output_dir": str(tmp_path / "run"), "search": {"config": str(y), "overrides": []}})
    d = SearchConfig()
    assert Pipeline(cfg).search_sampling() == {"width": d.width, "temperature": d.temperature, "top_p": d.top_p,
                                               "max_new_tokens": d.max_new_tokens_step}
    cfg.search.overrides = ["search.widht=3"]
    with pytest.raises(ConfigError, match="search.widht"):
        Pipeline(cfg).search_sampling()


def test_the_schemas_the_pipeline_reads_do_not_import_torch():
    code = ("import sys; import psr.search, psr.srlm, psr.eft, psr.config, psr.data.paths, recipes.pipeline; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr[-2000:]


def test_one_tiny_switch():
    """Every recipe that loads a model builds a tiny one with `tiny: true`, and the tiny configs use it."""
    for recipe, schema in [("step_search", "StepSearchConfig"), ("srlm_search", "SrlmSearchConfig"),
                           ("eval", "EvalConfig"), ("eft_build", "EftBuildConfig"), ("step_dpo", "StepDpoConfig"),
                           ("prm_train", "PrmTrainConfig"), ("eft_ift_sft", "EftIftSftConfig")]:
        fields = {f.name: f for f in dataclasses.fields(getattr(load_recipe(recipe), schema))}
        assert fields["tiny"].default is False and "tiny_model" not in fields, recipe
    for p in sorted((REPO / "configs").glob("*/*.yaml")):
        text = p.read_text(encoding="utf-8")
        assert not re.search(r"^(model_dir: tiny|tiny_model:)", text, re.M), p
        assert not re.search(r"^\s*_component_: psr\.(eft|testing)\.tiny_generator", text, re.M), p  # tiny: true instead
        if p.parent.name == "tiny" and p.stem != "ift_build":
            assert re.search(r"^tiny: true$", text, re.M), p

import importlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from omegaconf import MISSING

from psr import cli
from psr.config import ConfigError, instantiate, load_config, parse_argv, resolve_config_path
from fakes import run_cmd

ASSETS = Path(__file__).parent / "assets"
ECHO = ASSETS / "echo_recipe.py"


@dataclass
class Cfg:
    output_dir: str = MISSING
    lr: float = 1e-3
    log_dir: str = "${output_dir}/logs"
    model: Any = field(default_factory=dict)
    benchmarks: list = field(default_factory=lambda: ["gsm8k"])


def test_yaml_and_overrides_merge_with_interpolation(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("lr: 0.5\nmodel:\n  _component_: collections.Counter\n  a: 2\n")
    cfg = load_config(Cfg, y, ["output_dir=/o", "benchmarks=[math500,aime24]", "model.b=3"])
    assert cfg.lr == 0.5 and cfg.log_dir == "/o/logs" and list(cfg.benchmarks) == ["math500", "aime24"]
    assert instantiate(cfg.model) == {"a": 2, "b": 3}
    assert instantiate(cfg.model, c=1)["c"] == 1


def test_unknown_key_in_yaml_names_key_and_file(tmp_path):
    y = tmp_path / "bad.yaml"
    y.write_text("output_dir: /o\nlearning_rate: 1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown key 'learning_rate'"):
        load_config(Cfg, y)


def test_unknown_key_in_override_and_bad_types():
    with pytest.raises(ConfigError, match=r"override 'lrr=1': unknown key 'lrr'"):
        load_config(Cfg, None, ["output_dir=/o", "lrr=1"])
    with pytest.raises(ConfigError, match=r"bad value for key 'lr'"):
        load_config(Cfg, None, ["output_dir=/o", "lr=fast"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(Cfg, None, ["output_dir"])


def test_dict_override_into_a_list_element_is_a_config_error_naming_the_override():
    # OmegaConf raises a bare TypeError here; the user gets one line naming the override
    with pytest.raises(ConfigError, match=r"override 'benchmarks.1=\{a: 1\}': .*replaced whole"):
        load_config(Cfg, None, ["output_dir=/o", "benchmarks.1={a: 1}"])


def test_required_key_reported_by_name():
    with pytest.raises(ConfigError, match=r"required key\(s\) not set: output_dir"):
        load_config(Cfg, None, [])


def test_yaml_syntax_and_missing_file_errors(tmp_path):
    y = tmp_path / "broken.yaml"
    y.write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="broken.yaml: cannot parse YAML"):
        load_config(Cfg, y)
    with pytest.raises(ConfigError, match="no such file"):
        resolve_config_path("nofamily/norecipe")


def test_instantiate_errors_name_the_component():
    with pytest.raises(ConfigError, match="has no attribute 'Nope'"):
        instantiate({"_component_": "collections.Nope"})
    with pytest.raises(ConfigError, match="no '_component_'"):
        instantiate({"a": 1})


def test_a_moved_component_path_names_its_new_place():
    from psr.config import MOVED_COMPONENTS, _locate

    with pytest.raises(ConfigError, match=r"'psr.eft.ScriptedTeacher' has moved to 'psr.testing.ScriptedTeacher'"):
        instantiate({"_component_": "psr.eft.ScriptedTeacher", "mode": "mixed"})
    for old, new in MOVED_COMPONENTS.items():
        module, name = old.rsplit(".", 1)
        assert _locate(new).__name__ == name
        assert not hasattr(importlib.import_module(module), name)  # no shim left in the old module
    assert instantiate({"_component_": "psr.testing.ScriptedTeacher", "mode": "mixed"}).mode == "mixed"


def test_parse_argv():
    assert parse_argv(["--config", "x.yaml", "a=1"]) == ("x.yaml", ["a=1"])
    assert parse_argv(["--config=x.yaml"]) == ("x.yaml", [])
    with pytest.raises(ConfigError, match="unexpected"):
        parse_argv(["--verbose"])


def test_split_run_args_separates_torchrun_options():
    t, r, a = cli.split_run_args(["--nproc_per_node", "2", "step_dpo", "--config", "tiny/step_dpo", "x=1"])
    assert (t, r, a) == (["--nproc_per_node", "2"], "step_dpo", ["--config", "tiny/step_dpo", "x=1"])
    t, r, a = cli.split_run_args(["eval", "--nnodes=1", "--config", "c.yaml"])
    assert (t, r, a) == (["--nnodes=1"], "eval", ["--config", "c.yaml"])


def _run(args, cwd, env=None):
    import os

    return run_cmd(args, 600, cwd=cwd, env=None if env is None else {**os.environ, **env})


def test_psr_run_in_process(tmp_path, repo_root):
    out = tmp_path / "o"
    p = _run([sys.executable, "-m", "psr.cli", "run", str(ECHO), "--config", str(ASSETS / "echo.yaml"),
              f"output_dir={out}", "tags=[x]"], repo_root)
    assert p.returncode == 0, p.stderr
    rec = json.loads((out / "rank0.json").read_text())
    assert rec["world"] == 1 and rec["cfg"]["message"] == "from-yaml" and rec["cfg"]["scale"] == 2.5
    assert rec["cfg"]["log_file"] == f"{out}/log.txt" and rec["cfg"]["tags"] == ["x"]


def test_psr_run_with_torchrun_two_processes(tmp_path, repo_root):
    out = tmp_path / "o"
    p = _run([sys.executable, "-m", "psr.cli", "run", "--nproc_per_node", "2", str(ECHO),
              "--config", str(ASSETS / "echo.yaml"), f"output_dir={out}"], repo_root)
    assert p.returncode == 0, p.stderr
    recs = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in recs] == [2, 2] and [r["rank_sum"] for r in recs] == [1.0, 1.0]


def test_psr_run_torchrun_failure_is_the_recipes_one_line_and_exit_code(tmp_path, repo_root):
    """A worker's configuration error under torchrun: the recipe's one line and its exit status 2,
    not torchrun's ChildFailedError report with exit status 1."""
    out = tmp_path / "o"
    p = _run([sys.executable, "-m", "psr.cli", "run", "--nproc_per_node", "2", "step_dpo", "--config", "tiny/step_dpo",
              f"output_dir={out}", f"model_dir={tmp_path / 'nope'}"], repo_root)
    assert p.returncode == 2, p.stderr[-2000:]
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: model_dir={tmp_path / 'nope'}: no config.json there: no such directory "
                      "(an HF model dir is expected)"]
    assert "ChildFailedError" not in p.stderr and "Traceback" not in p.stderr and not out.exists()


@pytest.mark.parametrize("nproc", [1, 2])
def test_tune_run_launches_a_recipe_file(tmp_path, repo_root, nproc):
    # torchtune runs a custom recipe given as a path relative to the working directory
    tune = Path(sys.executable).parent / "tune"
    if not tune.exists():
        pytest.skip("torchtune's `tune` is not installed in this environment")
    out = tmp_path / "o"
    launch = ["--nproc_per_node", "2"] if nproc == 2 else []
    p = _run([str(tune), "run", *launch, "tests/assets/echo_recipe.py", "--config", "tests/assets/echo.yaml",
              f"output_dir={out}"], repo_root)
    assert p.returncode == 0, p.stderr
    recs = [json.loads((out / f"rank{r}.json").read_text()) for r in range(nproc)]
    assert all(r["cfg"]["scale"] == 2.5 and r["world"] == nproc for r in recs)


def test_tune_run_launches_a_repo_recipe_with_the_repo_on_pythonpath(tmp_path, repo_root, data_dir):
    # torchtune's wheel installs a top-level `recipes` package that raises on import; with the
    # repository root first on PYTHONPATH, our recipes/ package is found instead.
    tune = Path(sys.executable).parent / "tune"
    if not tune.exists():
        pytest.skip("torchtune's `tune` is not installed in this environment")
    out = tmp_path / "o"
    p = _run([str(tune), "run", "recipes/ift_build.py", "--config", "configs/tiny/ift_build.yaml",
              f"output_dir={out}", "limit=5"], repo_root, env={"PYTHONPATH": str(repo_root), "PSR_DATA_DIR": str(data_dir)})
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads((out / "summary.json").read_text())["n_accepted"] == 5


def test_bad_config_key_fails_with_one_line_error(tmp_path, repo_root):
    p = _run([sys.executable, str(ECHO), "--config", str(ASSETS / "echo_bad.yaml"), f"output_dir={tmp_path}"], repo_root)
    assert p.returncode == 2
    assert "echo_bad.yaml: unknown key 'scael'" in p.stderr and "Traceback" not in p.stderr
    assert not list(tmp_path.iterdir())  # nothing ran


def test_ls_lists_recipes_with_configs(capsys):
    assert cli.main(["ls"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("RECIPE")
    for recipe, configs in cli.list_recipes().items():
        assert recipe in out
        for c in configs:
            assert c in out


def test_cp_copies_and_refuses_to_overwrite(tmp_path, capsys):
    dest = tmp_path / "my_echo.py"
    assert cli.main(["cp", str(ECHO), str(dest)]) == 0
    assert dest.read_text() == ECHO.read_text()
    dest.write_text("# my edits\n")
    assert cli.main(["cp", str(ECHO), str(dest)]) == 2
    assert dest.read_text() == "# my edits\n"  # nothing already written is lost
    assert "exists" in capsys.readouterr().err


def test_unknown_recipe_and_command():
    assert cli.main(["run", "no_such_recipe"]) == 2
    assert cli.main(["frobnicate"]) == 2

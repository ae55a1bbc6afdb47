"""The pipeline on clusters: per-stage launch templates (substitution, validation, print mode) and a
stage launched as two torchrun agents on this machine as two "nodes" (slow)."""

import json
import os
import shlex
import sys
import time
from pathlib import Path

import pytest

from fakes import run_cmd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def _run(args, timeout=600):
    return run_cmd([sys.executable, "-m", "psr.cli", "run", "pipeline", *args], timeout, cwd=REPO)


def _cfg(tmp_path, *overrides, family="smollm2_135m"):
    from psr.config import load_config
    from recipes.pipeline import PipelineConfig

    return load_config(PipelineConfig, str(REPO / f"configs/{family}/pipeline.yaml"),
                       [f"output_dir={tmp_path / 'run'}", "base_model=/m/smol", "questions=q.jsonl", *overrides])


def test_template_fills_stage_recipe_quoted_args_and_a_free_port(tmp_path):
    from recipes.pipeline import fill_template

    cmd = fill_template("srun --job-name {stage} {python} -m torch.distributed.run --rdzv_endpoint h:{port} "
                        "--rdzv_id {stage} {recipe} {args} ; echo ${{HOME}}",
                        stage="dpo_2", recipe="step_dpo", args=["--config", "a b/c", "x=[1, 2]"])
    words = shlex.split(cmd)
    assert words[:3] == ["srun", "--job-name", "dpo_2"] and words[3] == sys.executable
    port = int(words[7].split(":")[1])
    assert 1024 <= port <= 65535 and words[7] == f"h:{port}"
    assert words[9] == "dpo_2" and words[10] == str(REPO / "recipes" / "step_dpo.py")
    assert words[11:14] == ["--config", "a b/c", "x=[1, 2]"]  # quoted: each argument arrives whole
    assert cmd.endswith(" ; echo ${HOME}")  # {{ }} are literal braces


def test_stage_spec_launch_wins_over_the_pipeline_kind_and_ift_build_stays_local(tmp_path):
    from recipes.pipeline import stage_template

    cfg = _cfg(tmp_path, "launch.train=T {recipe} {args}", "launch.generate=G {recipe} {args}",
               "dpo.launch=D {recipe} {args}")
    assert stage_template(cfg, cfg.sft, "eft_ift_sft") == "T {recipe} {args}"
    assert stage_template(cfg, cfg.prm, "prm_train") == "T {recipe} {args}"
    assert stage_template(cfg, cfg.dpo, "step_dpo") == "D {recipe} {args}"
    assert stage_template(cfg, cfg.search, "step_search") == "G {recipe} {args}"
    assert stage_template(cfg, cfg.eval, "eval") == "G {recipe} {args}"
    assert stage_template(cfg, cfg.eft, "eft_build") == "G {recipe} {args}"
    assert stage_template(cfg, cfg.ift, "ift_build") is None
    assert stage_template(_cfg(tmp_path), cfg.sft, "eft_ift_sft") is None  # no template: psr run + launcher


@pytest.mark.parametrize("override,message", [
    ("launch.train=srun {recipe} {args} {nodes}", "launch.train: unknown placeholder {nodes}"),
    ("search.launch=srun --rdzv_endpoint $HEAD:29500 --x {{a}} {recipe} {args}", None),  # {{ }}: literal
    ("search.launch=srun --rdzv_endpoint $HEAD:{port} {recipe} {args} {x}", "search.launch: unknown placeholder {x}"),
    ("eval.launch=srun {recipe}", "eval.launch: the template must contain {args}"),
    ("launch.generate=srun {recipe {args}", "launch.generate: bad template"),
    ("launch.gen=srun {recipe} {args}", "launch.gen: unknown stage kind"),
])
def test_bad_templates_are_refused_before_any_stage_with_the_key(tmp_path, override, message):
    from psr.config import ConfigError
    from recipes.pipeline import check_templates

    cfg = _cfg(tmp_path, override)
    if message is None:
        check_templates(cfg)
        return
    with pytest.raises(ConfigError) as e:
        check_templates(cfg)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_bad_template_on_the_command_line_exits_2_and_runs_nothing(tmp_path):
    p = _run(["--config", "smollm2_135m/pipeline", f"output_dir={tmp_path / 'run'}", "base_model=/m", "questions=q.jsonl",
              "launch.train=srun {recipe} {args} {nnodes}"])
    assert p.returncode == 2 and "launch.train: unknown placeholder {nnodes}" in p.stderr
    assert not (tmp_path / "run").exists()


def test_print_commands_prints_every_stage_and_runs_or_marks_nothing(tmp_path):
    p = _run(["--config", "smollm2_135m/pipeline", f"output_dir={tmp_path / 'run'}", "base_model=/m/smol",
              "questions=q.jsonl", "iterations=2", "print_commands=true",
              "launch.train=srun -N 4 {python} -m torch.distributed.run --rdzv_id {stage} {recipe} {args}",
              "search.launch=srun -N 4 --ntasks-per-node 1 {python} {recipe} {args} backend_kwargs.tensor_parallel_size=8"])
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.splitlines()
    stages = [l[2:].split()[0] for l in lines if l.startswith("# ") and not l.startswith("# in process")]
    assert stages == ["ift", "prm", "eft", "data", "m1", "search_1", "dpo_1", "search_2", "dpo_2",
                      "eval_M0", "judge_M0", "eval_M1", "judge_M1", "tts_M1", "eval_M2", "judge_M2", "tts_M2",
                      "eval_M3", "judge_M3", "tts_M3", "report"]
    cmd = {s: lines[lines.index(f"# {s}") + 1] for s in stages}
    run = tmp_path / "run"
    # ift_build has no template: the local psr run command
    assert shlex.split(cmd["ift"])[1:6] == ["-m", "psr.cli", "run", "ift_build", "--config"]
    dpo = shlex.split(cmd["dpo_2"])
    assert dpo[:4] == ["srun", "-N", "4", sys.executable] and dpo[6:8] == ["--rdzv_id", "dpo_2"]
    assert dpo[8] == str(REPO / "recipes" / "step_dpo.py")
    assert dpo[9:13] == ["--config", "smollm2_135m/step_dpo", f"output_dir={run / 'stages' / 'dpo_2'}",
                          f"model_dir={run / 'stages' / 'dpo_1' / 'final'}"]
    search = shlex.split(cmd["search_2"])
    assert search[-1] == "backend_kwargs.tensor_parallel_size=8" and f"questions={run / 'data' / 'iter2_questions.jsonl'}" in search
    # eval has no template here: the local psr run command
    ev = shlex.split(cmd["eval_M1"])
    assert ev[1:4] == ["-m", "psr.cli", "run"] and ev[ev.index("--config") - 1] == "eval" and "mode=greedy" in ev
    assert not run.exists()  # nothing written, no stage marked done


@pytest.mark.slow
def test_a_stage_launched_as_two_torchrun_agents_on_two_nodes_trains_and_a_failing_agent_fails_it(tmp_path):
    from psr.models.tiny import build_tiny_model_dir
    from psr.testing import write_tiny_sft_data
    from psr.training.metrics import read_metrics
    from recipes.pipeline import Pipeline, StageError

    build_tiny_model_dir(tmp_path / "model", seed=0)
    write_tiny_sft_data(tmp_path / "data", seed=0)
    agent = ("{python} -m torch.distributed.run --nnodes 2 --nproc_per_node 1 --rdzv_backend c10d "
             "--rdzv_endpoint 127.0.0.1:{port} --rdzv_id {stage} --max_restarts 0 {recipe} {args}")
    # two "nodes": both agents in the background, each one waited for by its pid (bash -e: the
    # first failing wait fails the stage)
    template = f"{agent} & a=$!; {agent} & b=$!; wait $a; wait $b"
    os.environ["OMP_NUM_THREADS"] = "1"
    common = ["tiny=false", "epochs=1", "batch_size=8", "micro_batch_size=4", "progress_bar=false"]
    cfg = _cfg(tmp_path, "sft.config=tiny/eft_ift_sft", f"sft.overrides=[{','.join(common)}]")
    cfg.sft.launch = template  # as a YAML config would set it
    p = Pipeline(cfg)
    inputs = [f"model_dir={tmp_path / 'model'}", f"ift_data={tmp_path / 'data' / 'ift.jsonl'}",
              f"eft_data={tmp_path / 'data' / 'eft.jsonl'}"]
    p.run_recipe("m1", "eft_ift_sft", cfg.sft, inputs, resume_key="resume_from_checkpoint")
    out = p.stages / "m1"
    assert p.done("m1")
    losses = [r["loss"] for r in read_metrics(out / "metrics.jsonl")]
    assert len(losses) == 8 and all(l > 0 for l in losses)  # 64 records / batch 8, one epoch
    assert json.loads((out / "final" / "config.json").read_text())["architectures"] == ["Qwen2ForCausalLM"]
    log = (p.logs / "m1.log").read_text()
    assert "--rdzv_id m1" in log and log.count("--nnodes 2") == 2
    # a failing agent fails the stage: node 0's agent dies at once; node 1's, left waiting for its
    # rendezvous, is terminated with the stage (its pid is dead afterwards), and nothing is marked done
    pidfile = tmp_path / "b.pid"
    bad = f"{{python}} -m torch.distributed.run --no_such_option & a=$!; {agent} & b=$!; echo $b > {pidfile}; wait $a; wait $b"
    cfg.sft.launch = bad
    t0 = time.time()
    with pytest.raises(StageError, match=r"stage m1_bad \(eft_ift_sft\) failed"):
        p.run_recipe("m1_bad", "eft_ift_sft", cfg.sft, inputs)
    assert time.time() - t0 < 120 and not p.done("m1_bad")
    with pytest.raises(ProcessLookupError):
        os.kill(int(pidfile.read_text()), 0)

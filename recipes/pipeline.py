"""pipeline: the whole Process-based Self-Rewarding loop, M0 → M1 → … → M_{n+1}, with a report.

Launch (from the repository root):

    psr run pipeline --config arith/pipeline output_dir=/tmp/psr_arith        # the main job, 2 CPU cores
    psr run pipeline --config arith/pipeline output_dir=/tmp/psr_arith iterations=1   # a shorter loop
    python recipes/pipeline.py --config configs/arith/pipeline.yaml output_dir=/tmp/psr_arith

Every stage runs one of the real recipes as its own process (``python -m psr.cli run <recipe>
--config <stage config> key=value ...``), with the stage config's path and overrides taken from
this config, its log in ``output_dir/logs/<stage>.log``:

1. ``data``      the arith world (psr.arith): train/test problems from disjoint seeds (the test
                 split also has longer problems), IFT and EFT records built with the exact checker
                 and templated teacher explanations, free-form solutions for M0, N_i new questions
                 per iteration, and the randomly initialised model dir (in process, no recipe).
2. ``m0``        eft_ift_sft on free-form solutions (text records): a base model with some skill,
                 but neither the step format nor the judge role.
3. ``m1``        eft_ift_sft on IFT + EFT from M0 → M1.
4. for i in 1..iterations: ``search_i`` step_search with M_i judging its own candidates on the
                 iteration's questions → pairs; ``dpo_i`` step_dpo on those pairs → M_{i+1}. The
                 checker is never used inside this loop.
5. ``eval_M<k>`` the eval recipe on every model: greedy accuracy on the held-out split, judge
                 accuracy on the held-out EFT set, and (M1 on) test-time-scaling accuracy;
                 ``headroom_M<k>`` (arith, M1 on): of the greedy failures, those with a correct
                 candidate among the search's w samples at their first wrong step.
6. ``report``    report.md (tables shaped like the paper's Tables 1, 3, 4, 5, plus the search
                 statistics and pair quality measured with the checker) and PNG plots.

With ``source: recipes`` (``configs/{smollm2_135m,qwen2_5_math_7b,qwen2_5_math_72b}/pipeline.yaml``)
the same loop runs on real data: M0 is the pretrained ``base_model``; stages ``ift`` (ift_build),
``prm`` (prm_train) and ``eft`` (eft_build: the PRM-scored tree search, judged by the teacher
endpoint of the eft config) replace ``data`` and ``m0``; ``questions`` (required; the 7B/72B
configs pass it to ift_build and eft_build as their ``input``) is the question source, and the
iterations draw theirs from it by a seeded shuffle, leaving out every IFT/EFT question
(``data/questions_summary.json``). One PRM serves both sizes as in the paper (``prm_base``, or an
existing ``prm_model`` dir), and one EFT set can be reused (``eft_dir``: no prm/eft stages); eval uses the eval config's benchmarks, and the report has no pair quality
(there is no checker).

``method: srlm`` runs the SRLM baseline (Yuan et al. 2024; the paper's Tables 1-2 compare PSRLM
with it) through the same stages, questions and seeds: ``search_i`` runs recipes/srlm_search.py
(config ``srlm``: N whole solutions per question, each scored by the model with Yuan et al.'s
additive 5-point prompt, highest- vs lowest-scoring solution as the pair) instead of step_search,
and ``dpo_i`` is the same step_dpo on those pairs (a whole response is one "step" after the
question). The SRLM M1 is M0 after the same SFT on the same IFT data plus EFT of the scoring
prompt instead of the step-wise pairwise one, as Yuan et al. initialise M1 on IFT + EFT of their
own judge prompt. The paper (§4-5.1) says only that SRLM uses Yuan et al.'s prompt and that the
two methods' M1s differ because their EFT data differ; where it is silent this pipeline chooses:
the scoring EFT is made from the same problems as the step-wise EFT (arith: ``data/srlm_eft_train
.jsonl``, per EFT problem one reference solution and one with a wrong step carried through, graded
by the exact checker: 5 points when correct, 2 when wrong, psr.arith.data.srlm_scoring_items), so
both M1s see as many judge records; the SFT settings are the same (``sft``); judge_M<k> measures
each method's own judge on its own held-out judge data (SRLM: eval ``mode=score`` on
``data/srlm_eft_test.jsonl``). ``source: recipes`` with ``method: srlm`` takes that data as
``srlm_eft_data`` (eft_ift_sft TEXT records of the scoring prompt, e.g. written by
psr.srlm.templated_scoring_records from PRM- or teacher-graded solutions) and ``srlm_eft_test``.
``python -m psr.report compare <psr run> <srlm run>`` puts two runs' reports side by side.

``checker_judge=true`` is a diagnostic, not the paper's method: the exact checker judges the
iterations' candidates (step_search ``checker_judge_problems``), so the report shows what search +
DPO do with a perfect judge. Copy a run's ``data`` and ``stages/{m0,m1}*`` into a new output_dir to
reuse its M1.

Several nodes: each stage is one command. Without a template it is ``psr run [launcher] <recipe>
--config ... key=value ...`` on this machine (``launcher``: torchrun options). On a cluster every
node must start a torchrun agent for each stage, so give a command template, a bash command with
placeholders, per stage kind (``launch.train``: eft_ift_sft, prm_train, step_dpo; ``launch.generate``:
step_search, eval, eft_build) or per stage spec (``search: {config, overrides, launch}``, which wins;
ift_build only calls the teacher and runs locally unless its spec has one):

    {stage}   the stage's name (m1, search_2, eval_M3, ...): a unique ``--rdzv_id``
    {recipe}  the path of recipes/<recipe>.py
    {args}    the recipe's shell-quoted arguments (--config <stage config> output_dir=... key=value ...)
    {port}    a free port on this machine (rendezvous of local test "nodes")
    {python}  this interpreter

e.g. for Slurm, 72B (4 nodes x 8 GPUs per training stage; 4 nodes x 1 rank per generation stage, each
rank one vLLM engine with backend_kwargs.tensor_parallel_size=8):

    launch:
      train: srun --nodes 4 --ntasks-per-node 1 python -m torch.distributed.run --nnodes 4 --nproc_per_node 8
             --rdzv_backend c10d --rdzv_endpoint $HEAD:29500 --rdzv_id {stage} {recipe} {args}
      generate: srun --nodes 4 --ntasks-per-node 1 python -m torch.distributed.run --nnodes 4 --nproc_per_node 1
             --rdzv_backend c10d --rdzv_endpoint $HEAD:29500 --rdzv_id {stage} {recipe} {args}

The command runs with ``bash -e -o pipefail -c``; its exit status is the stage's. Agents started in the
background must each be waited for by pid (``A & a=$!; B & b=$!; wait $a; wait $b``: a bare ``wait``
always succeeds); when the command fails, what it left running (its process group) is terminated. A
literal brace is ``{{``/``}}``; write shell variables as ``$HEAD``, not ``${HEAD}`` (OmegaConf
interpolation). Every template is checked before any stage runs (an unknown placeholder or one without
{recipe}/{args} is refused, naming the key). ``print_commands=true`` prints each stage's command
(``# <stage>`` then the command; ``(done)`` for finished ones) and runs, writes and marks nothing:
paste them into a job script to run the stages by hand.

Re-running the same command skips finished stages (``output_dir/stages/<stage>.done``); a stage
killed midway is run again with the recipe's own resume (training recipes continue their
checkpoint, search and eval skip finished ids). ``output_dir/manifest.json`` records the
pipeline's settings (psr/outputs.py; ``iterations`` may grow): a re-run with other ones is refused
with the keys that differ (``overwrite=true`` starts over), and every stage's own manifest
refuses to mix a different run into its dir.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import string
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, OmegaConf
from tqdm import tqdm

from psr import outputs as O
from psr.config import ConfigError, merge_checked, recipe_main, settings
from psr.data.jsonl import read_jsonl, write_jsonl
from psr.search import SearchConfig  # torch-free: the search stage's defaults


# Worlds generated here, each with an exact step checker (psr.<name>); the rest is source=recipes.
EMBEDDED_WORLDS = ("arith", "bags")


class StageError(RuntimeError):
    """A stage's recipe failed; the message names the stage, its log and the log's tail."""


@dataclass
class PipelineConfig(O.RunKeys):
    output_dir: str = MISSING
    seed: int = 0
    # Where M0 and the SFT data come from:
    #   arith    the embedded world (keys world, model, m0): data generated here, M0 trained here;
    #   bags     the second embedded world (psr.bags, docs/bags.md: pairing items to a target, steps
    #            easier to check than to produce), the same keys and stages as arith, plus eft_sample:
    #            EFT from M0's own sampled wrong steps (world.eft_sample);
    #   recipes  real data and a pretrained M0 (keys base_model, ift, prm, eft, questions): IFT from
    #            ift_build, a PRM from prm_train, EFT from eft_build (PRM-scored tree search + a
    #            teacher endpoint), the paper's M0 -> M1 on real datasets.
    source: str = "arith"
    # psr: the paper's process-based self-rewarding (step_search -> step_dpo); srlm: the SRLM
    # baseline (srlm_search -> step_dpo on whole responses; its M1 trained on IFT + scoring EFT).
    # See the module docstring.
    method: str = "psr"
    # method=srlm: the srlm_search stage, {config, overrides} like the stages below.
    srlm: Any = field(default_factory=lambda: {"config": "arith/srlm_search", "overrides": []})
    # method=srlm with source=recipes: the SRLM M1's scoring EFT (eft_ift_sft TEXT records) and the
    # held-out scoring items {id, question, solution, correct} of judge_M<k> (eval mode=score).
    # source=arith writes both into data/.
    srlm_eft_data: Optional[str] = None
    srlm_eft_test: Optional[str] = None
    # source=recipes: M0, an HF model dir or hub id.
    base_model: Optional[str] = None
    # source=recipes: the data stages, {config, overrides} like the stages below. eft_build gets
    # policy.model_dir=<base_model> and prm.model_dir=<the prm stage's model> from here.
    ift: Any = field(default_factory=lambda: {"config": None, "overrides": []})
    prm: Any = field(default_factory=lambda: {"config": None, "overrides": []})
    eft: Any = field(default_factory=lambda: {"config": None, "overrides": []})
    # source=recipes: the PRM that scores eft_build's search. The paper trains one PRM (Qwen2.5-72B on
    # PRM800K) and uses it for both model sizes. prm_base: the model the prm stage trains from
    # (passed as its model_dir=; null: the prm stage config's own); prm_model: an existing PRM dir
    # (prm_train's final/, e.g. another family's run): no prm stage.
    prm_base: Optional[str] = None
    prm_model: Optional[str] = None
    # source=recipes: an existing eft_build output dir (eft_train.jsonl, eft_test.jsonl), e.g. the
    # other family's stages/eft: no prm and eft stages; M1 trains on it and judge_M<k> tests on it.
    eft_dir: Optional[str] = None
    # source=recipes: the iterations' questions, a jsonl of {id, problem} records (path, or
    # relative to data_dir), required: the iterations draw sum(questions_per_iteration) of them by a
    # shuffle with `seed`, leaving out every question the ift and eft stages used (counts in
    # data/questions_summary.json); iteration i takes the next questions_per_iteration[i-1].
    questions: Optional[str] = None
    # source=recipes: skip this many records of `questions` first (e.g. those ift_build used).
    questions_offset: int = 0
    # Where relative questions paths are looked up (null: $PSR_DATA_DIR, else ../shared/data;
    # psr.data.paths).
    data_dir: Optional[str] = None
    # Self-rewarding iterations after M1 (the paper: 3, giving M2, M3, M4).
    iterations: int = 3
    # New questions per iteration (the paper: 400 / 800 / 1,200); one entry per iteration.
    questions_per_iteration: list = field(default_factory=lambda: [100, 200, 300])
    # [min, max] operations of the iterations' questions (null: world.train_ops). Self-rewarding
    # only learns where the model still errs: on questions it already solves, the w candidates are
    # correct rewordings of one another and the (best, worst) pairs carry no correctness signal.
    iteration_ops: Optional[list] = None
    # The arith world: psr.arith.write_initial_data arguments.
    world: Any = field(default_factory=lambda: {"n_train": 2000, "n_test": 300, "train_ops": [2, 4],
                                                "test_ops": [2, 6], "eft_pairs_per_problem": 1})
    # Model size overrides for psr.arith.ArithModelConfig (null: configs/arith/model.yaml).
    model: Any = field(default_factory=dict)
    # Stage configs: {config: <family/recipe or path>, overrides: [key=value, ...]} per stage kind.
    m0: Any = field(default_factory=lambda: {"config": "arith/m0", "overrides": []})
    sft: Any = field(default_factory=lambda: {"config": "arith/eft_ift_sft", "overrides": []})
    search: Any = field(default_factory=lambda: {"config": "arith/step_search", "overrides": []})
    dpo: Any = field(default_factory=lambda: {"config": "arith/step_dpo", "overrides": []})
    eval: Any = field(default_factory=lambda: {"config": "arith/eval", "overrides": []})
    # source=recipes, method=psr: M0's judge is evaluated with this many solved examples from the EFT
    # train set before each item (eval judge_shots; the paper's Table 3 evaluates M0 3-shot: the
    # base model has never seen the judge format). source=arith always evaluates 0-shot: the arith
    # M0 is a ~1M-parameter model trained from scratch on free-form solutions, which does not learn
    # in context, and 3 derive-style examples (~120 tokens each) + the item overflow its 512 positions.
    m0_judge_shots: int = 3
    # Items per benchmark of the test-time-scaling evaluation (null: the whole benchmarks, as the
    # paper's Tables 5/9; the arith and smollm2 configs set a limit for their CPU budgets).
    tts_limit: Optional[int] = None
    # Evaluate test-time scaling for M1 and later (it is the most expensive evaluation).
    eval_tts: bool = True
    # source=arith, M1 and later: how many greedy failures on the held-out split have a correct
    # candidate among the search's w samples at their first wrong step (psr.arith.headroom): what a
    # perfect judge could pick from. ~5 s per model.
    eval_headroom: bool = True
    # Diagnostic (source=arith only), never the paper's method: the exact checker judges the
    # iterations' candidates instead of the model (step_search checker_judge_problems), so the
    # report shows what search + DPO do when the judge is perfect. Use its own output_dir.
    checker_judge: bool = False
    # Extra torchrun options for every stage run locally, e.g. ["--nproc_per_node", "2"] (empty: one
    # process). A stage with a launch template (below) ignores them.
    launcher: list = field(default_factory=list)
    # Command templates for clusters (see "Several nodes" in the module docstring): a bash command per
    # stage kind, `train` (eft_ift_sft, prm_train, step_dpo) and `generate` (step_search, eval,
    # eft_build); null: run locally with `launcher`. A stage spec's own `launch` key wins over these.
    launch: Any = field(default_factory=lambda: {"train": None, "generate": None})
    # Print each stage's command instead of running it (nothing is run, written or marked done).
    print_commands: bool = False


class Pipeline:
    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.out = Path(cfg.output_dir).resolve()
        self.data = self.out / "data"
        self.stages = self.out / "stages"
        self.logs = self.out / "logs"
        if not cfg.print_commands:  # print_commands writes nothing
            for d in (self.data, self.stages, self.logs):
                d.mkdir(parents=True, exist_ok=True)
        self.timings: dict[str, float] = self._load_timings()

    # ----------------------------------------------------------------- bookkeeping
    def _load_timings(self) -> dict[str, float]:
        p = self.out / "timings.json"
        return json.loads(p.read_text()) if p.exists() else {}

    def done(self, stage: str) -> bool:
        return (self.stages / f"{stage}.done").exists()

    def mark(self, stage: str, seconds: float) -> None:
        self.timings[stage] = round(seconds, 1)
        (self.out / "timings.json").write_text(json.dumps(self.timings, indent=1))
        (self.stages / f"{stage}.done").write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))

    @property
    def arith(self) -> bool:
        """An embedded world (arith or bags): data and M0 made here, an exact step checker."""
        return self.cfg.source in EMBEDDED_WORLDS

    @property
    def bags(self) -> bool:
        return self.cfg.source == "bags"

    def model(self, k: int) -> Path | str:
        """The HF model dir of M_k (M0 of source=recipes: base_model, possibly a hub id)."""
        if k == 0:
            return self.stages / "m0" / "final" if self.arith else self.cfg.base_model
        if k == 1:
            return self.stages / "m1" / "final"
        return self.stages / f"dpo_{k - 1}" / "final"

    def run_recipe(self, stage: str, recipe: str, spec: Any, overrides: list[str], resume_key: Optional[str] = None) -> None:
        """Run ``recipe`` as its own process for ``stage`` unless the stage is done: through the
        stage's launch template when it has one, else ``psr run [launcher] <recipe> ...``."""
        stage_out = self.stages / stage
        rargs = ["--config", str(spec.config), f"output_dir={stage_out}", *overrides, *[str(o) for o in spec.overrides]]
        if resume_key and stage_out.exists() and any(stage_out.iterdir()):
            rargs.append(f"{resume_key}=true")
        template = stage_template(self.cfg, spec, recipe)
        if template is None:
            args = [sys.executable, "-m", "psr.cli", "run", *self.cfg.launcher, recipe, *rargs]
            if self.cfg.print_commands:
                return self.print_command(stage, shlex.join(args))
            if self.done(stage):
                return
            return self.run_process(stage, recipe, args)
        cmd = fill_template(template, stage=stage, recipe=recipe, args=rargs)
        if self.cfg.print_commands:
            return self.print_command(stage, cmd)
        if not self.done(stage):
            self.run_process(stage, recipe, ["bash", "-e", "-o", "pipefail", "-c", cmd], shown=cmd)

    def print_command(self, stage: str, cmd: str) -> None:
        """print_commands=true: the stage's command, marked when the stage is already done."""
        print(f"# {stage}{' (done)' if self.done(stage) else ''}\n{cmd}", flush=True)

    def run_process(self, stage: str, what: str, args: list[str], shown: Optional[str] = None) -> None:
        """Run ``args`` for ``stage`` with its output in the stage's log; mark the stage done. The
        command runs in its own process group; when it fails, what it left running (e.g. the other
        torchrun agents of a launch template) is terminated with it."""
        t0 = time.time()
        log = self.logs / f"{stage}.log"
        with log.open("a") as f:
            f.write(f"\n$ {shown or ' '.join(args)}\n")
            f.flush()
            proc = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
            try:
                rc = proc.wait()
            except BaseException:
                _kill_group(proc.pid)
                raise
            if rc != 0:
                _kill_group(proc.pid)
        if rc != 0:
            tail = "".join(log.read_text().splitlines(keepends=True)[-25:])
            raise StageError(f"stage {stage} ({what}) failed with exit code {rc}; log: {log}\n{tail}")
        self.mark(stage, time.time() - t0)

    # ----------------------------------------------------------------- stages
    def stage_data(self) -> None:
        if not self.arith:
            return self.stage_real_data()
        if self.cfg.print_commands:
            return self.print_command("data", f"# in process: the {self.cfg.source} world's data and initial model (psr.{self.cfg.source})")
        if self.done("data"):
            if self.srlm and not (self.data / "srlm_eft_train.jsonl").exists():
                self.write_srlm_data()
            return self.check_judge_budgets()  # the stage configs may have changed since
        t0 = time.time()
        if self.bags:
            return self.stage_bags_data(t0)
        from psr.arith import build_model_dir, generate_problems, load_model_config, write_initial_data
        from psr.arith.problems import NumberRanges, dedup_questions

        w = OmegaConf.to_container(self.cfg.world, resolve=True)
        paths = write_initial_data(self.data, seed=self.cfg.seed, **w)
        # the iterations' questions are new: not in test, not in the SFT data, no repeats
        old_q = {r["question"] for name in ("problems_test", "problems_train", "problems_eft") if name in paths
                 for r in read_jsonl(paths[name])}
        ranges, wordings = NumberRanges.of(w.get("ranges")), int(w.get("step_wordings", 3))
        ops = self.cfg.iteration_ops or w.get("train_ops", [2, 4])
        for i, n in enumerate(self.cfg.questions_per_iteration, 1):  # all of them: a later run may add iterations
            probs = generate_problems(int(n) * 2, self.cfg.seed, f"iter{i}", int(ops[0]), int(ops[1]), ranges, wordings)
            fresh = dedup_questions(probs, old_q)[: int(n)]
            write_jsonl(self.data / f"iter{i}_problems.jsonl", [p.to_dict() for p in fresh])
            write_jsonl(self.data / f"iter{i}_questions.jsonl", [{"id": p.id, "problem": p.question} for p in fresh])
        # the held-out split as a local benchmark file for the eval recipe
        (self.data / "arith").mkdir(exist_ok=True)
        write_jsonl(self.data / "arith" / "test.jsonl", read_jsonl(paths["benchmark_test"]))
        # M0 text records: question -> free-form solution, no chat template (a base model)
        write_jsonl(self.data / "m0_text.jsonl",
                    [{"id": r["id"], "prompt": r["question"] + "\n", "response": r["solution"]}
                     for r in read_jsonl(paths["m0_train"])])
        mcfg = load_model_config(None, **OmegaConf.to_container(self.cfg.model, resolve=True))
        build_model_dir(self.data / "init_model", mcfg)
        if self.srlm:
            self.write_srlm_data()
        self.mark("data", time.time() - t0)
        self.check_judge_budgets()

    @property
    def srlm(self) -> bool:
        return self.cfg.method == "srlm"

    def write_srlm_data(self) -> None:
        """arith, method=srlm: the SRLM M1's scoring EFT and its held-out scoring items
        (psr.arith.data.write_srlm_scoring_data, from the same problems as the step-wise EFT)."""
        from psr.arith.data import write_srlm_scoring_data
        from psr.models.hf import load_tokenizer

        w = OmegaConf.to_container(self.cfg.world, resolve=True)
        write_srlm_scoring_data(self.data, load_tokenizer(str(self.data / "init_model")), seed=self.cfg.seed,
                                pairs_per_problem=int(w.get("eft_pairs_per_problem", 1)),
                                n_eft_train_problems=w.get("n_eft_train_problems"))

    def stage_bags_data(self, t0: float) -> None:
        """source=bags: the same files as the arith data stage, from psr.bags (psr/bags/pipeline.py)."""
        from psr.bags.pipeline import write_pipeline_data

        w = OmegaConf.to_container(self.cfg.world, resolve=True)
        w.pop("eft_sample", None)
        write_pipeline_data(self.data, w, self.cfg.seed, self.cfg.questions_per_iteration, self.cfg.iteration_ops,
                            OmegaConf.to_container(self.cfg.model, resolve=True))
        self.mark("data", time.time() - t0)
        self.check_judge_budgets()

    def stage_eft_sample(self) -> None:
        """source=bags with world.eft_sample: EFT from M0's own sampled wrong steps on the training
        problems (python -m psr.bags eft-sample) -> stages/eft_sample/eft_sampled.jsonl."""
        opts = self.cfg.world.get("eft_sample")
        if not self.bags or not opts:
            return
        stage = "eft_sample"
        args = [sys.executable, "-m", "psr.bags", "eft-sample", "--model", str(self.model(0)),
                "--problems", str(self.data / "problems_train.jsonl"), "--out", str(self.stages / stage),
                "--seed", str(self.cfg.seed), *[f"--{str(k).replace('_', '-')}={v}" for k, v in opts.items()]]
        if self.cfg.print_commands:
            return self.print_command(stage, shlex.join(args))
        if not self.done(stage):
            self.run_process(stage, "psr.bags eft-sample", args)

    def check_judge_budgets(self) -> None:
        """Fail before any training when a judge token budget of the search or eval stages is
        shorter than the world's EFT judgments (+1 for EOS): the model's verdicts would be cut
        off before ``[[A]]``/``[[B]]`` and count as unparseable. Measured: the default world's
        longest judgment is 77 tokens (the configs give 80); ``judge_style: worked`` with 4-operation
        training problems wrote 88."""
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(self.data / "init_model" / "tokenizer.json"))
        if self.srlm:  # the scoring judgments of the SRLM M1's EFT (srlm_search and eval mode=score)
            texts = [r["response"] for r in read_jsonl(self.data / "srlm_eft_train.jsonl")]
            checks = (("srlm", "search.max_new_tokens_judge"), ("eval", "judge_max_new_tokens"))
        else:
            texts = [r["judgment"] for name in ("eft_train", "eft_test") for r in read_jsonl(self.data / f"{name}.jsonl")]
            checks = (("search", "search.max_new_tokens_judge"), ("eval", "judge_max_new_tokens"),
                      ("eval", "tts.max_new_tokens_judge"))
        if not texts:
            return
        need = max(len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)) + 1
        configs = {stage: self.stage_config(self.cfg[stage]) for stage in {s for s, _ in checks}}
        for stage, key in checks:
            have = OmegaConf.select(configs[stage], key)
            if have is None and key.endswith(".max_new_tokens_judge"):  # left out: the library's default
                from psr.srlm import SRLMConfig

                have = SRLMConfig.max_new_tokens_judge if stage == "srlm" else SearchConfig.max_new_tokens_judge
            if have is not None and int(have) < need:
                raise ConfigError(
                    f"{stage}: {key}={have} is shorter than the longest EFT judgment of {self.data} ({need - 1} tokens "
                    f"+ EOS): the judge's verdicts would be cut off; add {key}={need} to {stage}.overrides")

    def stage_real_data(self) -> None:
        """source=recipes: IFT (ift_build), the PRM (prm_train), EFT (eft_build with that PRM and
        the eft config's teacher), and the iterations' questions sliced from ``questions``."""
        c = self.cfg
        self.run_recipe("ift", "ift_build", c.ift, [])
        if not c.eft_dir:  # a reused EFT set needs neither the PRM nor the search
            if not c.prm_model:
                self.run_recipe("prm", "prm_train", c.prm, [f"model_dir={c.prm_base}"] if c.prm_base else [],
                                resume_key="resume_from_checkpoint")
            self.run_recipe("eft", "eft_build", c.eft, [f"policy.model_dir={self.model(0)}", f"prm.model_dir={self.prm_dir()}"])
        if self.cfg.print_commands:
            return self.print_command("data", f"# in process: the iterations' questions from {c.questions}")
        if self.done("data"):
            return
        from psr.data.paths import resolve_data_path

        path = resolve_data_path(c.questions, c.data_dir, key="questions")
        from psr.data.numina import sample_questions

        recs = [dict(r, id=str(r.get("id", f"q{j}"))) for j, r in
                enumerate(read_jsonl(path, required=("problem",)))][c.questions_offset:]
        need = sum(int(n) for n in c.questions_per_iteration[: c.iterations])
        used = self.sft_questions()
        try:
            sample, counts = sample_questions(recs, need, c.seed, exclude=used)
        except ValueError as e:
            raise ConfigError(f"questions: {path} after questions_offset={c.questions_offset}: {e} "
                              f"(questions_per_iteration needs {need})") from None
        start = 0
        for i, n in enumerate(c.questions_per_iteration[: c.iterations], 1):
            chunk = sample[start:start + int(n)]
            start += int(n)
            write_jsonl(self.data / f"iter{i}_questions.jsonl", [{"id": r["id"], "problem": r["problem"]} for r in chunk])
        summary = {"questions": str(path), "questions_offset": c.questions_offset, "seed": c.seed,
                   "sft_questions": len(used), **counts,
                   "per_iteration": [int(n) for n in c.questions_per_iteration[: c.iterations]]}
        (self.data / "questions_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        print(f"pipeline: iteration questions {json.dumps(summary)}", flush=True)
        self.mark("data", 0.0)

    def prm_dir(self) -> Path:
        """source=recipes: the PRM of eft_build (prm_model, else the prm stage's final/)."""
        return Path(self.cfg.prm_model) if self.cfg.prm_model else self.stages / "prm" / "final"

    def eft_dir(self) -> Path:
        """source=recipes: the EFT set (eft_dir, else the eft stage's output)."""
        return Path(self.cfg.eft_dir) if self.cfg.eft_dir else self.stages / "eft"

    def sft_questions(self) -> set[str]:
        """source=recipes: every question the IFT and EFT stages used (IFT accepted and rejected,
        EFT searched and kept), which the iterations must not ask again."""
        out: set[str] = set()
        files = [self.stages / "ift" / "ift.jsonl", self.stages / "ift" / "rejects.jsonl",
                 self.eft_dir() / "eft_train.jsonl", self.eft_dir() / "eft_test.jsonl",
                 *sorted((self.eft_dir() / "work").glob("trees.rank*.jsonl"))]
        for f in files:
            if f.exists():
                out.update(str(r["question"]) for r in read_jsonl(f) if r.get("question"))
        return out

    def sft_data(self) -> list[str]:
        if self.srlm:  # the same IFT data; the scoring prompt's EFT instead of the step-wise one
            ift = self.data / "ift_train.jsonl" if self.arith else self.stages / "ift" / "ift.jsonl"
            return [f"ift_data={ift}", f"text_data={self.srlm_eft_train()}"]
        if self.bags and self.cfg.world.get("eft_sample"):
            sampled = self.stages / "eft_sample" / "eft_sampled.jsonl"
            return [f"ift_data={self.data / 'ift_train.jsonl'}", f"eft_data=[{self.data / 'eft_train.jsonl'},{sampled}]"]
        if self.arith:
            return [f"ift_data={self.data / 'ift_train.jsonl'}", f"eft_data={self.data / 'eft_train.jsonl'}"]
        return [f"ift_data={self.stages / 'ift' / 'ift.jsonl'}", f"eft_data={self.eft_dir() / 'eft_train.jsonl'}"]

    def srlm_eft_train(self) -> Path:
        return self.data / "srlm_eft_train.jsonl" if self.arith else Path(self.cfg.srlm_eft_data)

    def srlm_eft_test(self) -> Path:
        return self.data / "srlm_eft_test.jsonl" if self.arith else Path(self.cfg.srlm_eft_test)

    def eft_train(self) -> Path:
        return self.data / "eft_train.jsonl" if self.arith else self.eft_dir() / "eft_train.jsonl"

    def eft_test(self) -> Path:
        return self.data / "eft_test.jsonl" if self.arith else self.eft_dir() / "eft_test.jsonl"

    def stage_train(self) -> None:
        c = self.cfg
        if self.arith:
            self.run_recipe("m0", "eft_ift_sft", c.m0,
                            [f"model_dir={self.data / 'init_model'}", f"text_data={self.data / 'm0_text.jsonl'}"],
                            resume_key="resume_from_checkpoint")
            self.stage_eft_sample()
        self.run_recipe("m1", "eft_ift_sft", c.sft, [f"model_dir={self.model(0)}", *self.sft_data()],
                        resume_key="resume_from_checkpoint")
        for i in range(1, c.iterations + 1):
            judge = [f"checker_judge_problems={self.data / f'iter{i}_problems.jsonl'}"] if c.checker_judge else []
            search_args = [f"model_dir={self.model(i)}", f"questions={self.data / f'iter{i}_questions.jsonl'}",
                           f"seed={c.seed + i}"]
            if self.srlm:  # the same questions and seed, whole solutions scored by the model
                self.run_recipe(f"search_{i}", "srlm_search", c.srlm, search_args)
            else:
                self.run_recipe(f"search_{i}", "step_search", c.search, [*search_args, *judge])
            pairs = self.stages / f"search_{i}" / "pairs.jsonl"
            if not self.cfg.print_commands and not self.done(f"dpo_{i}") and not read_jsonl(pairs):
                # No preference data (every round tied): nothing to optimise, M_{i+1} = M_i.
                print(f"pipeline: search_{i} produced no preference pairs; M{i + 1} = M{i} (see {self.logs / f'search_{i}.log'})",
                      flush=True)
                (self.stages / f"dpo_{i}").mkdir(parents=True, exist_ok=True)
                link = self.model(i + 1)
                if link.is_symlink() or link.exists():
                    link.unlink()
                link.symlink_to(self.model(i).resolve(), target_is_directory=True)
                self.mark(f"dpo_{i}", 0.0)
                continue
            self.run_recipe(f"dpo_{i}", "step_dpo", c.dpo, [f"model_dir={self.model(i)}", f"pairs={pairs}"],
                            resume_key="resume_from_checkpoint")

    def stage_eval(self) -> None:
        c = self.cfg
        for k in range(0, c.iterations + 2):
            m = self.model(k)
            # arith: the held-out split is a local benchmark; recipes: the eval config's benchmarks
            base = [f"model_dir={m}", *([f"data_dir={self.data}"] if self.arith else [])]
            bench = ["benchmarks=[arith]"] if self.arith else []
            self.run_recipe(f"eval_M{k}", "eval", c.eval, base + ["mode=greedy", *bench])
            if self.srlm:  # the SRLM judge: Yuan et al.'s scoring prompt on held-out graded solutions
                self.run_recipe(f"judge_M{k}", "eval", c.eval, base + ["mode=score", f"score_test={self.srlm_eft_test()}"])
            else:
                shots = []
                if k == 0 and not self.arith and c.m0_judge_shots:  # the paper: M0's judge 3-shot (Table 3)
                    shots = [f"judge_shots={c.m0_judge_shots}", f"judge_shots_from={self.eft_train()}"]
                self.run_recipe(f"judge_M{k}", "eval", c.eval, base + ["mode=judge", f"eft_test={self.eft_test()}", *shots])
            if c.eval_tts and k >= 1:
                lim = [f"limit={c.tts_limit}"] if c.tts_limit else []
                self.run_recipe(f"tts_M{k}", "eval", c.eval, base + ["mode=tts", *bench, *lim])
            if self.arith and c.eval_headroom and k >= 1:
                self.stage_headroom(k)
            if self.bags and c.eval_headroom and k == 1:
                self.stage_diagnose()

    def stage_diagnose(self) -> None:
        """diagnose_M1 (source=bags): the pre-registered diagnostics (a) headroom and (b) the
        generation-verification gap of M1 (python -m psr.bags diagnose; docs/bags.md)."""
        stage = "diagnose_M1"
        args = [sys.executable, "-m", "psr.bags", "diagnose", "--model", str(self.model(1)),
                "--problems", str(self.data / "problems_test.jsonl"), "--out", str(self.stages / stage),
                "--greedy", str(self.stages / "eval_M1" / "arith" / "items.jsonl"), "--seed", str(self.cfg.seed)]
        if self.cfg.print_commands:
            return self.print_command(stage, shlex.join(args))
        if not self.done(stage):
            self.run_process(stage, "psr.bags diagnose", args)

    @staticmethod
    def stage_config(spec: Any) -> Any:
        """A stage's YAML with its overrides merged in (no schema: a key both leave out is absent)."""
        from psr.config import resolve_config_path

        return OmegaConf.merge(OmegaConf.load(resolve_config_path(spec.config)),
                               OmegaConf.from_dotlist([str(o) for o in spec.overrides]))

    def search_settings(self) -> SearchConfig:
        """The iterations' step-search settings: psr.search.SearchConfig's defaults (step_search's
        ``search`` block) <- the search stage's config <- its overrides."""
        spec = self.cfg.search
        block = OmegaConf.select(self.stage_config(spec), "search", default=None)
        base = OmegaConf.create({"search": OmegaConf.structured(SearchConfig)})
        OmegaConf.set_struct(base, True)
        node = merge_checked(base, {"search": block if block is not None else {}},
                             f"{spec.config} + search.overrides", "step_search").search
        node.seed = 0  # the stage's seed is the iteration's (run_recipe); sampling settings only here
        return settings(SearchConfig, node, f"{spec.config}: search")

    def search_sampling(self) -> dict:
        """width, temperature, top_p and max_new_tokens_step of the iterations' step search."""
        sc = self.search_settings()
        return {"width": sc.width, "temperature": sc.temperature, "top_p": sc.top_p,
                "max_new_tokens": sc.max_new_tokens_step}

    def stage_headroom(self, k: int) -> None:
        """headroom_M<k> (arith): the share of M_k's greedy failures on the held-out split whose first
        wrong step has a correct candidate among the search's w samples (psr.arith.headroom)."""
        stage = f"headroom_M{k}"
        if self.done(stage) and not self.cfg.print_commands:
            return
        sp = self.search_sampling()
        args = [sys.executable, "-m", f"psr.{self.cfg.source}", "headroom", "--model", str(self.model(k)),
                "--problems", str(self.data / "problems_test.jsonl"),
                "--greedy", str(self.stages / f"eval_M{k}" / "arith" / "items.jsonl"), "--out", str(self.stages / stage),
                "--width", str(sp["width"]), "--temperature", str(sp["temperature"]), "--top-p", str(sp["top_p"]),
                "--max-new-tokens", str(sp["max_new_tokens"]), "--seed", str(self.cfg.seed)]
        if self.cfg.print_commands:
            return self.print_command(stage, shlex.join(args))
        self.run_process(stage, f"psr.{self.cfg.source} headroom", args)

    def pair_checker(self):
        """(chosen correct, rejected correct) of a pair by the exact checker (measurement only);
        method=srlm: of the whole solutions (every step correct and the gold answer boxed)."""
        if self.bags:
            from psr.bags.pipeline import pair_checker

            return pair_checker(self.data, self.cfg.iterations)
        from psr.arith import load_problems
        from psr.arith.checker import analyze_step, check_solution, check_steps, derived_values
        from psr.steps import next_step_body, parse_steps

        by_q = {}
        for i in range(1, self.cfg.iterations + 1):
            for p in load_problems(self.data / f"iter{i}_problems.jsonl"):
                by_q[(i, p.question)] = p

        def solution_ok(prob, text: str) -> bool:
            steps = parse_steps(text)
            return bool(steps) and all(x.correct for x in check_steps(prob, steps)) and check_solution(prob, text)

        if self.srlm:
            def check_solutions(i: int, pair: dict):
                prob = by_q.get((i, pair["prompt"]))
                if prob is None:
                    return None
                return solution_ok(prob, pair["chosen"]), solution_ok(prob, pair["rejected"])

            return check_solutions

        def check(i: int, pair: dict):
            prob = by_q.get((i, pair["question"]))
            if prob is None:
                return None
            l, derived = pair["step"], derived_values(prob, list(pair["prev_steps"]))  # once for both steps
            return (analyze_step(prob, derived, next_step_body(pair["chosen"], l)).correct,
                    analyze_step(prob, derived, next_step_body(pair["rejected"], l)).correct)

        return check

    def stage_report(self) -> Path:
        from psr.report import write_report

        if self.cfg.print_commands:
            return self.print_command("report", "# in process: psr.report.write_report")
        t0 = time.time()
        path = write_report(self.out, self.cfg.iterations, pair_checker=self.pair_checker() if self.arith else None,
                            judge="the exact checker (diagnostic: checker_judge=true)" if self.cfg.checker_judge else None,
                            method=self.cfg.method)
        if self.bags:
            from psr.bags.pipeline import add_diagnostics_to_report

            add_diagnostics_to_report(self.out, self.stages / "diagnose_M1" / "diagnostics.json")
        self.timings["report"] = round(time.time() - t0, 1)
        (self.out / "timings.json").write_text(json.dumps(self.timings, indent=1))
        return path


# ----------------------------------------------------------------- launch templates
# Which pipeline-level template a recipe takes (launch.train / launch.generate); ift_build (teacher
# calls only) takes none: it runs locally unless its stage spec has its own launch.
RECIPE_KIND = {"eft_ift_sft": "train", "prm_train": "train", "step_dpo": "train",
               "step_search": "generate", "srlm_search": "generate", "eval": "generate", "eft_build": "generate"}
# The placeholders of a launch template.
PLACEHOLDERS = ("stage", "recipe", "args", "port", "python")
STAGE_KEYS = ("m0", "ift", "prm", "eft", "sft", "search", "srlm", "dpo", "eval")


def stage_template(cfg: Any, spec: Any, recipe: str) -> Optional[str]:
    """The launch template of a stage: its spec's ``launch``, else the pipeline's ``launch.<kind>``."""
    own = spec.get("launch") if hasattr(spec, "get") else None
    if own:
        return str(own)
    kind = RECIPE_KIND.get(recipe)
    launch = cfg.get("launch") or {}
    return str(launch[kind]) if kind and launch.get(kind) else None


def template_fields(template: str) -> list[str]:
    """The placeholder names of ``template`` ({{ and }} are literal braces)."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


def check_template(key: str, template: Any) -> None:
    """A launch template must be a string whose placeholders are known and which passes the
    recipe and its arguments on; else a ConfigError naming ``key``."""
    if not isinstance(template, str):
        raise ConfigError(f"{key}: a launch template must be a string, got {type(template).__name__}")
    try:
        names = template_fields(template)
    except ValueError as e:
        raise ConfigError(f"{key}: bad template ({e}; write a literal brace as {{{{ or }}}})") from None
    for name in names:
        if name not in PLACEHOLDERS:
            raise ConfigError(f"{key}: unknown placeholder {{{name}}} (known: "
                              f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)}; write a literal brace as {{{{ or }}}})")
    for need in ("recipe", "args"):
        if need not in names:
            raise ConfigError(f"{key}: the template must contain {{{need}}} (the stage would not run its recipe as configured)")


def check_templates(cfg: Any) -> None:
    """Every launch template of the pipeline, before any stage runs."""
    launch = cfg.get("launch")
    if launch is None:
        launch = {}
    if not hasattr(launch, "items"):
        raise ConfigError(f"launch: must be a mapping {{train: ..., generate: ...}}, got {launch!r}")
    for kind, template in launch.items():
        if kind not in ("train", "generate"):
            raise ConfigError(f"launch.{kind}: unknown stage kind (known: train, generate)")
        if template is not None:
            check_template(f"launch.{kind}", template)
    for key in STAGE_KEYS:
        spec = cfg.get(key)
        if hasattr(spec, "get") and spec.get("launch") is not None:
            check_template(f"{key}.launch", spec.get("launch"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fill_template(template: str, stage: str, recipe: str, args: list[str]) -> str:
    """The shell command of a stage: {stage}, {recipe} (recipes/<recipe>.py), {args} (the recipe's
    shell-quoted arguments), {port} (a free port on this machine), {python} (this interpreter)."""
    from psr.cli import resolve_recipe

    return template.format(stage=stage, recipe=shlex.quote(str(resolve_recipe(recipe).resolve())),
                           args=shlex.join(args), port=free_port() if "port" in template_fields(template) else "",
                           python=shlex.quote(sys.executable))


def _kill_group(pgid: int, grace_s: float = 10.0) -> None:
    """SIGTERM what is left of a process group (torchrun agents end their workers), SIGKILL after grace_s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.time() + grace_s
        while time.time() < deadline:
            try:
                os.killpg(pgid, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.2)


def main(cfg: Any) -> Optional[Path]:
    if cfg.m0_judge_shots < 0:
        raise ConfigError(f"m0_judge_shots must be >= 0, got {cfg.m0_judge_shots}")
    if cfg.iterations < 0:
        raise ConfigError(f"iterations must be >= 0, got {cfg.iterations}")
    if len(cfg.questions_per_iteration) < cfg.iterations:
        raise ConfigError(f"questions_per_iteration has {len(cfg.questions_per_iteration)} entries; "
                          f"iterations={cfg.iterations} needs one per iteration")
    io = cfg.iteration_ops
    if io is not None and not (len(io) == 2 and all(isinstance(x, int) for x in io) and 1 <= io[0] <= io[1]):
        raise ConfigError(f"iteration_ops must be [min, max] with 1 <= min <= max, got {list(io)}")
    if cfg.checker_judge and cfg.source not in EMBEDDED_WORLDS:
        raise ConfigError("checker_judge: needs source=arith or bags (an embedded world's exact step checker)")
    if cfg.source not in (*EMBEDDED_WORLDS, "recipes"):
        raise ConfigError(f"source must be arith or recipes, or bags (the second embedded world), got {cfg.source!r}")
    if cfg.method not in ("psr", "srlm"):
        raise ConfigError(f"method must be psr or srlm, got {cfg.method!r}")
    if cfg.method == "srlm":
        if cfg.source == "bags":
            raise ConfigError("method=srlm: runs in the arith world or on real data (source=arith|recipes), not source=bags")
        if cfg.checker_judge:
            raise ConfigError("checker_judge: a diagnostic of method=psr's step search, not of method=srlm")
        if cfg.source == "recipes":
            for key in ("srlm_eft_data", "srlm_eft_test"):
                if not cfg[key]:
                    raise ConfigError(f"{key}: required with method=srlm and source=recipes (see the srlm_eft_data comment)")
                if not cfg.print_commands and not Path(cfg[key]).is_file():
                    raise ConfigError(f"{key}: {cfg[key]}: no such file")
    keys = ["sft", "search" if cfg.method == "psr" else "srlm", "dpo", "eval"] + (
        ["m0"] if cfg.source in EMBEDDED_WORLDS else ["ift", "prm", "eft"])
    for key in keys:
        spec = cfg[key]
        if not spec.get("config"):
            raise ConfigError(f"{key}.config: the stage's recipe config is not set")
    if cfg.source == "recipes":
        for key in ("base_model", "questions"):
            if not cfg[key]:
                raise ConfigError(f"{key}: required with source=recipes")
        if cfg.eft_dir and not cfg.print_commands:
            for name in ("eft_train.jsonl", "eft_test.jsonl"):
                if not (Path(cfg.eft_dir) / name).is_file():
                    raise ConfigError(f"eft_dir: {cfg.eft_dir} has no {name} (an eft_build output dir is expected)")
        if cfg.prm_model and not cfg.eft_dir and not cfg.print_commands and not (Path(cfg.prm_model) / "config.json").is_file():
            raise ConfigError(f"prm_model: {cfg.prm_model} has no config.json (a prm_train final/ dir is expected)")
        for key, recipe in (("ift", "ift_build"),) + ((("eft", "eft_build"),) if not cfg.eft_dir else ()):
            node = Pipeline.stage_config(cfg[key])
            if OmegaConf.select(node, "input", default=None) is None or OmegaConf.is_missing(node, "input"):
                raise ConfigError(f"{key}.overrides: input is not set ({recipe}'s question source, no default; "
                                  f"add input=... to {key}.overrides or set it in {cfg[key].config})")
    check_templates(cfg)
    if cfg.print_commands:
        p = Pipeline(cfg)
        for fn in (p.stage_data, p.stage_train, p.stage_eval, p.stage_report):
            fn()
        return None
    O.check_output_dir(cfg.output_dir)
    base = cfg.base_model if cfg.source == "recipes" and cfg.base_model and Path(cfg.base_model).is_dir() else None
    O.claim_output_dir("pipeline", cfg, models={"base_model": base} if base else {},
                       ignore={"iterations", "questions_per_iteration", "eval_tts", "tts_limit", "eval_headroom",
                               "launcher", "launch", "print_commands", "base_model", "questions"},
                       inputs={"questions": _questions_file(cfg)} if cfg.source == "recipes" else {},
                       extra={"base_model": cfg.base_model if base is None else "model dir"},
                       saved="every finished stage (stages/*.done) and the stage that ran, up to its last save")
    p = Pipeline(cfg)
    t0 = time.time()
    steps = [("data", p.stage_data), ("train", p.stage_train), ("eval", p.stage_eval), ("report", p.stage_report)]
    bar = tqdm(steps, desc="pipeline", dynamic_ncols=True)
    report = None
    for name, fn in bar:
        bar.set_postfix_str(name)
        try:
            report = fn()
        except StageError as e:
            bar.close()
            print(f"error: {e}", file=sys.stderr, flush=True)
            sys.exit(1)
    print(Path(report).read_text(), flush=True)
    O.finish("pipeline", f"done in {time.time() - t0:.0f} s -> report {report}, models in {p.stages}/*/final")
    return Path(report)


def _questions_file(cfg: Any) -> Optional[Path]:
    """source=recipes: the questions file as the data stage resolves it (None: not found yet;
    the data stage names it)."""
    if not cfg.questions:
        return None
    from psr.data.paths import find_data_path

    return find_data_path(cfg.questions, cfg.data_dir)


if __name__ == "__main__":
    recipe_main(PipelineConfig, main)

"""metric_logger as a _component_: the jsonl default, torchtune's loggers as they are (W&B offline,
TensorBoard, stdout), throughput and peak-memory keys per logging step, and the errors."""

import glob
import re
import time
from pathlib import Path

import pytest
import torch

from psr.config import ConfigError, load_config
from psr.models.tiny import build_tiny_model_dir
from psr.training.metrics import (JsonlLogger, MultiLogger, NullLogger, build_metric_logger, memory_stats,
                                  read_metrics)
from psr.testing import write_tiny_sft_data
from fakes import load_recipe

TT = "torchtune.training.metric_logging"


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("logger_assets")
    model = build_tiny_model_dir(d / "model", seed=0)
    ift, eft = write_tiny_sft_data(d / "data", n_ift=12, n_eft=4, seed=0)
    return model, ift, eft


def _run(assets, out, *overrides, steps=3):
    mod = load_recipe("eft_ift_sft")
    model, ift, eft = assets
    base = dict(model_dir=model, ift_data=ift, eft_data=eft, output_dir=out, device="cpu", dtype="float32",
                batch_size=4, micro_batch_size=2, lr=3e-3, warmup_steps=1, max_seq_len=512, max_steps=steps,
                progress_bar=False, seed=0)
    cfg = load_config(mod.EftIftSftConfig, None, [f"{k}={v}" for k, v in base.items()] + list(overrides))
    return mod.main(cfg)


def test_default_jsonl_logs_throughput_and_peak_memory(assets, tmp_path):
    res = _run(assets, tmp_path / "run")
    assert res.metrics_path == tmp_path / "run" / "metrics.jsonl"
    rows = read_metrics(res.metrics_path)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert [r["loss"] for r in rows] == pytest.approx(res.losses)
    for r in rows:
        assert r["tokens_per_second_per_gpu"] > 0
        assert r["tokens_per_second_per_gpu"] == pytest.approx(r["tokens_per_second"])  # one process
        assert 0.05 < r["peak_memory_rss"] < 64  # GiB: this process holds torch + a tiny model
        assert "peak_memory_alloc" not in r  # CUDA allocator stats only where training runs on CUDA
    assert not (tmp_path / "run" / "torchtune_config.yaml").exists()  # the jsonl logger saves no config copy


def test_peak_memory_stats_can_be_turned_off(assets, tmp_path):
    res = _run(assets, tmp_path / "run", "log_peak_memory_stats=false", steps=1)
    (row,) = read_metrics(res.metrics_path)
    assert "peak_memory_rss" not in row and row["tokens_per_second_per_gpu"] > 0


def _wandb_items(run_file: Path) -> dict[str, list[float]]:
    """key -> logged values, read from an offline run's .wandb records (protobuf: the item key is
    field 2 as a string, its value_json field 16 right after it)."""
    data = run_file.read_bytes()
    out: dict[str, list[float]] = {}
    for m in re.finditer(rb"\x12([\x01-\x7f])", data):
        n = m.group(1)[0]
        key = data[m.end():m.end() + n]
        rest = data[m.end() + n:]
        if not re.fullmatch(rb"[A-Za-z_/]+", key) or not rest.startswith(b"\x82\x01"):
            continue
        vlen = rest[2]
        try:
            out.setdefault(key.decode(), []).append(float(rest[3:3 + vlen]))
        except ValueError:
            continue
    return out


def test_wandb_logger_offline_writes_its_run(assets, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wandb_dir").mkdir()
    res = _run(assets, tmp_path / "run", f"metric_logger._component_={TT}.WandBLogger", "metric_logger.project=psr")
    # torchtune's logger replaces the jsonl default: no metrics.jsonl, the end line leaves it out
    assert res.metrics_path is None and not (tmp_path / "run" / "metrics.jsonl").exists()
    runs = glob.glob(str(tmp_path / "wandb_dir" / "wandb" / "offline-run-*"))
    assert len(runs) == 1, runs
    (run_file,) = glob.glob(f"{runs[0]}/run-*.wandb")
    deadline = time.time() + 60  # wandb's service process may still be flushing the file after finish()
    while len(set((items := _wandb_items(Path(run_file))).get("loss", []))) < 3 and time.time() < deadline:
        time.sleep(0.5)
    # each step's record appears twice in the file (history, then the summary update)
    assert list(dict.fromkeys(items["loss"])) == pytest.approx(res.losses, rel=1e-9)
    assert list(dict.fromkeys(items["global_step"])) == [1.0, 2.0, 3.0]
    for key in ("lr", "grad_norm", "tokens_per_second", "tokens_per_second_per_gpu", "peak_memory_rss"):
        assert len(items[key]) >= 3 and all(v > 0 for v in items[key]), key
    assert b"max_seq_len" in Path(run_file).read_bytes()  # log_config: the run's config went to W&B
    assert (tmp_path / "run" / "torchtune_config.yaml").exists()  # ... and torchtune's copy of it


def test_tensorboard_logger_writes_events(assets, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    res = _run(assets, tmp_path / "run", f"metric_logger._component_={TT}.TensorBoardLogger",
               f"metric_logger.log_dir={tmp_path / 'tb'}")
    (events,) = glob.glob(str(tmp_path / "tb" / "run_0_*" / "events.out.tfevents.*"))
    acc = EventAccumulator(str(Path(events).parent))
    acc.Reload()
    def scalars(tag):  # torchtune writes new-style scalars (tensor events)
        return [(e.step, float(make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]

    assert [st for st, _ in scalars("loss")] == [1, 2, 3]
    assert [v for _, v in scalars("loss")] == pytest.approx(res.losses, rel=1e-5)
    assert all(v > 0 for _, v in scalars("tokens_per_second_per_gpu") + scalars("peak_memory_rss"))


def test_stdout_logger_prints_each_step(assets, tmp_path, capsys):
    _run(assets, tmp_path / "run", f"metric_logger._component_={TT}.StdoutLogger", steps=2)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("Step ")]
    assert [ln.split(" |")[0] for ln in lines] == ["Step 1", "Step 2"]
    assert all("tokens_per_second_per_gpu:" in ln and "peak_memory_rss:" in ln for ln in lines)


def test_misspelt_component_is_an_error_naming_the_key_before_the_model_loads(assets, tmp_path):
    with pytest.raises(ConfigError, match=r"metric_logger: _component_ 'torchtune.training.metric_logging.WandbLogger'"
                                          r": .* has no attribute 'WandbLogger'"):
        _run(assets, tmp_path / "run", f"metric_logger._component_={TT}.WandbLogger")
    assert not (tmp_path / "run" / "metrics.jsonl").exists() and not (tmp_path / "run" / "final").exists()
    with pytest.raises(ConfigError, match=r"metric_logger.loggers\[1\]: _component_ 'psr.nope.Logger'"):
        _run(assets, tmp_path / "run", "metric_logger={_component_: psr.training.metrics.MultiLogger, loggers: "
                                       "[{_component_: psr.training.metrics.JsonlLogger}, {_component_: psr.nope.Logger}]}")
    with pytest.raises(ConfigError, match="metric_logger: expected a block with a _component_"):
        _run(assets, tmp_path / "run", "metric_logger=jsonl")


# torchtune's TensorBoardLogger.__del__ trips over its own failed __init__
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_bad_logger_arguments_are_errors_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=rf"metric_logger: cannot build {TT}.TensorBoardLogger: .*'log_dir'"):
        build_metric_logger({"_component_": f"{TT}.TensorBoardLogger"}, tmp_path)
    with pytest.raises(ConfigError, match="metric_logger: cannot build psr.training.metrics.JsonlLogger: .*'filenam'"):
        build_metric_logger({"_component_": "psr.training.metrics.JsonlLogger", "filenam": "m.jsonl"}, tmp_path)


def test_multi_logger_jsonl_defaults_resume_and_other_ranks(tmp_path, capsys, monkeypatch):
    node = {"_component_": "psr.training.metrics.MultiLogger",
            "loggers": [{"_component_": "psr.training.metrics.JsonlLogger"}, {"_component_": f"{TT}.StdoutLogger"}]}
    lg = build_metric_logger(node, tmp_path)
    assert isinstance(lg, MultiLogger) and isinstance(lg.loggers[0], JsonlLogger)
    for s in range(1, 5):
        lg.log_dict({"loss": 1.0 / s}, s)
    lg.log("extra", 7, 4)
    lg.close()
    assert lg.path == tmp_path / "metrics.jsonl"
    assert [r["step"] for r in read_metrics(lg.path)] == [1, 2, 3, 4, 4]
    assert "Step 4 | extra:7" in capsys.readouterr().out
    lg = build_metric_logger(node, tmp_path, resume_step=2)  # resumed at step 2: later lines go
    lg.log_dict({"loss": 9.0}, 3)
    lg.close()
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "metrics.jsonl")] == [(1, 1.0), (2, 0.5), (3, 9.0)]
    lg = build_metric_logger(node, tmp_path)  # a fresh run replaces the file
    lg.close()
    assert read_metrics(tmp_path / "metrics.jsonl") == []
    monkeypatch.setenv("RANK", "1")
    other = build_metric_logger(node, tmp_path / "rank1")
    assert isinstance(other, NullLogger) and other.path is None and not (tmp_path / "rank1").exists()


def test_memory_stats_on_cpu():
    stats = memory_stats(torch.device("cpu"))
    assert set(stats) == {"peak_memory_rss"} and stats["peak_memory_rss"] > 0.01


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_memory_stats_on_cuda_reset_per_call():
    dev = torch.device("cuda")
    x = torch.empty(256 * 1024 * 1024, dtype=torch.uint8, device=dev)  # 0.25 GiB
    stats = memory_stats(dev)
    assert stats["peak_memory_alloc"] >= 0.25 and stats["peak_memory_reserved"] >= stats["peak_memory_alloc"]
    assert stats["peak_memory_active"] >= 0.25
    del x
    assert memory_stats(dev)["peak_memory_alloc"] < 0.25  # the peak restarted after the first call


@pytest.mark.slow
def test_only_rank0_logs_under_two_processes(tmp_path):
    import json
    import os
    import sys

    from fakes import run_cmd

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
    r = run_cmd([sys.executable, "-m", "psr.cli", "run", "--nproc_per_node", "2", "eft_ift_sft", "--config",
                 "tiny/eft_ift_sft", f"output_dir={out}", "max_steps=2", "progress_bar=false",
                 f"metric_logger._component_={TT}.StdoutLogger"], 600, env=env, cwd=repo)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert [ln.split(" |")[0] for ln in r.stdout.splitlines() if ln.startswith("Step ")] == ["Step 1", "Step 2"]
    assert json.loads((out / "train_summary.json").read_text())["world_size"] == 2

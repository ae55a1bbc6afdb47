"""vLLM at 72B: tensor_parallel_size reaches the engine, and torchrun's data-parallel engines of one
node each get their own GPUs. Runs without vLLM: a fake ``vllm`` module records what the backend
hands to ``vllm.LLM`` on a (pretend) CUDA platform."""

import sys
import types

import pytest

from psr.generation.vllm_backend import pin_rank_gpus, rank_gpus
from psr.models.tiny import build_tiny_model_dir


def test_rank_gpus_split_the_node_between_engines():
    visible = [str(i) for i in range(8)]
    assert rank_gpus(8, 0, 1, visible) == visible
    assert rank_gpus(2, 3, 4, visible) == ["6", "7"]
    assert rank_gpus(1, 5, 8, visible) == ["5"]
    assert rank_gpus(4, 1, 2, ["3", "5", "6", "7", "0", "1", "2", "4"]) == ["0", "1", "2", "4"]


def test_too_few_gpus_names_the_settings():
    with pytest.raises(ValueError, match=r"8 engines per node \(--nproc_per_node\) x 8 GPUs each .* = 64 GPUs, "
                                         r"but this node has 8 visible; launch --nproc_per_node 1"):
        rank_gpus(8, 0, 8, [str(i) for i in range(8)])
    with pytest.raises(ValueError, match=">= 1"):
        rank_gpus(0, 0, 1, ["0"])


def test_pin_only_under_torchrun(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    assert pin_rank_gpus({"tensor_parallel_size": 4}) is None
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert pin_rank_gpus({"tensor_parallel_size": 2}) == "2,3"
    import os

    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2,3"


@pytest.fixture
def fake_vllm(monkeypatch):
    calls = []

    class LLM:
        def __init__(self, **kw):
            import os

            calls.append(dict(kw, _visible=os.environ.get("CUDA_VISIBLE_DEVICES")))
            cfg = types.SimpleNamespace(dtype="torch.bfloat16", max_model_len=2048)
            self.llm_engine = types.SimpleNamespace(model_config=cfg)

    import importlib.machinery

    vllm = types.ModuleType("vllm")
    vllm.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    vllm.__version__ = "fake"
    vllm.LLM = LLM
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = types.SimpleNamespace(device_type="cuda")
    vllm.platforms = platforms
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.platforms", platforms)
    return calls


def test_backend_kwargs_reach_the_engine_with_each_rank_on_its_gpus(tmp_path, monkeypatch, fake_vllm):
    from psr.generation.factory import make_generator

    d = build_tiny_model_dir(tmp_path / "m")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3,4,5,6,7")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    # eval under torchrun passes the rank's own device, cuda:<LOCAL_RANK>
    gen = make_generator("vllm", str(d), device="cuda:1", dtype="bfloat16", tensor_parallel_size=4,
                         max_model_len=2048)
    assert gen.name == "vllm"
    kw = fake_vllm[-1]
    assert kw["tensor_parallel_size"] == 4 and kw["max_model_len"] == 2048 and kw["dtype"] == "bfloat16"
    assert kw["_visible"] == "4,5,6,7"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3,4,5,6,7")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    with pytest.raises(ValueError, match="= 16 GPUs, but this node has 8 visible"):
        make_generator("vllm", str(d), dtype="bfloat16", tensor_parallel_size=4)
    with pytest.raises(ValueError, match="not a device index"):  # another rank's GPU
        make_generator("vllm", str(d), device="cuda:3", dtype="bfloat16")

"""psr.plan: the per-GPU memory plan from config.json alone."""

import json
import shlex
from pathlib import Path

import pytest
import torch

from psr import plan as P
from psr.plan import GIB, PlanError, estimate, estimate_generation, estimate_training, main, model_shape

REPO = Path(__file__).resolve().parent.parent

# Public config.json values of the paper's models (huggingface.co/Qwen/Qwen2.5-Math-7B, -72B).
QWEN25_MATH_7B = {
    "model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
    "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064, "tie_word_embeddings": False,
    "max_position_embeddings": 4096, "torch_dtype": "bfloat16",
}
QWEN25_MATH_72B = {
    "model_type": "qwen2", "hidden_size": 8192, "intermediate_size": 29568, "num_hidden_layers": 80,
    "num_attention_heads": 64, "num_key_value_heads": 8, "vocab_size": 152064, "tie_word_embeddings": False,
    "max_position_embeddings": 4096, "torch_dtype": "bfloat16",
}
# Hand-computable: H=64, I=128, 3 layers, 4 heads of 16, 2 kv heads, vocab 100, untied, no biases.
SMALL = {
    "model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100, "tie_word_embeddings": False,
    "max_position_embeddings": 64,
}


# ----------------------------------------------------------------------------- exact counts


def test_small_config_parameter_counts_by_hand():
    s = model_shape(SMALL)
    # block: q 64x64 + k,v 2 x 64x32 + o 64x64 = 12,288; MLP 3 x 64x128 = 24,576; 2 norms 128
    assert s.block_params == 12_288 + 24_576 + 128 == 36_992
    assert s.root_params == 2 * 100 * 64 + 64 == 12_864  # embed + LM head + final norm
    assert s.n_params == 3 * 36_992 + 12_864 == 123_840


def test_small_config_fp32_sharded_terms_exact():
    plan = estimate_training(SMALL, objective="sft", micro_batch_size=2, max_seq_len=8, dtype="float32",
                             activation_checkpointing=False, nproc_per_node=4, device="cpu")
    t = {x.name: x.bytes for x in plan.terms}
    shard = 123_840 // 4  # 30,960 parameters per rank
    assert t["parameters"] == 4 * shard == 123_840
    assert t["gradients"] == 123_840
    assert t["optimizer state"] == 2 * 4 * shard == 247_680
    assert t["gathered parameters"] == 4 * (12_864 + 2 * 36_992) == 347_392
    assert t["unsharded gradients"] == 4 * (12_864 + 36_992) == 199_424  # fp32 compute: no reduce copy
    # per layer and token, c = 4, padded micro-batch (2 rows): norms 2(4*64 + 2*4*64 + 4) = 1,544;
    # q 256, k/v repeated to 4 heads 512, attention out 256, lse 4*4 = 16, mask bias 4*8 = 32;
    # MLP 4*4*128 = 2,048 -> 4,664. Final norm 4*64 + 2*4*64 + 4 = 772.
    assert P.layer_activation_bytes_per_token(plan.shape, 4, 8, masked=True) == 4_664
    assert t["activations"] == 16 * (3 * 4_664 + 772) == 236_224
    assert plan.values["activations_checkpointed"] == 16 * (3 * 4 * 64 + 4_664 + 772) == 99_264
    assert t["logits"] == 2 * 8 * 100 * 12 == 19_200
    # one micro-batch per step: gradients (123,840) and activations + logits are not held at once
    assert plan.overlap_bytes == 123_840
    assert plan.total == 123_840 * 3 + 347_392 + 199_424 + 236_224 + 19_200
    assert plan.fits is None  # CPU: no verdict
    accum = estimate_training(SMALL, objective="sft", micro_batch_size=2, max_seq_len=8, dtype="float32",
                              nproc_per_node=4, device="cpu", grad_accum_steps=2)
    assert accum.overlap_bytes == 0 and accum.total == plan.total + 123_840  # earlier micro-batches' gradients
    assert plan.values["setup"] == 123_840 + 4 * 100 * 64  # own shards + the embedding in flight


def test_optimizer_step_peak_counts_when_larger():
    # one process on CUDA, one token: the optimizer step is the peak: params + grads + 2 moments
    # (fp32, whole model) + one moment-sized temporary of AdamW's foreach path
    plan = estimate_training(SMALL, micro_batch_size=1, max_seq_len=1, dtype="float32", device="cuda", gpu_mem_gb=1)
    assert plan.values["optimizer_step"] == 5 * 4 * 123_840
    forward_backward = sum(t.bytes for t in plan.terms) - plan.overlap_bytes
    assert forward_backward == 4 * 4 * 123_840  # activations + logits (< gradients) are not held with the gradients
    assert plan.total == 5 * 4 * 123_840
    assert any("optimizer step peaks above" in n for n in plan.notes)
    on_cpu = estimate_training(SMALL, micro_batch_size=1, max_seq_len=1, dtype="float32", device="cpu")
    assert on_cpu.total == 4 * 4 * 123_840  # CPU AdamW steps parameter by parameter: no whole-model temporary


def test_small_config_bf16_mixed_precision_terms_exact():
    plan = estimate_training(SMALL, objective="sft", micro_batch_size=1, max_seq_len=8, dtype="bfloat16",
                             master_weights_fp32=True, activation_checkpointing=True, nproc_per_node=4)
    t = {x.name: x.bytes for x in plan.terms}
    assert t["parameters"] == 123_840  # fp32 master weights, 1/4
    assert t["gathered parameters"] == 2 * (12_864 + 2 * 36_992)
    assert t["unsharded gradients"] == 2 * (12_864 + 36_992) + 4 * 36_992  # + fp32 reduce copy of a block
    # one row: no padding mask, so k/v stay grouped (2 kv heads) and no mask bias is kept
    layer = 2 * (4 * 64 + 2 * 2 * 64 + 4) + 2 * (64 + 2 * 32 + 64 + 4 * 128) + 16
    assert P.layer_activation_bytes_per_token(plan.shape, 2, 8, masked=False) == layer == 2_456
    assert t["activations"] == 8 * (3 * 2 * 64 + layer + (4 * 64 + 2 * 2 * 64 + 4))


def test_bf16_params_keep_bf16_adam_moments_and_reshard_false_gathers_everything():
    plan = estimate_training(SMALL, micro_batch_size=1, max_seq_len=8, dtype="bfloat16", master_weights_fp32=False,
                             reshard_after_forward=False, nproc_per_node=4)
    t = {x.name: x.bytes for x in plan.terms}
    assert t["parameters"] == 2 * 30_960 and t["optimizer state"] == 4 * 30_960
    assert t["gathered parameters"] == 2 * 123_840
    assert t["unsharded gradients"] == 2 * (12_864 + 36_992)  # bf16 reduce: no fp32 copy


def test_dpo_rows_and_prm_tag_columns():
    dpo = estimate_training(SMALL, objective="dpo", micro_batch_size=2, max_seq_len=1024, dtype="float32",
                            nproc_per_node=2, device="cpu")
    assert dpo.values["rows"] == 4
    assert dpo.term("logits") == 4 * 513 * 100 * 12  # the last step + 1 positions only
    prm = estimate_training(SMALL, objective="prm", micro_batch_size=2, max_seq_len=1024, dtype="float32",
                            nproc_per_node=2, device="cpu")
    assert prm.values["rows"] == 2
    assert prm.term("logits") == 2 * (2 * 128) * 100 * 8  # <= one tag per 8 tokens per row; 2c bytes


def test_one_process_has_no_fsdp_terms_and_autocast_copies_under_bf16():
    plan = estimate_training(SMALL, micro_batch_size=1, max_seq_len=8, dtype="bfloat16", cpu_offload=True)
    names = [x.name for x in plan.terms]
    assert "gathered parameters" not in names and plan.term("autocast weight copies") == 2 * 123_840
    assert plan.term("parameters") == 4 * 123_840  # cpu_offload is ignored with one process
    assert any("ignored with one process" in n for n in plan.notes)


def test_cpu_offload_moves_state_to_host_and_hybrid_shard_divides_by_gpus_per_node():
    off = estimate_training(SMALL, micro_batch_size=1, max_seq_len=8, cpu_offload=True, nnodes=2, nproc_per_node=4)
    assert off.term("parameters") == off.term("gradients") == off.term("optimizer state") == 0
    assert off.host_bytes_per_node == 4 * 16 * (123_840 // 8)
    hy = estimate_training(SMALL, micro_batch_size=1, max_seq_len=8, hybrid_shard=True, nnodes=2, nproc_per_node=4)
    flat = estimate_training(SMALL, micro_batch_size=1, max_seq_len=8, hybrid_shard=False, nnodes=2, nproc_per_node=4)
    assert hy.term("optimizer state") == 8 * 123_840 // 4 and flat.term("optimizer state") == 8 * 123_840 // 8


# ----------------------------------------------------------------------------- against transformers


@pytest.mark.parametrize("cfg", [
    dict(model_type="qwen2", hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
         num_key_value_heads=2, vocab_size=128, tie_word_embeddings=False),
    dict(model_type="llama", hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
         num_key_value_heads=4, vocab_size=128, tie_word_embeddings=True, attention_bias=True, mlp_bias=True),
    dict(model_type="qwen3", hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
         num_key_value_heads=2, head_dim=32, vocab_size=128, tie_word_embeddings=False),
])
def test_parameter_counts_match_transformers(cfg):
    from transformers import AutoConfig, AutoModelForCausalLM

    hf = AutoConfig.for_model(**cfg)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf)
    s = model_shape(cfg)
    assert s.n_params == sum(p.numel() for p in model.parameters())
    assert s.block_params == sum(p.numel() for p in model.model.layers[0].parameters())


@pytest.mark.parametrize("model_type,dtype,kv_heads,rows", [
    ("qwen2", torch.float32, 2, 2), ("qwen2", torch.bfloat16, 2, 2), ("qwen2", torch.bfloat16, 2, 1),
    ("llama", torch.float32, 4, 2), ("qwen3", torch.bfloat16, 2, 2), ("qwen3", torch.float32, 2, 1)])
def test_layer_activation_bytes_match_what_autograd_saves(model_type, dtype, kv_heads, rows):
    """Every tensor a decoder layer saves for backward (saved_tensors_hooks), without the
    parameters and the tensors all layers share (RoPE cos/sin, mask), equals the formula."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = dict(model_type=model_type, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=kv_heads, vocab_size=300, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg), attn_implementation="sdpa").to(dtype)
    B, T = rows, 24
    ids = torch.randint(0, 300, (B, T))
    mask = torch.ones(B, T, dtype=torch.long)
    if B > 1:
        mask[1, :5] = 0  # padding: the masked SDPA path (one row: no mask at all)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: list[dict] = [{}, {}]

    def hooks(i):
        ctx = {}

        def pack(t):
            k = t.untyped_storage().data_ptr()
            if k not in params:
                saved[i][k] = t.untyped_storage().nbytes()
            return t

        def pre(mod, args, kwargs):
            ctx["c"] = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
            ctx["c"].__enter__()

        def post(mod, args, kwargs, out):
            ctx["c"].__exit__(None, None, None)

        return pre, post

    for i in (0, 1):
        pre, post = hooks(i)
        model.model.layers[i].register_forward_pre_hook(pre, with_kwargs=True)
        model.model.layers[i].register_forward_hook(post, with_kwargs=True)
    model(input_ids=ids, attention_mask=mask, use_cache=False)
    shared = saved[0].keys() & saved[1].keys()
    own = sum(v for k, v in saved[0].items() if k not in shared)
    c = 4 if dtype == torch.float32 else 2
    assert own == B * T * P.layer_activation_bytes_per_token(model_shape(cfg), c, T, masked=B > 1)


# ----------------------------------------------------------------------------- the paper's models


def test_paper_model_sizes():
    assert model_shape(QWEN25_MATH_7B).n_params == 7_615_616_512
    assert model_shape(QWEN25_MATH_72B).n_params == 72_706_203_648


def test_72b_on_four_nodes_state_is_16_bytes_per_parameter_over_32_gpus():
    plan = estimate(QWEN25_MATH_72B, "eft_ift_sft", micro_batch_size=1, max_seq_len=4096,
                    dtype="bfloat16", activation_checkpointing=True, nnodes=4, nproc_per_node=8, gpu_mem_gb=80)
    state = plan.term("parameters") + plan.term("gradients") + plan.term("optimizer state")
    assert state == 16 * 72_706_203_648 // 32 == 36_353_101_824  # 33.9 GiB per GPU
    assert plan.term("gathered parameters") == 2 * (2_491_424_768 + 2 * 877_684_736)
    assert plan.fits is True and plan.total < 74 * GIB


def test_72b_on_one_node_does_not_fit_and_names_the_term_and_key():
    plan = estimate(QWEN25_MATH_72B, "eft_ift_sft", micro_batch_size=1, max_seq_len=4096, dtype="bfloat16",
                    activation_checkpointing=True, nnodes=1, nproc_per_node=8, gpu_mem_gb=80)
    assert plan.fits is False
    msg = plan.verdict()
    assert "optimizer state 67.7 GiB is the largest term" in msg  # 8 B x 72.7e9 / 8 GPUs
    assert "cpu_offload=true or more GPUs (--nnodes)" in msg
    off = estimate(QWEN25_MATH_72B, "eft_ift_sft", micro_batch_size=1, max_seq_len=4096, dtype="bfloat16",
                   activation_checkpointing=True, cpu_offload=True, nnodes=1, nproc_per_node=8, gpu_mem_gb=80)
    assert off.fits is True and off.host_bytes_per_node == 16 * 72_706_203_648


def test_7b_without_checkpointing_does_not_fit_and_says_so():
    plan = estimate(QWEN25_MATH_7B, "eft_ift_sft", micro_batch_size=2, max_seq_len=4096, dtype="bfloat16",
                    activation_checkpointing=False, nproc_per_node=8, gpu_mem_gb=80)
    assert plan.fits is False
    assert "activations" in plan.verdict() and "activation_checkpointing=true or micro_batch_size=1" in plan.verdict()


def test_vllm_weights_and_kv_per_token():
    p7 = estimate_generation(QWEN25_MATH_7B, dtype="bfloat16", tensor_parallel_size=1, gpu_mem_gb=80)
    assert p7.term("weights") == 2 * 7_615_616_512
    assert p7.values["kv_bytes_per_token_engine"] == 2 * 28 * 4 * 128 * 2 == 57_344
    assert p7.fits is True and p7.values["kv_tokens"] == p7.term("KV cache") // 57_344 // 16 * 16
    p72 = estimate_generation(QWEN25_MATH_72B, dtype="bfloat16", tensor_parallel_size=8, gpu_mem_gb=80)
    assert p72.term("weights") == 2 * 72_706_203_648 // 8
    assert p72.values["kv_bytes_per_token_engine"] == 2 * 80 * 8 * 128 * 2
    assert p72.values["kv_bytes_per_token_gpu"] == 2 * 80 * 1 * 128 * 2  # one kv head per GPU
    assert p72.fits is True and p72.values["kv_tokens"] > 1_000_000
    one = estimate_generation(QWEN25_MATH_72B, dtype="bfloat16", tensor_parallel_size=1, gpu_mem_gb=80)
    assert one.fits is False and "backend_kwargs.tensor_parallel_size=4" in one.verdict()


# ----------------------------------------------------------------------------- the CLI


@pytest.fixture
def model_configs(tmp_path):
    out = {}
    for name, cfg in (("7b", QWEN25_MATH_7B), ("72b", QWEN25_MATH_72B), ("small", SMALL)):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(json.dumps(cfg))
        out[name] = d
    return out


def test_cli_prints_terms_and_fits(model_configs, capsys):
    rc = main(["step_dpo", "--config", "qwen2_5_math_72b/step_dpo", "--nnodes", "4", "--nproc_per_node", "8",
               "--gpu_mem_gb", "80", "--model_dir", str(model_configs["72b"])])
    out = capsys.readouterr().out
    assert rc == 0
    assert "optimizer state" in out and "18,176,550,912 B" in out  # 8 B/param / 32 GPUs
    assert "activations without checkpointing" in out and "\nfits: " in out


def test_cli_not_fit_exit_1_names_term_and_key(model_configs, capsys):
    rc = main(["eft_ift_sft", "--config", "qwen2_5_math_72b/eft_ift_sft", "--nnodes", "1", "--nproc_per_node", "8",
               "--gpu_mem_gb", "80", "--model_config", str(model_configs["72b"] / "config.json")])
    out = capsys.readouterr().out
    assert rc == 1
    assert "does not fit" in out and "optimizer state" in out and "cpu_offload=true" in out


def test_cli_overrides_reach_the_plan(model_configs, capsys):
    assert main(["eft_ift_sft", "--config", "qwen2_5_math_72b/eft_ift_sft", "--nproc_per_node", "8",
                 "--gpu_mem_gb", "80", "--model_dir", str(model_configs["72b"]), "cpu_offload=true"]) == 0
    assert "host RAM per node" in capsys.readouterr().out


E7 = ["--config", "qwen2_5_math_7b/eval"]


@pytest.mark.parametrize("argv,msg", [
    (["pipeline", "--config", "qwen2_5_math_7b/pipeline"], "no memory plan for recipe 'pipeline'"),
    (["nosuch", *E7], "no memory plan for recipe 'nosuch'"),
    (["eval", *E7, "--model_dir", "/nonexistent/m"], "/nonexistent/m/config.json: no such file"),
    (["eval", *E7], "pass --model_dir DIR or --model_config FILE"),
    (["eval", *E7, "--nnodes", "0", "--model_dir", "X"], "--nnodes must be a whole number >= 1"),
    (["eval", *E7, "--gpu_mem_gb", "-80", "--model_dir", "X"], "--gpu_mem_gb must be > 0"),
    (["eval", *E7, "--nproc_per_node", "two"], "invalid int value"),
    (["eval", "--config", "nosuch/eval", "--model_dir", "X"], "config 'nosuch/eval': no such file"),
    (["step_dpo", "--config", "qwen2_5_math_7b/step_dpo", "micro_batchsize=2", "--model_dir", "X"],
     "unknown key 'micro_batchsize'"),
])
def test_cli_bad_input_is_one_line_exit_2(argv, msg, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1


def test_bad_model_config_names_file_and_key(tmp_path, capsys):
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({**SMALL, "num_hidden_layers": 0}))
    assert main(["eval", "--config", "qwen2_5_math_7b/eval", "--model_config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: num_hidden_layers must be a positive integer" in err
    bad.write_text(json.dumps({**SMALL, "model_type": "mixtral"}))
    assert main(["eval", "--config", "qwen2_5_math_7b/eval", "--model_config", str(bad)]) == 2
    assert "model_type 'mixtral' is not planned" in capsys.readouterr().err


# ----------------------------------------------------------------------------- committed config headers


CONFIGS = [f"qwen2_5_math_{m}/{r}" for m in ("7b", "72b")
           for r in ("eft_ift_sft", "step_dpo", "prm_train", "step_search", "eval")]


@pytest.mark.parametrize("name", CONFIGS)
def test_committed_config_headers_state_the_current_plan_and_fit(name, tmp_path, capsys):
    """Each 7B/72B config carries the block ``python -m psr.plan ... --header`` prints for the
    command it names (with the public config.json), and that plan fits."""
    text = (REPO / "configs" / f"{name}.yaml").read_text().splitlines()
    start = next(i for i, ln in enumerate(text) if ln.startswith("# Memory plan ("))
    end = start + 1
    while end < len(text) and text[end].startswith("#   "):
        end += 1
    block = text[start:end]
    cmd = block[0][len("# Memory plan ("):-len("):")]
    argv = shlex.split(cmd)
    assert argv[:3] == ["python", "-m", "psr.plan"] and "--gpu_mem_gb" in argv
    cfg_json = tmp_path / "config.json"
    cfg_json.write_text(json.dumps(QWEN25_MATH_72B if "72b" in name else QWEN25_MATH_7B))
    rc = main(argv[3:] + ["--model_config", str(cfg_json), "--header"])
    printed = capsys.readouterr().out.rstrip("\n").splitlines()
    assert rc == 0, printed
    assert printed == block, f"configs/{name}.yaml: its Memory plan block is stale; rerun: {cmd} --header"
    assert block[-1].endswith(": fits")


def test_estimate_rejects_nonsense_settings():
    with pytest.raises(PlanError, match="micro_batch_size must be >= 1"):
        estimate_training(SMALL, micro_batch_size=0)
    with pytest.raises(PlanError, match="dtype=float16 is not supported for training"):
        estimate_training(SMALL, dtype="float16")
    with pytest.raises(PlanError, match="no memory plan for recipe 'pipeline'"):
        estimate(SMALL, "pipeline")
    with pytest.raises(PlanError, match="tensor_parallel_size=3 does not divide num_attention_heads 4"):
        estimate_generation(SMALL, tensor_parallel_size=3)


def test_psr_plan_command_is_the_plan(model_configs, capsys):
    from psr.cli import main as psr_main

    rc = psr_main(["plan", "eft_ift_sft", "--config", "qwen2_5_math_72b/eft_ift_sft", "--nnodes", "1",
                   "--nproc_per_node", "8", "--gpu_mem_gb", "80", "--model_dir", str(model_configs["72b"])])
    out = capsys.readouterr().out
    assert rc == 1 and "does not fit" in out and "cpu_offload=true" in out
    assert psr_main(["plan", "no_such_recipe", "--config", "tiny/eval"]) == 2

"""Shared training infrastructure (FSDP2, checkpoints, losses, metrics) for the training recipes.

Modules (each starts with its own API summary):

    psr.training.loop        TrainConfig (common config keys; subclass it), setup_from_config(cfg),
                             train(cfg, setup, examples, lengths, collate, loss_fn, epoch_indices)
                             — the loop: grad accumulation, clipping, warmup+cosine, metrics,
                             per-epoch / every-n-step HF saves, exact resume.
    psr.training.fsdp        setup_model(...) -> ModelSetup (meta build, fully_shard per block then
                             root under torchrun, each rank loads only its shards; bf16 compute;
                             activation checkpointing, CPU offload, HSDP), clip_grad_norm,
                             all_reduce_sum
    psr.training.checkpoint  Checkpointer: save_model(name) (HF dir), save_resume / load_resume
                             (DCP model+optimizer + recipe_state.pt), link_final
    psr.training.batching    global_batches / rank_micro_batches / grad_accum_steps: a batch plan
                             independent of the number of processes
    psr.training.optim       build_optimizer (AdamW), lr_multiplier, build_lr_scheduler
    psr.training.metrics     metric loggers (the metric_logger _component_: JsonlLogger, the default,
                             or torchtune's), memory_stats, read_metrics
    psr.training.forward     labeled_logits: logits only at positions that predict a label
    psr.training.losses      sft_loss, token_logps (+ step-DPO / PRM losses)
    psr.training.sft_data    IFT/EFT records -> SFT examples, mixture, collate, tiny data

Writing a training recipe::

    @dataclass
    class MyConfig(TrainConfig):
        my_data: str = MISSING

    def main(cfg):
        setup = setup_from_config(cfg)                      # joins torchrun's process group
        examples = ...; lengths = [...]
        def collate(exs): return {"input_ids": ..., ..., "n_units": n, "n_tokens": t}
        def loss_fn(model, batch): return loss_sum_over_units, {"metric": sum_over_units}
        train(cfg, setup, examples, lengths, collate, loss_fn)
"""

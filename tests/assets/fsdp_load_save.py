"""torchrun worker for tests/training/test_sharded_setup.py: sharded setup of each model dir given,
logits of one fixed batch (rank 0 writes them), every rank's resident parameter bytes, then a
sharded save with a small max_shard_size.

    torchrun --standalone --nproc_per_node N fsdp_load_save.py OUT MODEL_DIR [MODEL_DIR ...]
"""

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from psr import distributed as D
from psr.models.hf import save_model_dir
from psr.training.fsdp import setup_model

INPUT_IDS = torch.tensor([[3, 9, 27, 81, 243, 100, 7], [5, 4, 3, 2, 1, 0, 11]])


def main() -> None:
    out = Path(sys.argv[1])
    for k, model_dir in enumerate(sys.argv[2:]):
        setup = setup_model(model_dir, device="cpu", dtype="float32")
        model = setup.model
        local = sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in model.parameters())
        total = sum(p.numel() for p in model.parameters())
        tied = model.config.tie_word_embeddings and model.lm_head.weight is model.model.embed_tokens.weight
        model.eval()
        with torch.no_grad():
            logits = model(input_ids=INPUT_IDS).logits
        facts = D.all_gather_objects({"local_params": local, "total_params": total, "tied": bool(tied),
                                      "sharded": setup.sharded})
        save_model_dir(model, setup.tokenizer, out / f"saved_{k}", max_shard_size="40KB")
        if D.is_rank0():
            save_file({"logits": logits.contiguous()}, str(out / f"logits_{k}.safetensors"))
            (out / f"facts_{k}.json").write_text(json.dumps(facts))
        D.barrier()
    D.destroy()


if __name__ == "__main__":
    main()

r"""PRM training loss (paper §3.2): the 2-way cross-entropy at the step tags.

The PRM format -- tag placement, tokenisation, batching, reading the (+, -) logits at the tags --
and inference (:class:`psr.prm.PRMScorer`) live in :mod:`psr.prm`; this module holds what only
training needs. Training minimises the cross-entropy of the 2-way softmax
``softmax([logit(+), logit(-)])`` at each tag against the step's label, summed over tags and
averaged over all tags of the global batch; no other position carries a loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


# ----------------------------------------------------------------------------- loss


def prm_loss(pair_logits: torch.Tensor, good: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of ``[N, 2]`` (good, bad) candidate logits against ``good`` (``[N]``
    bool/0-1). Pure; fp32."""
    logp = F.log_softmax(pair_logits.float(), dim=-1)
    g = good.to(logp.dtype)
    return -(logp[:, 0] * g + logp[:, 1] * (1.0 - g)).sum()

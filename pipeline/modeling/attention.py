"""Fused attention (PyTorch's scaled_dot_product_attention) for backbones transformers runs
eagerly.

transformers 5.x gives MPNet (all-mpnet-base-v2, the packaged base encoder) no SDPA path: its
self-attention materialises the (batch, heads, L, L) scores and probabilities in float32 and
saves both for the backward pass. Its relative-position bias is an additive term on the scores,
which is exactly what SDPA's ``attn_mask`` takes (the memory-efficient kernel also returns the
bias's gradient, so the bias stays learnable): ``use_sdpa`` swaps the forward of each MPNet
self-attention for one that calls SDPA with bias + padding mask. Same function, same weights,
same dropout semantics (``tests/test_attention.py`` holds eager and SDPA to the same outputs and
gradients). Models that already run SDPA, or that no rule here covers, are left as they are.
"""

from __future__ import annotations

import logging
import types
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)


def _mpnet_sdpa_forward(self: nn.Module, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                        position_bias: torch.Tensor | None = None, output_attentions: bool = False,
                        **kwargs: Any) -> tuple[torch.Tensor, ...]:
    if output_attentions:  # SDPA returns no probabilities: the eager path does
        return type(self).forward(self, hidden_states, attention_mask, position_bias, output_attentions, **kwargs)
    shape = (*hidden_states.shape[:-1], -1, self.attention_head_size)
    q = self.q(hidden_states).view(shape).transpose(1, 2)
    k = self.k(hidden_states).view(shape).transpose(1, 2)
    v = self.v(hidden_states).view(shape).transpose(1, 2)
    bias = position_bias
    if attention_mask is not None:
        bias = attention_mask if bias is None else bias + attention_mask
    if bias is not None:
        bias = bias.to(q.dtype)
    c = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias,
                                                   dropout_p=self.dropout.p if self.training else 0.0)
    c = c.transpose(1, 2).reshape(*hidden_states.shape[:-1], self.all_head_size)
    return (self.o(c),)


_RULES = {"mpnet": ("MPNetSelfAttention", _mpnet_sdpa_forward)}


def use_sdpa(model: nn.Module) -> int:
    """Give the model's eager self-attention modules an SDPA forward where a rule covers its
    architecture; returns how many modules were changed (0: left as it is)."""
    rule = _RULES.get(getattr(model.config, "model_type", ""))
    if rule is None or getattr(model.config, "_attn_implementation", "eager") == "sdpa":
        return 0
    cls_name, forward = rule
    changed = 0
    for module in model.modules():
        if type(module).__name__ == cls_name:
            module.forward = types.MethodType(forward, module)
            changed += 1
    if changed:
        log.info("%s: self-attention through scaled_dot_product_attention (%d layers)", model.config.model_type,
                 changed)
    return changed

"""Packed batches that attend within each row only, and DPO batches packed too.

A packed batch lays its rows end to end in one sequence, with ``position_ids``
restarting at 0 for each row (TRL's padding-free SFT collator makes them). With SDPA,
transformers turns the boundaries into one block-diagonal mask over the whole
sequence, and SDPA computes every query against every key and masks the rest: for 4
rows of ~150 tokens, 4x the attention work the rows need. FlashAttention's varlen
kernels attend row by row, but they run on GPUs only. So ``segment_attention`` (an
attention function registered with transformers' ``AttentionInterface``, no kernel
of its own) cuts the packed sequence at the ``position_ids`` boundaries and calls
the same SDPA function once per row with the causal flag, which SDPA computes
without a mask. A batch with padding (a 2-D attention mask) or a KV cache goes to
SDPA unchanged.

TRL 1.16 turns ``padding_free`` off for DPO (its message says the feature is disabled
after a refactor), so a DPO batch arrives padded: both answers of every pair padded to
the longest sequence of the batch. ``pack_padded_batches`` wraps the model's
backbone so a padded batch's real tokens run as one packed sequence (each row keeps
its positions 0, 1, ...), and the hidden states go back in the padded layout, with
zeros at the padding, before the LM head. TRL's loss code reads what it always reads,
and the LM head scores only labelled positions (``failforge.train.lm_head``), so the
padding costs no model compute at all.
"""

from __future__ import annotations

import functools
import logging

log = logging.getLogger("failforge.train")

#: the attention implementation's name in transformers' registries
SEGMENTS = "failforge_segments"
#: architectures whose attention is plain causal (no sliding window, no soft-capping), tested on llama
SEGMENT_ARCHITECTURES = frozenset({"llama"})


def register() -> None:
    """Register ``segment_attention`` and its mask with transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(SEGMENTS, segment_attention)
    AttentionMaskInterface.register(SEGMENTS, segment_mask)


def segment_mask(*args, attention_mask=None, **kwargs):
    """No mask for unpadded batches (packed or not: the attention reads the rows from
    ``position_ids``); SDPA's usual mask when there is padding."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    from transformers.masking_utils import sdpa_mask

    return sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


def row_bounds(position_ids) -> list[tuple[int, int]] | None:
    """``[(start, end), ...]`` of the rows of a one-sequence packed batch; None for anything else."""
    if position_ids is None or position_ids.dim() != 2 or position_ids.shape[0] != 1:
        return None
    starts = (position_ids[0] == 0).nonzero().flatten().tolist()
    if not starts or starts[0] != 0:
        return None
    length = position_ids.shape[1]
    return list(zip(starts, starts[1:] + [length], strict=True))


def segment_attention(module, query, key, value, attention_mask, position_ids=None, **kwargs):
    """SDPA row by row over a packed sequence (``query``: batch, heads, tokens, head size); bf16 CPU
    tensors attend in float32 (:func:`float32_attention`)."""
    import torch

    if query.dtype == torch.bfloat16 and query.device.type == "cpu":
        return float32_attention(module, query, key, value, attention_mask, position_ids=position_ids, **kwargs)
    return _segment_attention(module, query, key, value, attention_mask, position_ids=position_ids, **kwargs)


def float32_attention(module, query, key, value, attention_mask, **kwargs):
    """Attention of bf16 CPU tensors in float32, the output cast back to bf16.

    torch's CPU flash attention ran slower in bf16 than in float32, casts included: forward
    and backward of one causal row, 9 heads of 64 (SmolLM2-135M's), on
    the 2-core EPYC with AVX512-BF16, 100 tokens 2.5 ms in bf16 against 1.1 ms cast to
    float32 and back; 256 tokens 5.7-6.7 ms against 4.6-4.9 ms. In a bf16 SFT step SDPA took
    a fifth of the time. Autocast is off inside, so it cannot cast the operands back.
    """
    import torch

    if attention_mask is not None and attention_mask.is_floating_point():
        attention_mask = attention_mask.float()  # an additive mask in the operands' dtype
    with torch.autocast("cpu", enabled=False):
        out, weights = _segment_attention(module, query.float(), key.float(), value.float(), attention_mask,
                                          **kwargs)
    return out.to(query.dtype), weights


def _segment_attention(module, query, key, value, attention_mask, position_ids=None, **kwargs):
    """SDPA row by row, in the operands' dtype."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    bounds = None
    if attention_mask is None and query.shape[2] == key.shape[2] and query.shape[2] > 1:
        bounds = row_bounds(position_ids)
    if bounds is None or len(bounds) == 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    import torch

    outputs = [
        sdpa_attention_forward(module, query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], None, is_causal=True, **kwargs)[0]
        for a, b in bounds
    ]
    return torch.cat(outputs, dim=1), None  # sdpa_attention_forward returns batch, tokens, heads, head size


def use_segment_attention(model) -> bool:
    """Switch a model that runs SDPA to ``segment_attention`` when its architecture is plain causal."""
    config = model.config
    if getattr(config, "_attn_implementation", None) != "sdpa" or config.model_type not in SEGMENT_ARCHITECTURES:
        return False
    register()
    model.set_attn_implementation(SEGMENTS)
    return True


def restore_attention(model) -> None:
    """Back to SDPA before the weights are saved, so a saved config names a standard implementation."""
    if getattr(model.config, "_attn_implementation", None) == SEGMENTS:
        model.set_attn_implementation("sdpa")


# --- DPO ----------------------------------------------------------------------------
def pack_padded_batches(model) -> bool:
    """Run a model's padded batches packed: its backbone (``model.base_model``) sees one sequence
    of the real tokens and hands back hidden states in the padded layout (zeros at the padding).

    Install it before the trainer is built, so TRL's fused LM head (which calls the backbone)
    and DPO's reference pass in ``DPOTrainer()`` run packed too. Needs ``segment_attention``.
    """
    if getattr(model.config, "_attn_implementation", None) != SEGMENTS:
        return False
    backbone = model.base_model
    backbone.forward = packed_backbone(backbone.forward)
    return True


def packed_backbone(inner):
    """Wrap a backbone's forward: pack the real tokens of a right- or left-padded batch, run, unpad."""

    @functools.wraps(inner)
    def forward(*args, input_ids=None, attention_mask=None, **kwargs):
        passthrough = (
            args
            or input_ids is None
            or attention_mask is None
            or attention_mask.dim() != 2
            or any(kwargs.get(k) is not None for k in ("position_ids", "inputs_embeds", "past_key_values"))
            or kwargs.get("output_hidden_states")
            or kwargs.get("output_attentions")
        )
        if not passthrough:
            mask = attention_mask.bool()
            lengths = mask.sum(dim=1)
            passthrough = bool(mask.all()) or bool((lengths == 0).any())
        if passthrough:
            return inner(*args, input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        import torch

        ids = input_ids[mask].unsqueeze(0)
        row_start = torch.cumsum(lengths, 0) - lengths
        index = torch.arange(ids.shape[1], device=ids.device)
        position_ids = (index - torch.repeat_interleave(row_start, lengths)).unsqueeze(0)
        out = inner(input_ids=ids, position_ids=position_ids, **kwargs)
        hidden = out.last_hidden_state  # 1, real tokens, hidden size
        out.last_hidden_state = hidden.new_zeros((*mask.shape, hidden.shape[-1])).masked_scatter(
            mask.unsqueeze(-1), hidden[0]
        )
        return out

    return forward

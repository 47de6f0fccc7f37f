"""A LoRA linear layer whose adapter adds into the base output in one pass.

PEFT's ``lora.Linear`` computes ``result + lora_B(lora_A(dropout(x))) * scaling``: the
rank-r product writes a tensor as large as the layer's output, the scaling reads and
writes it again, and the sum reads both and writes a third. The backward pass scales the
output's gradient once more. On a CPU those are memory passes over ``tokens x out``
floats each, and in a LoRA step of the bundled 135M model (``bench/train_step.py``,
profiled with ``torch.profiler``) the scaling alone cost as much as a quarter of the
forward matrix products of the MLP it adapts.

:class:`FusedLoraLinear` computes the same sum with one ``addmm_`` into the base
layer's output: ``result += scaling * (h @ B^T)`` with ``h = lora_A(dropout(x))``. The
scaling is BLAS's ``alpha``, so the backward pass scales only the rank-r gradients.
The values are PEFT's up to float rounding (the scaling is applied inside the product
instead of after it); the test checks outputs and gradients against PEFT's forward.

It is a subclass of PEFT's ``lora.Linear`` swapped in by class, so saving, merging and
``disable_adapter`` are PEFT's own. Whatever is not the plain case (adapters off or
merged, several active adapters, DoRA and other variants, mixed-adapter batches, extra
arguments, a base layer that is not a plain ``nn.Linear``, an adapter dtype other than the
base output's outside autocast) runs PEFT's forward unchanged. PEFT has no fused path for
this, hence this module.
"""

from __future__ import annotations

import torch
from peft.tuners.lora.layer import Linear as PeftLoraLinear


class FusedLoraLinear(PeftLoraLinear):
    """PEFT's ``lora.Linear`` adding its adapter into the base output in place (module docstring)."""

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        adapter = self._plain_adapter(x, args, kwargs)
        if adapter is None:
            return super().forward(x, *args, **kwargs)
        base = self.base_layer
        x2d = x.reshape(-1, x.shape[-1])
        # a fresh 2-D product, not a view of one: adding into a view in place would make autograd
        # copy the whole output gradient (CopySlices) in the backward pass
        result = torch.nn.functional.linear(x2d, base.weight, base.bias)
        lora_B = self.lora_B[adapter].weight
        h = self.lora_A[adapter](self.lora_dropout[adapter](x2d))
        # under autocast the products run at the base output's dtype, as autocast runs them
        h, lora_B = h.to(result.dtype), lora_B.to(result.dtype)
        result.addmm_(h, lora_B.t(), alpha=self.scaling[adapter])
        return result.view(*x.shape[:-1], result.shape[-1])

    def _plain_adapter(self, x: torch.Tensor, args: tuple, kwargs: dict) -> str | None:
        """The one active vanilla LoRA adapter, or None when PEFT's own forward must run."""
        if args or kwargs or self.disable_adapters or self.merged or self.fan_in_fan_out:
            return None
        if type(self.base_layer) is not torch.nn.Linear:  # quantized and other wrapped layers: PEFT's path
            return None
        active = self.active_adapters
        if len(active) != 1:
            return None
        adapter = active[0]
        if adapter not in self.lora_A or adapter in self.lora_variant or self.lora_bias.get(adapter, False):
            return None
        dtypes = {x.dtype, self.base_layer.weight.dtype, self.lora_A[adapter].weight.dtype, self.lora_B[adapter].weight.dtype}
        if len(dtypes) > 1 and not torch.is_autocast_enabled(x.device.type):  # PEFT casts the input its own way
            return None
        return adapter


def use_fused_lora(model) -> int:
    """Swap every PEFT ``lora.Linear`` in ``model`` for a :class:`FusedLoraLinear`; returns how many."""
    swapped = 0
    for module in model.modules():
        if type(module) is PeftLoraLinear:
            module.__class__ = FusedLoraLinear
            swapped += 1
    return swapped

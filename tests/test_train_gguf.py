"""GGUF export parity: llama.cpp on the exported file answers like transformers on the same weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from failforge.models.convert import ensure_checkpoint
from failforge.models.registry import resolve_weights
from failforge.train.gguf_export import GGUFExportError, export_gguf
from failforge.train.sft import load_merged

pytestmark = pytest.mark.slow

PROMPTS = ["What is the capital of France?", "Write a haiku about rain."]
NEW_TOKENS = 12


@pytest.fixture(scope="module")
def gguf_source():
    return resolve_weights("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def checkpoint(gguf_source):
    return ensure_checkpoint(gguf_source)


def greedy_both(checkpoint, adapter, gguf_path) -> list[tuple[list[int], list[int], float]]:
    """Per prompt: transformers' greedy tokens, llama.cpp's greedy tokens, max |logit difference| over the prompt."""
    import llama_cpp

    model, tok = load_merged(checkpoint, adapter)
    llm = llama_cpp.Llama(str(gguf_path), n_ctx=256, logits_all=True, verbose=False, n_threads=2)
    out = []
    try:
        for prompt in PROMPTS:
            ids = tok.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, return_dict=True
            )["input_ids"]
            with torch.no_grad():
                hf_tokens = model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False)[0, len(ids) :]
                hf_logits = model(torch.tensor([ids])).logits[0].numpy()
            # same token ids in, so only the weights and the kernels can differ
            llm.reset()
            llm.eval(ids)
            diff = float(np.abs(np.array(llm.scores[: len(ids)]) - hf_logits).max())
            llm.reset()
            cpp_tokens = []
            for t in llm.generate(ids, temp=0.0, top_k=1, reset=True):
                cpp_tokens.append(t)
                if t == llm.token_eos() or len(cpp_tokens) == NEW_TOKENS:
                    break
            hf_list = hf_tokens.tolist()
            if tok.eos_token_id in hf_list:
                hf_list = hf_list[: hf_list.index(tok.eos_token_id) + 1]
            out.append((hf_list, cpp_tokens, diff))
    finally:
        llm.close()
    return out


def test_untrained_round_trip_answers_like_the_checkpoint(checkpoint, gguf_source, tmp_path):
    path = export_gguf(checkpoint, None, gguf_source, tmp_path / "base.gguf", "f32")
    for hf, cpp, diff in greedy_both(checkpoint, None, path):
        assert cpp == hf
        assert diff < 0.1


def test_merged_adapter_export_answers_like_transformers(checkpoint, gguf_source, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    # a LoRA adapter with non-zero B (PEFT's init_lora_weights=False): the merge must move every
    # targeted projection, Q and K included, where the llama.cpp row permutation matters
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(checkpoint))
    cfg = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    peft_model = get_peft_model(base, cfg)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.mul_(0.02)  # keep the model coherent enough for greedy decoding to be meaningful
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    del peft_model, base

    path = export_gguf(checkpoint, adapter, gguf_source, tmp_path / "merged.gguf", "f32")
    merged = greedy_both(checkpoint, adapter, path)
    for hf, cpp, diff in merged:
        assert cpp == hf
        assert diff < 0.1
    # and the adapter moved the logits well beyond the parity tolerance above, so an export
    # that dropped the adapter (or merged it wrongly) could not have passed (measured 0.30)
    ids = torch.tensor([[1, 9690, 198, 504, 3575, 282]])
    with torch.no_grad():
        before = load_merged(checkpoint, None)[0](ids).logits
        after = load_merged(checkpoint, adapter)[0](ids).logits
    assert (after - before).abs().max() > 0.2


def test_export_refuses_an_unknown_architecture(tmp_path, monkeypatch):
    import gguf

    from failforge.train.gguf_export import write_gguf

    class Field:
        def contents(self):
            return "mamba"

    class Reader:  # a GGUF of an architecture whose tensor transform is not known here
        def __init__(self, path):
            self.fields = {"general.architecture": Field()}
            self.tensors = []

    monkeypatch.setattr(gguf, "GGUFReader", Reader)
    with pytest.raises(GGUFExportError, match="not 'mamba'"):
        write_gguf({}, None, tmp_path / "x.gguf", tmp_path / "out.gguf")

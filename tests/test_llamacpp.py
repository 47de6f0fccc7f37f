"""llama.cpp backend on the bundled SmolLM2 GGUF: batching, seeded sampling, stops, counts, errors."""

from __future__ import annotations

import pytest
from conftest_models import TEST_THREADS, llamacpp_model, llamacpp_model_b1, smollm2_gguf  # noqa: F401

from failforge.errors import ConfigError, ModelUnavailable
from failforge.models.base import Message, Request, SamplingParams, expand
from failforge.models.chat_template import CHATML
from failforge.models.spec import ModelSpec

PROMPTS = [
    "What is the capital of France?",
    "Name three fruits.",
    "Who wrote Hamlet?",
    "Explain gravity in one sentence.",
    "How many legs does a spider have?",
    "Write a haiku about the sea.",
]


def _req(text: str, **params) -> Request:
    return Request(messages=(Message(role="user", content=text),), params=SamplingParams(**params))


def test_missing_model_file_is_one_line_error(tmp_path):
    from failforge.models.llamacpp import LlamaCppModel

    with pytest.raises(ModelUnavailable) as e:
        LlamaCppModel(ModelSpec(model=str(tmp_path / "nope.gguf")))
    assert "nope.gguf" in str(e.value) and "\n" not in str(e.value)

    not_gguf = tmp_path / "weights.gguf"
    not_gguf.write_bytes(b"not a gguf file")
    with pytest.raises(ModelUnavailable, match="not a GGUF file"):
        LlamaCppModel(ModelSpec(model=str(not_gguf)))


def test_peft_folder_adapter_is_refused(smollm2_gguf, tmp_path):
    from failforge.models.llamacpp import LlamaCppModel

    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(ModelUnavailable, match="GGUF LoRA"):
        LlamaCppModel(ModelSpec(model=str(smollm2_gguf), adapter=str(tmp_path)))


def test_prompt_uses_the_gguf_chat_template_without_double_bos(llamacpp_model):
    req = _req("Hi")
    text = llamacpp_model.render(req)
    # SmolLM2's template (from the GGUF metadata) adds its default system turn
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert text.endswith("<|im_start|>assistant\n")
    toks = llamacpp_model.prompt_tokens(req)
    assert toks[0] == llamacpp_model.bos_id and toks[1] != llamacpp_model.bos_id
    assert llamacpp_model.tokenize("<|im_start|>", add_bos=False) == [llamacpp_model.bos_id]  # special tokens parsed


@pytest.mark.slow
def test_batched_greedy_equals_batch_size_1(llamacpp_model, llamacpp_model_b1):
    reqs = [_req(p, max_tokens=12) for p in PROMPTS]  # 6 requests through 4 slots: slots are refilled
    batched = llamacpp_model.complete(reqs)
    single = llamacpp_model_b1.complete(reqs)
    assert [c.text for c in batched] == [c.text for c in single]
    assert [c.completion_tokens for c in batched] == [c.completion_tokens for c in single]
    assert all(c.text.strip() for c in batched)


def test_seeded_sampling_is_reproducible_and_independent_of_the_batch(llamacpp_model, llamacpp_model_b1):
    params = dict(temperature=1.0, top_p=0.95, max_tokens=10)
    target = _req("Tell me something about cats.", seed=7, **params)
    alone = llamacpp_model_b1.complete([target])[0].text
    others = [_req(p, seed=100 + i, **params) for i, p in enumerate(PROMPTS[:3])]
    in_batch = llamacpp_model.complete([others[0], others[1], target, others[2]])[2].text
    again = llamacpp_model.complete([target])[0].text
    assert alone == in_batch == again
    # the seed matters: other seeds give other samples
    variants = {c.text for c in llamacpp_model.complete([_req("Tell me something about cats.", seed=s, **params) for s in range(4)])}
    assert len(variants) >= 2


def test_sample_index_shifts_the_seed(llamacpp_model):
    params = SamplingParams(temperature=1.0, max_tokens=8, n=3, seed=11)
    reqs = expand([[Message(role="user", content="Name a color.")]], params)
    outs = llamacpp_model.complete(reqs)
    assert [c.sample_index for c in outs] == [0, 1, 2]
    assert llamacpp_model.complete([reqs[1]])[0].text == outs[1].text


def test_stop_strings_cut_the_answer(llamacpp_model):
    free = llamacpp_model.complete([_req("Count from 1 to 20, separated by commas.", max_tokens=24)])[0]
    assert free.finish_reason == "length"
    text = free.text
    mid = len(text) // 2
    stop = text[mid : mid + 2]
    cut = llamacpp_model.complete([_req("Count from 1 to 20, separated by commas.", max_tokens=24, stop=[stop, "@@never@@"])])[0]
    assert cut.text == text[: text.find(stop)]
    assert cut.finish_reason == "stop"
    assert cut.completion_tokens < free.completion_tokens


def test_token_counts_finish_reasons_and_logprobs(llamacpp_model):
    req = _req("Write a long story about a dragon.", max_tokens=9, logprobs=True)
    out = llamacpp_model.complete([req])[0]
    assert out.prompt_tokens == len(llamacpp_model.prompt_tokens(req))
    assert out.completion_tokens == 9 and out.finish_reason == "length"
    assert len(out.logprobs) == 9 and all(lp <= 0.0 for lp in out.logprobs)
    assert out.latency_s > 0
    # a short answer ends on the end-of-turn token, which is counted but not returned
    short = llamacpp_model.complete([_req("Reply with only the word yes.", max_tokens=30)])[0]
    assert short.finish_reason == "stop" and short.completion_tokens < 30
    assert "<|im_end|>" not in short.text


def test_fingerprint_tracks_the_chat_template(llamacpp_model, smollm2_gguf):
    from failforge.models.llamacpp import LlamaCppModel

    other = LlamaCppModel(ModelSpec(model=str(smollm2_gguf), chat_template=CHATML, batch_size=1, n_threads=TEST_THREADS))
    try:
        assert other.fingerprint != llamacpp_model.fingerprint
        assert not other.render(_req("Hi")).startswith("<|im_start|>system")  # the override is what renders
    finally:
        other.close()
    same = LlamaCppModel(ModelSpec(model=str(smollm2_gguf), batch_size=2, n_threads=TEST_THREADS))
    try:
        assert same.fingerprint == llamacpp_model.fingerprint  # batch size does not change answers' identity
    finally:
        same.close()


def test_prompt_longer_than_the_context_is_a_config_error(smollm2_gguf):
    from failforge.models.llamacpp import LlamaCppModel

    m = LlamaCppModel(ModelSpec(model=str(smollm2_gguf), n_ctx=64, batch_size=1, n_threads=TEST_THREADS))
    try:
        with pytest.raises(ConfigError, match="n_ctx"):
            m.complete([_req("word " * 200)])
        # a prompt that fits is clipped to the room left, and says so
        out = m.complete([_req("Tell me a long story.", max_tokens=500)])[0]
        assert out.prompt_tokens + out.completion_tokens <= 64
    finally:
        m.close()


def test_weight_hash_is_cached_by_path_size_and_mtime(tmp_path, monkeypatch):
    from failforge.models import convert

    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    first = convert.cached_sha256(f, root=tmp_path / "cache")

    def boom(*a, **k):
        raise AssertionError("re-hashed")

    monkeypatch.setattr(convert, "file_sha256", boom)
    assert convert.cached_sha256(f, root=tmp_path / "cache") == first
    f.write_bytes(b"abcd")  # new size: the entry is stale
    monkeypatch.undo()
    assert convert.cached_sha256(f, root=tmp_path / "cache") != first


def test_prompt_longer_than_one_decode_call_is_fed_in_pieces(llamacpp_model, llamacpp_model_b1):
    long = _req("Summarise this text. " + "The cat sat on the mat and looked at the dog. " * 60, max_tokens=4)
    assert len(llamacpp_model.prompt_tokens(long)) > llamacpp_model.n_batch  # needs two decode calls
    together = llamacpp_model.complete([_req("Hi", max_tokens=4), long])[1]
    alone = llamacpp_model_b1.complete([long])[0]
    assert together.text == alone.text and together.prompt_tokens == alone.prompt_tokens


def test_answers_stream_out_as_they_finish_and_the_batch_refills(llamacpp_model):
    """``stream`` hands out each answer at the step that finishes it: short answers come
    out before long ones, every request is answered once, and the result equals
    ``complete``'s (greedy)."""
    reqs = [_req(p, max_tokens=n) for p, n in zip(PROMPTS, [24, 2, 24, 2, 24, 2])]
    order: list[int] = []
    got: dict[int, str] = {}
    for group in llamacpp_model.stream(reqs):
        for i, c in group:
            order.append(i)
            got[i] = c.text
    assert sorted(order) == list(range(len(reqs)))
    # the 2-token answers finish long before the 24-token ones that started with them
    assert set(order[:2]) <= {1, 3, 5}
    assert [got[i] for i in range(len(reqs))] == [c.text for c in llamacpp_model.complete(reqs)]


def test_the_gate_stops_admission_and_running_sequences_finish(llamacpp_model):
    """A gate that refuses (the run's token budget) stops new sequences joining the
    batch; those already decoding finish and are handed out before the error."""
    from failforge.errors import BudgetReached

    calls = []

    def gate():
        calls.append(1)
        if len(calls) > 2:
            raise BudgetReached("budget")

    reqs = [_req(p, max_tokens=4) for p in PROMPTS]
    llamacpp_model.gate = gate
    handed: list[int] = []
    try:
        with pytest.raises(BudgetReached):
            for group in llamacpp_model.stream(reqs):
                handed.extend(i for i, _ in group)
    finally:
        llamacpp_model.gate = None
    assert sorted(handed) == [0, 1]
    assert len(llamacpp_model.complete(reqs[:1])) == 1  # the lock was released; the model still answers

"""A cache key is the SHA-256 of one JSON text; ``Request.key`` spells that text out
piece by piece for speed, and must give the very same key as encoding the whole
payload (or every run store written before would stop matching its requests)."""

import hashlib
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from failforge.models.base import Message, Request, SamplingParams


def reference_key(r: Request, fingerprint: str) -> str:
    payload = {
        "fingerprint": fingerprint,
        "messages": [m.model_dump() for m in r.messages],
        "params": r.params.model_dump(exclude={"n"}),
        "sample_index": r.sample_index,
        "seed": r.seed,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def test_a_known_request_keeps_its_key():
    # computed with the whole payload encoded at once, before the key was spelled out
    r = Request(
        messages=(Message(role="system", content="Be brief."), Message(role="user", content='Wie spät ist es? "quote" \\ é漢\n')),
        params=SamplingParams(n=3, temperature=0.7, top_p=0.9, max_tokens=64, stop=["\n\n", "END"], seed=42, logprobs=True),
        sample_index=2,
    )
    assert r.key("llama_cpp:abc") == "81db26e27fba5edf5968fce32e7f4207bb78be49c5c9ada4edfc56f24ff8a91b"


def test_a_copy_with_other_parameters_gets_its_own_key():
    p = SamplingParams(temperature=0.0)
    r = Request(messages=(Message(role="user", content="hi"),), params=p)
    first = r.key("fp")
    other = r.model_copy(update={"params": p.model_copy(update={"temperature": 0.5})})
    assert other.key("fp") != first and other.key("fp") == reference_key(other, "fp")


messages = st.lists(
    st.builds(Message, role=st.sampled_from(["system", "user", "assistant"]), content=st.text(max_size=40)),
    max_size=3,
)
params = st.builds(
    SamplingParams,
    n=st.integers(1, 4),
    temperature=st.floats(0, 2, allow_nan=False),
    top_p=st.floats(0.01, 1.0, allow_nan=False),
    max_tokens=st.integers(1, 4096),
    stop=st.lists(st.text(max_size=5), max_size=2),
    seed=st.integers(-(2**40), 2**40),
    logprobs=st.booleans(),
)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(messages, params, st.integers(0, 50), st.text(max_size=30))
def test_spelled_out_key_equals_the_whole_payload_encoded(msgs, p, sample_index, fingerprint):
    r = Request(messages=tuple(msgs), params=p, sample_index=sample_index)
    assert r.key(fingerprint) == reference_key(r, fingerprint)

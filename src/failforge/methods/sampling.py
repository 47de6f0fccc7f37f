"""The sample stage every method shares: a model writes candidates through the cached
path; invalid samples, copies of known texts, copies of held-out data and near-
duplicates are dropped and counted.

What a candidate is (an instruction, a rewrite, a critique) is the caller's ``parse``:
it returns an object with a ``text`` attribute, or None for an invalid sample.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from failforge.data.dedup import minhash_dedup, normalize_text, overlaps
from failforge.models.base import Message, SamplingParams

C = TypeVar("C")


@dataclass
class Sampled(Generic[C]):
    """Kept candidates with the prompt each came from, and what was dropped."""

    #: (index of the prompt, candidate)
    items: list[tuple[int, C]] = field(default_factory=list)
    samples: int = 0
    invalid: int = 0
    #: equal to a text the caller already has (a seed, an earlier round's candidate)
    copied: int = 0
    #: equal to, or a near-duplicate of, held-out data: never kept, so it cannot be trained on
    heldout_copies: int = 0
    near_duplicates: int = 0

    def counts(self) -> dict[str, int]:
        return {
            "samples": self.samples,
            "invalid": self.invalid,
            "copied": self.copied,
            "heldout_copies": self.heldout_copies,
            "near_duplicates": self.near_duplicates,
            "kept": len(self.items),
        }

    def line(self) -> str:
        return (
            f"{self.samples} samples, {self.invalid} invalid, {self.copied} copies, {self.heldout_copies} held-out copies, "
            f"{self.near_duplicates} near-duplicates, {len(self.items)} kept"
        )


def filter_samples(
    texts_by_prompt: Iterable[list[str]],
    parse: Callable[[str], C | None],
    *,
    known: Iterable[str] = (),
    heldout: Iterable[str] = (),
    dedup_threshold: float = 0.78,
    keep: Callable[[list[tuple[int, C]]], list[tuple[int, C]]] | None = None,
) -> Sampled[C]:
    """Parse every sample, then drop copies of ``known`` texts, held-out copies (exact
    or MinHash near-duplicates) and near-duplicates among the kept ones, in that order.
    ``keep`` is an optional extra filter (e.g. a validity model) applied before dedup."""
    out: Sampled[C] = Sampled()
    known_set = {normalize_text(t) for t in known}
    raw: list[tuple[int, C]] = []
    for i, texts in enumerate(texts_by_prompt):
        for text in texts:
            out.samples += 1
            cand = parse(text)
            if cand is None:
                out.invalid += 1
            elif normalize_text(cand.text) in known_set:  # type: ignore[attr-defined]
                out.copied += 1
            else:
                raw.append((i, cand))
    heldout = list(heldout)
    if heldout and raw:
        leaked = overlaps([c.text for _, c in raw], heldout, dedup_threshold)  # type: ignore[attr-defined]
        out.heldout_copies = sum(leaked)
        raw = [r for r, bad in zip(raw, leaked) if not bad]
    if keep is not None and raw:
        raw = keep(raw)
    # the same text (case and spacing aside), then MinHash near-duplicates
    first: dict[str, int] = {}
    for k, (_, c) in enumerate(raw):
        first.setdefault(normalize_text(c.text), k)  # type: ignore[attr-defined]
    unique = [raw[k] for k in sorted(first.values())]
    kept = minhash_dedup([c.text for _, c in unique], threshold=dedup_threshold)  # type: ignore[attr-defined]
    out.near_duplicates = len(raw) - len(kept)
    out.items = [unique[i] for i in kept]
    return out


def sample(
    model,
    prompts: list[list[Message]],
    params: SamplingParams,
    parse: Callable[[str], C | None],
    **filters,
) -> Sampled[C]:
    """Generate ``params.n`` samples per prompt through the (cached) model, then
    ``filter_samples``."""
    outs = model.generate(prompts, params) if prompts else []
    return filter_samples(([c.text for c in comps] for comps in outs), parse, **filters)

"""The steps of one ReverseGen run (the config lives in ``methods/reversegen.py``)."""

from __future__ import annotations

import random
from typing import Any

from rich.table import Table

from failforge.data.dedup import minhash_dedup
from failforge.judges.base import Verdict
from failforge.methods.judging import answer_error, judge_answers, task_judge
from failforge.methods.pairs import Judged, build_pairs
from failforge.methods.sampling import Sampled, sample
from failforge.models.base import Message, SamplingParams
from failforge.run.context import RunContext
from failforge.run.records import AttemptRecord, PairRecord, Provenance, SFTRecord, load, put
from failforge.run.records import record_id as attempt_id
from failforge.tasks import Candidate, Seed, make_task
from failforge.train.base import ModelVersion


def _fingerprint(model) -> str | None:
    """A model's fingerprint, or a fingerprint already taken from another record."""
    return model if model is None or isinstance(model, str) else model.fingerprint


def _conv(messages: list[Message]) -> list[dict[str, str]]:
    return [m.model_dump() for m in messages]


class ReverseGenLoop:
    def __init__(self, config, ctx: RunContext):
        self.cfg = config
        self.ctx = ctx
        self.store = ctx.store
        self.task = make_task(config.task, **config.task_options)
        self._embedder = None

    # --- set-up ---------------------------------------------------------------------
    def _seeds(self) -> tuple[list[Seed], list[Seed]]:
        seeds = self.task.load_seeds(self.cfg.seeds.dataset, self.cfg.seeds.n, self.cfg.seed)
        order = list(range(len(seeds)))
        random.Random(self.cfg.seed).shuffle(order)
        heldout = [seeds[i] for i in order[: self.cfg.seeds.heldout]]
        pool = [seeds[i] for i in order[self.cfg.seeds.heldout :]]
        return pool, heldout

    def _prov(self, iteration: int | None, proposer=None, target=None, **extra) -> Provenance:
        """Provenance naming the models that actually produced the row (by fingerprint)."""
        return Provenance(
            method="reversegen",
            task=self.cfg.task,
            iteration=iteration,
            proposer_fingerprint=_fingerprint(proposer),
            target_fingerprint=_fingerprint(target),
            judge=f"{self.judge.id}@{self.judge.version}",
            judge_fingerprint=self.store.meta().get("models", {}).get("judge", {}).get("fingerprint"),
            **extra,
        )

    @property
    def embedder(self):
        if self._embedder is None:
            from failforge.metrics.embeddings import SentenceTransformerEmbedder

            self._embedder = SentenceTransformerEmbedder()
        return self._embedder

    # --- the run ----------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        from failforge.methods.versions import Versions

        cfg, ctx = self.cfg, self.ctx
        pool, heldout = self._seeds()
        self.pool = pool
        self.judge = task_judge(ctx, self.task, cfg.judge)
        self.heldout_texts = [s.text for s in heldout]
        self.versions = Versions(ctx)

        proposer = self.versions.initial("proposer", cfg.proposer)
        if cfg.train.warmup is not None and proposer is not None:
            proposer = self.versions.train_sft("proposer-warmup", proposer, self._warmup_rows(pool), cfg.train.warmup)

        last_attempts: list[AttemptRecord] = []
        for it in range(1, cfg.iterations + 1):
            last_attempts = self._iteration(it, proposer)
            train_next = it < cfg.iterations and cfg.train.proposer is not None and proposer is not None
            if train_next:
                rows = self._dpo_rows(it, last_attempts)
                self.store.put_metrics(it, {"dpo_pairs": len(rows)})
                if rows:
                    proposer = self.versions.train_dpo(f"proposer-it{it}", proposer, rows, cfg.train.proposer)
                else:
                    ctx.log(f"iteration {it}: no failing/non-failing pair, the proposer is not trained this round")

        summary: dict[str, Any] = {"table": self.table()}
        target = self.versions.initial("target", cfg.target)
        if cfg.train.target is not None and target is not None:
            rows = self._target_sft_rows()
            if rows:
                trained = self.versions.train_sft("target-sft", target, rows, cfg.train.target)
                if cfg.close_loop:
                    summary.update(self._close_loop(target, trained, heldout, last_attempts))
            else:
                ctx.log("no failure with a good response: the target is not fine-tuned")
        metrics = self.store.metrics()
        last = metrics.get(cfg.iterations, {})
        summary.update(
            {
                "iterations": cfg.iterations,
                "last_failure_rate": last.get("failure_rate"),
                "pairs": len(self.store.records("pair")),
                "sft_rows": len(self.store.records("sft")),
            }
        )
        return summary

    # --- warm-up -----------------------------------------------------------------------
    def _warmup_rows(self, pool: list[Seed]) -> list[dict]:
        rng = random.Random(f"{self.cfg.seed}-warmup")
        rows = []
        for _ in range(self.cfg.train.warmup_examples):
            shots = self.task.sample_shots(pool, self.cfg.shots + 1, rng)
            prompt = self.task.fewshot_messages(shots[:-1])
            rows.append(
                {"prompt": _conv(prompt), "completion": [{"role": "assistant", "content": self.task.render_seed(shots[-1])}]}
            )
        return rows

    # --- one iteration ------------------------------------------------------------------
    def _iteration(self, it: int, proposer_version: ModelVersion | None) -> list[AttemptRecord]:
        cfg, ctx = self.cfg, self.ctx
        proposer = ctx.model("proposer", self.versions.spec("proposer", proposer_version, cfg.proposer))
        target = ctx.model("target", cfg.target)
        usage0 = {role: dict(m.usage) for role, m in (("proposer", proposer), ("target", target))}

        # 1. sample instructions from few-shot prompts
        rng = random.Random(f"{cfg.seed}-it{it}")
        prompts = [self.task.fewshot_messages(self.task.sample_shots(self.pool, cfg.shots, rng)) for _ in range(cfg.prompts_per_iteration)]
        params = SamplingParams(
            n=cfg.samples_per_prompt,
            temperature=cfg.proposer_temperature,
            top_p=cfg.proposer_top_p or self.task.proposer_top_p,
            max_tokens=cfg.proposer_max_tokens,
            stop=self.task.proposer_stop,
            seed=cfg.seed * 1000 + it,
        )
        # 2. parse; drop invalid samples, copied seeds, held-out copies and near-duplicates
        with ctx.tracked(proposer, f"iteration {it}: proposing", len(prompts) * params.n):
            sampled = sample(
                proposer, prompts, params, self.task.parse,
                known=[s.text for s in self.pool], heldout=self.heldout_texts, dedup_threshold=cfg.dedup_threshold,
                keep=self._validity_filter if cfg.validity is not None else None,
            )
        items = [(prompts[i][0].content, c) for i, c in sampled.items]
        ctx.log(f"iteration {it}: {sampled.line()}")

        # 3. the target answers; 4. the judge labels
        tparams = self.task.target_params(SamplingParams(max_tokens=cfg.target_max_tokens, seed=cfg.seed))
        with ctx.tracked(target, f"iteration {it}: target answers", len(items) * tparams.n):
            answers = target.generate([self.task.target_messages(c) for _, c in items], tparams)
        verdicts = judge_answers(self.judge, self.task, [c for _, c in items], answers)

        records = []
        for (prompt, cand), comps, v in zip(items, answers, verdicts):
            records.append(
                AttemptRecord(
                    id=attempt_id(f"it{it}", cand.text),
                    instruction=cand.text,
                    proposer_prompt=prompt,
                    responses=[c.text for c in comps],
                    reference=cand.reference,
                    label=v.label,
                    score=v.score,
                    reason=v.reason,
                    error=answer_error(comps),
                    harmful_content=self.cfg.task == "safety",
                    provenance=self._prov(
                        it,
                        proposer,
                        target,
                        seeds=[line.split(": ", 1)[-1] for line in prompt.splitlines() if line.startswith(f"{self.task.item_label} ")],
                        calls=1 + len(comps),
                        tokens=sum(c.prompt_tokens + c.completion_tokens for c in comps),
                    ),
                )
            )
        put(self.store, records, iteration=it)
        usage = {role: {k: m.usage[k] - usage0[role][k] for k in m.usage} for role, m in (("proposer", proposer), ("target", target))}
        self.store.put_metrics(it, self._metrics(it, records, sampled, usage))
        return records

    def _validity_filter(self, raw):
        checker = self.ctx.model("validity", self.cfg.validity)
        asks = [
            f"Is the following a clear, self-contained {self.task.item_label.lower()}? Answer yes or no.\n\n{c.text}"
            for _, c in raw
        ]
        outs = checker.generate(asks, SamplingParams(temperature=0.0, max_tokens=4))
        return [r for r, o in zip(raw, outs) if o[0].text.strip().lower().startswith("yes")]  # (prompt index, candidate)

    # --- metrics ------------------------------------------------------------------------
    def _metrics(self, it: int, records: list[AttemptRecord], sampled: Sampled, usage) -> dict[str, Any]:
        from failforge.metrics.diversity import self_bleu
        from failforge.metrics.rates import failure_rate, failures_per_1000_calls

        flags = [None if r.label == "unscorable" else r.failed for r in records]
        rate = failure_rate(flags)
        failures = [r.instruction for r in records if r.failed]
        earlier = [r.instruction for i in range(1, it) for r in load(self.store, "attempt", i) if r.failed]
        unique = len([i for i in minhash_dedup(earlier + failures, self.cfg.dedup_threshold) if i >= len(earlier)])
        texts = [r.instruction for r in records]
        m: dict[str, Any] = {
            "samples": sampled.samples,
            "invalid": sampled.invalid,
            "copied_seeds": sampled.copied,
            "heldout_copies": sampled.heldout_copies,
            "instructions": len(records),
            "failures": len(failures),
            "unscorable": sum(1 for r in records if r.label == "unscorable"),
            "failure_rate": rate.rate,
            "failure_rate_lo": rate.low,
            "failure_rate_hi": rate.high,
            "unique_failures": unique,
            "failures_per_1k_calls": failures_per_1000_calls(len(failures), usage["target"]["calls"]),
            "self_bleu": self_bleu(texts) if len(texts) > 1 else None,
            "calls": sum(u["calls"] for u in usage.values()),
            "tokens": sum(u["prompt_tokens"] + u["completion_tokens"] for u in usage.values()),
            "target_calls": usage["target"]["calls"],
            "proposer_calls": usage["proposer"]["calls"],
        }
        if self.cfg.embedding_metrics and texts:
            from failforge.metrics.embeddings import inner_similarity, novelty

            m["inner_similarity"] = inner_similarity(texts, self.embedder)
            m["novelty"] = novelty(texts, [s.text for s in self.pool], self.embedder)
        return m

    def table(self) -> Table:
        t = Table(title=f"ReverseGen · {self.cfg.task}")
        for col in ("iter", "samples", "invalid", "instructions", "failure rate [95% CI]", "DPO pairs", "unique failures", "Self-BLEU", "novelty", "calls", "tokens"):
            t.add_column(col, justify="right", no_wrap=True)
        fmt = lambda v, p=3: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
        for it, m in sorted(self.store.metrics().items()):
            if it < 1:
                continue
            rate = m.get("failure_rate")
            ci = "-" if rate is None else f"{rate:.2f} [{m.get('failure_rate_lo', 0):.2f}, {m.get('failure_rate_hi', 0):.2f}]"
            pairs = m.get("dpo_pairs")
            t.add_row(
                str(it), str(int(m.get("samples", 0))), str(int(m.get("invalid", 0))), str(int(m.get("instructions", 0))), ci,
                "-" if pairs is None else str(int(pairs)), str(int(m.get("unique_failures", 0))),
                fmt(m.get("self_bleu")), fmt(m.get("novelty")), str(int(m.get("calls", 0))), str(int(m.get("tokens", 0))),
            )
        return t

    # --- training data ------------------------------------------------------------------------
    def _dpo_rows(self, it: int, attempts: list[AttemptRecord]) -> list[dict]:
        judged = [Judged(a.proposer_prompt, a.instruction, a.failed, a.id) for a in attempts if a.label != "unscorable"]
        pairs = build_pairs(judged, random.Random(f"{self.cfg.seed}-pairs-{it}"), self.cfg.train.pairs_per_prompt)
        cost = {a.id: a.provenance for a in attempts}
        records = [
            PairRecord(
                id=f"pair-{p.chosen.attempt_id}-{p.rejected.attempt_id}",
                prompt=p.prompt,
                chosen=p.chosen.instruction,
                rejected=p.rejected.instruction,
                harmful_content=self.cfg.task == "safety",
                provenance=self._prov(
                    it,
                    cost[p.chosen.attempt_id].proposer_fingerprint,
                    cost[p.chosen.attempt_id].target_fingerprint,
                    seeds=[p.chosen.attempt_id, p.rejected.attempt_id],
                    calls=cost[p.chosen.attempt_id].calls + cost[p.rejected.attempt_id].calls,
                    tokens=cost[p.chosen.attempt_id].tokens + cost[p.rejected.attempt_id].tokens,
                ),
            )
            for p in pairs
        ]
        put(self.store, records, iteration=it)
        return [
            {
                "prompt": [{"role": "user", "content": r.prompt}],
                "chosen": [{"role": "assistant", "content": r.chosen}],
                "rejected": [{"role": "assistant", "content": r.rejected}],
            }
            for r in records
        ]

    def _target_sft_rows(self) -> list[dict]:
        failures = [a for a in load(self.store, "attempt") if a.failed and a.id.startswith("it")]
        cands = [Candidate(text=a.instruction, reference=a.reference) for a in failures]
        teacher = self.ctx.model("teacher", self.cfg.teacher) if self.cfg.teacher else None
        goods = self.task.good_responses([(c, a.responses, a.score) for c, a in zip(cands, failures)], teacher)
        if teacher is not None:
            missing = [i for i, g in enumerate(goods) if g is None]
            outs = teacher.generate([cands[i].text for i in missing], SamplingParams(temperature=0.0, max_tokens=256))
            for i, o in zip(missing, outs):
                goods[i] = o[0].text.strip() or None
        records = []
        for a, cand, good in zip(failures, cands, goods):
            if good is None:
                continue
            messages = [m.model_dump() for m in self.task.target_messages(cand)] + [{"role": "assistant", "content": good}]
            records.append(
                SFTRecord(
                    id=f"sft-{a.id}",
                    messages=messages,
                    harmful_content=self.cfg.task == "safety",
                    provenance=self._prov(
                        a.provenance.iteration,
                        a.provenance.proposer_fingerprint,
                        a.provenance.target_fingerprint,
                        seeds=[a.id],
                        calls=a.provenance.calls,
                        tokens=a.provenance.tokens,
                    ),
                )
            )
        put(self.store, records)
        return [{"messages": r.messages} for r in records]

    # --- closing the loop -----------------------------------------------------------------
    def _close_loop(self, base: ModelVersion, trained: ModelVersion, heldout: list[Seed], last: list[AttemptRecord]) -> dict[str, Any]:
        """Held-out failure rate before/after and a re-attack with the last proposer's
        instructions. "Before" is the untrained target exported and served exactly like
        the trained one; the target as configured is a third column."""
        from failforge.metrics.rates import failure_rate

        ctx, cfg = self.ctx, self.cfg
        untrained = self.versions.served_like("target-untrained", base, trained, cfg.train.target)
        arms = {
            "base": lambda: ctx.model("target-untrained", self.versions.spec("target-untrained", untrained, cfg.target)),
            "trained": lambda: ctx.model("target-trained", self.versions.spec("target-trained", trained, cfg.target)),
            "configured": lambda: ctx.model("target", cfg.target),
        }
        tparams = self.task.target_params(SamplingParams(max_tokens=cfg.target_max_tokens, seed=cfg.seed))

        def attack(arm: str, cands: list[Candidate], stage: str) -> list[Verdict]:
            from failforge.methods.evaluation import answer_and_judge, eval_records

            model = arms[arm]()
            texts, refs = [c.text for c in cands], [c.reference for c in cands]
            answers, verdicts = answer_and_judge(
                ctx, model, self.judge, texts, [self.task.target_messages(c) for c in cands], tparams, f"{stage}: {arm} target",
                [self.task.judge_reference(c) for c in cands],
            )
            prov = self._prov(None, target=model)
            put(self.store, eval_records(stage, arm, texts, answers, verdicts, prov, cfg.task == "safety", refs))
            ctx.release(model_role[arm])
            return verdicts

        model_role = {"base": "target-untrained", "trained": "target-trained", "configured": "target"}
        flags = lambda vs: [None if v.label == "unscorable" else v.is_failure for v in vs]  # noqa: E731
        out: dict[str, Any] = {}
        if heldout:
            hcands = [Candidate(text=s.text, reference=s.reference) for s in heldout]
            for arm, key in (("base", "before"), ("trained", "after"), ("configured", "configured")):
                rate = failure_rate(flags(attack(arm, hcands, "heldout")))
                out[f"heldout_failure_rate_{key}"] = rate.rate
                out[f"heldout_failure_rate_{key}_lo"], out[f"heldout_failure_rate_{key}_hi"] = rate.low, rate.high
        scored = [a for a in last if a.label != "unscorable"]
        if scored:
            cands = [Candidate(text=a.instruction, reference=a.reference) for a in scored]
            before, after = attack("base", cands, "reattack"), attack("trained", cands, "reattack")
            both = [(b, a) for b, a in zip(before, after) if "unscorable" not in (b.label, a.label)]
            out.update(
                reattack_instructions=len(both),
                reattack_failures_before=sum(1 for b, _ in both if b.is_failure),
                reattack_failures_after=sum(1 for _, a in both if a.is_failure),
                reattack_failures_fixed=sum(1 for b, a in both if b.is_failure and not a.is_failure),
                reattack_failures_new=sum(1 for b, a in both if not b.is_failure and a.is_failure),
            )
        self.store.put_metrics(0, {f"close_loop.{k}": v for k, v in out.items()})
        shown = {k: v for k, v in out.items() if not k.endswith(("_lo", "_hi"))}
        for k in [k for k in shown if k.startswith("heldout_failure_rate_")]:
            if shown[k] is not None:
                shown[k] = f"{shown[k]:.2f} [{out[k + '_lo']:.2f}, {out[k + '_hi']:.2f}]"
        return shown

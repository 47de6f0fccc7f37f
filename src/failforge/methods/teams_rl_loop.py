"""The steps of one TeaMs-RL run (the config lives in ``methods/teams_rl.py``)."""

from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

from failforge.judges.base import JudgeInput
from failforge.judges.elimination import EliminationJudge, EliminationRules
from failforge.methods.evaluation import accuracy, answer_and_judge, eval_records, fmt_ci, fmt_score, mmlu_prompt, pass_rate
from failforge.methods.judging import measure_judge
from failforge.methods.sampling import filter_samples
from failforge.models.base import SamplingParams
from failforge.rl.env import RewriteEnv, Step, run_episodes
from failforge.rl.reviewer import ELIMINATED, EQUAL, NOT_EQUAL, UNSCORABLE, Reviewer
from failforge.rl.rewrites import ACTIONS
from failforge.run.context import RunContext
from failforge.run.records import Provenance, RewriteRecord, SFTRecord, load, put, record_id

TEAMS_RL, RANDOM_POLICY, EVOL_INSTRUCT, UNTRAINED = "teams-rl", "random-policy", "evol-instruct", "untrained"
ROLES = ("instructor", "reviewer", "expert")
#: instruction pairs labelled Equal / Not Equal by reading them: 40 rewrites by the
#: embedded instructor that no elimination rule caught, 15 paraphrases, 5 copies
EQUALITY_LABELS = "equality.jsonl"
EQUALITY_COLUMNS = {"text_col": "second", "instruction_col": "first", "label_col": "label", "positive": ["Equal"]}
TASK = "instructions"


@dataclass
class Data:
    """Seeds to train the policy on, seeds every arm evolves, held-out questions."""

    train: list[str]
    generate: list[str]
    mmlu: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Arm:
    """One arm's generation: its steps, the instructions the expert answered, its rows."""

    name: str
    steps: list[Step]
    rows: list[SFTRecord] = field(default_factory=list)


@dataclass(frozen=True)
class _Text:
    text: str


class TeamsRLLoop:
    def __init__(self, config, ctx: RunContext):
        self.cfg = config
        self.ctx = ctx
        self.store = ctx.store
        self._embedder = None

    # --- the algorithm ------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg, ctx = self.cfg, self.ctx
        data = self._data()
        by_model = cfg.review == "model"
        self.models = {role: ctx.model(role, getattr(cfg, role)) for role in ROLES if by_model or role != "reviewer"}
        self.equality = self._equality_judge()
        self._measure_reviewer()
        self.rules = EliminationRules(sorry_words=cfg.elimination.sorry_words, markers=[*cfg.elimination.markers, *cfg.rewrites.markers])
        self.reviewer = Reviewer(self.equality, EliminationJudge(self.rules))

        policy = self._train_policy(data.train)  # 1-3. the environment, the reviewer's reward, TRPO
        arms = [self._generate(name, choose, keep_equal, data.generate) for name, choose, keep_equal in self._arms(policy)]  # 4-5.
        self._random_level(arms)
        for arm in arms:
            self._expert(arm, data)  # 4. the expert answers each arm's instructions, at the same budget
        self._check_reviewer()
        if cfg.train is not None and cfg.target is not None:
            self._train_and_evaluate(arms, data.mmlu)  # 6. SFT of the target on each arm, a cheap check
        return {"table": self.table(), "arms": {a.name: len(a.rows) for a in arms}}

    # --- set-up -------------------------------------------------------------------------------
    def _data(self) -> Data:
        from failforge.data import load as load_rows
        from failforge.data import task_text
        from failforge.data.dedup import normalize_text
        from failforge.errors import ConfigError

        s = self.cfg.seeds
        texts, seen = [], set()
        for row in load_rows(s.dataset):
            t = task_text(row)
            if t and normalize_text(t) not in seen:
                seen.add(normalize_text(t))
                texts.append(t)
        random.Random(f"{self.cfg.seed}-seeds").shuffle(texts)
        if len(texts) < s.train + s.generate:
            raise ConfigError(f"seeds.dataset: {len(texts)} instructions are too few for {s.train} to train on and {s.generate} to generate from")
        ev = self.cfg.evaluation
        mmlu = load_rows(ev.mmlu, n=ev.mmlu_n, seed=self.cfg.seed) if ev.mmlu_n and self.cfg.train is not None else []
        data = Data(train=texts[: s.train], generate=texts[s.train : s.train + s.generate], mmlu=mmlu)
        self.ctx.log(f"data: {len(data.train)} seed instructions to train the policy on, {len(data.generate)} to generate from, {len(mmlu)} MMLU questions")
        return data

    def _env(self, seeds: list[str], seed: int, keep_equal: bool = True, in_order: bool = False) -> RewriteEnv:
        embed, dim = None, 0
        if self.cfg.state_embedding:
            embedder = self.embedder()
            dim = int(embedder.embed(["x"]).shape[1])

            def embed(text: str):
                from failforge.metrics.embeddings import normalize

                return normalize(embedder.embed([text]))[0]

        return RewriteEnv(
            seeds, self._rewrite, lambda a, b: self.reviewer.review([(a, b)])[0], episode_steps=self.cfg.episode_steps,
            seed=seed, embed=embed, embed_dim=dim, keep_equal=keep_equal, in_order=in_order,
        )

    def _rewrite(self, instruction: str, action: int) -> str:
        params = SamplingParams(temperature=self.cfg.instructor_temperature, max_tokens=self.cfg.instructor_max_tokens, seed=self.cfg.seed)
        out = self.models["instructor"].generate([self.cfg.rewrites.render(action, instruction)], params)
        return out[0][0].text.strip() if out and out[0] else ""

    def embedder(self):
        if self._embedder is None:
            from failforge.metrics.embeddings import SentenceTransformerEmbedder

            self._embedder = SentenceTransformerEmbedder()
        return self._embedder

    def _calls(self) -> dict[str, int]:
        return {role: int(self.models[role].usage["calls"]) if role in self.models else 0 for role in ROLES}

    @contextmanager
    def _counted(self, into: dict[str, Any]):
        """Calls by role made inside the block, added to ``into`` as ``<role>_calls``."""
        before = self._calls()
        yield
        after = self._calls()
        into.update({f"{r}_calls": after[r] - before[r] for r in ROLES})

    def _prov(self, stage: str, arm: str, **kw) -> Provenance:
        return Provenance(method="teams-rl", task=TASK, stage=stage, arm=arm, judge=f"{self.equality.id}@{self.equality.version}", **kw)

    def _records(self, steps: list[Step], stage: str, arm: str, iteration: int | None) -> list[RewriteRecord]:
        return [
            RewriteRecord(
                id=f"rewrite-{stage}-{arm}-{iteration or 0}-{s.episode}-{s.step}", episode=s.episode, step=s.step,
                action=ACTIONS[s.action], instruction=s.instruction, rewrite=s.rewrite, outcome=s.outcome, reward=s.reward,
                reason=s.reason,
                provenance=self._prov(stage, arm, iteration=iteration, seeds=[s.seed], calls=1 + (s.outcome != ELIMINATED),
                                      calls_by_role={"instructor": 1, "reviewer": int(s.outcome != ELIMINATED)}),
            )
            for s in steps
        ]

    def _equality_judge(self):
        if self.cfg.review == "novelty":
            from failforge.judges.novelty import NoveltyJudge

            return NoveltyJudge(self.cfg.reviewer_check.novelty_threshold, self.embedder())
        from failforge.judges.equality import EqualityJudge

        return EqualityJudge(self.models["reviewer"])

    def _measure_reviewer(self) -> None:
        """The reviewer's error rate on hand-labelled instruction pairs, recorded in the run's
        meta; its calls are counted apart from every arm's."""
        from failforge.judges.measured import packaged_labels

        spent: dict[str, Any] = {}
        with self._counted(spent):
            measure_judge(self.ctx, self.equality, labelled=(packaged_labels(EQUALITY_LABELS), EQUALITY_COLUMNS))
        self.store.put_metrics(0, {"reviewer_check.labelled_calls": spent["reviewer_calls"]})

    # --- 1-3. the policy ----------------------------------------------------------------------
    def _train_policy(self, seeds: list[str]):
        from failforge.rl.trpo import train_policy

        cfg = self.cfg
        env = self._env(seeds, cfg.seed)
        last = {"calls": self._calls()}

        def on_iteration(k: int, steps: list[Step]) -> None:
            m = step_scores(steps)
            now = self._calls()
            m.update({f"{r}_calls": now[r] - last["calls"][r] for r in ROLES})
            last["calls"] = now
            put(self.store, self._records(steps, "train", TEAMS_RL, k), iteration=k)
            self.store.put_metrics(k, m)
            self.ctx.log(
                f"policy iteration {k}/{cfg.policy.iterations}: reward per step {m['reward_per_step']:.3f} "
                f"({m['not_equal']} not equal, {m['equal']} equal, {m['eliminated']} eliminated, {m['unscorable']} unscorable; "
                f"{m['instructor_calls']} instructor and {m['reviewer_calls']} reviewer calls)"
            )

        with self.ctx.progress("policy: TRPO iterations", cfg.policy.iterations):
            return train_policy(env, cfg.policy, self.ctx.run_dir / "policy", cfg.seed, on_iteration, self.ctx.log)

    # --- 4-5. generation by every arm on the same seeds -------------------------------------------
    def _arms(self, policy) -> list[tuple[str, Callable, bool]]:
        from failforge.rl.trpo import policy_chooser, random_chooser

        seed, b = self.cfg.seed, self.cfg.baselines
        arms = [(TEAMS_RL, policy_chooser(policy, seed, self.cfg.generate.deterministic), True)]
        if b.random_policy:
            arms.append((RANDOM_POLICY, random_chooser(seed, len(ACTIONS)), True))
        if b.evol_instruct:
            arms.append((EVOL_INSTRUCT, random_chooser(seed + 1, len(ACTIONS)), False))
        return arms

    def _generate(self, name: str, choose: Callable, keep_equal: bool, seeds: list[str]) -> Arm:
        """One episode per seed; Evol-Instruct keeps the instruction when a rewrite is Equal."""
        env = self._env(seeds, self.cfg.seed, keep_equal=keep_equal, in_order=True)
        m: dict[str, Any] = {}
        with self._counted(m), self.ctx.tracked(self.models["instructor"], f"{name}: rewrites", len(seeds) * self.cfg.episode_steps):
            steps = run_episodes(env, choose, len(seeds))
        put(self.store, self._records(steps, "generate", name, None))
        scores = step_scores(steps)
        scored = [s for s in steps if s.outcome != ELIMINATED]
        ne = pass_rate([_verdict(s) for s in scored]) if scored else None
        out = {
            "steps": len(steps), "reward_per_step": scores["reward_per_step"], "eliminated": scores["eliminated"],
            "unscorable": scores["unscorable"], "generation_instructor_calls": m["instructor_calls"],
            "generation_reviewer_calls": m["reviewer_calls"],
        }
        if ne is not None:
            out.update({"not_equal_rate": ne.rate, "not_equal_rate_lo": ne.low, "not_equal_rate_hi": ne.high})
        self.store.put_metrics(0, {f"arms.{name}.{k}": v for k, v in out.items()})
        self.ctx.log(f"{name}: {len(steps)} rewrites, reward per step {scores['reward_per_step']:.3f}, {scores['eliminated']} eliminated")
        return Arm(name=name, steps=steps)

    def _random_level(self, arms: list[Arm]) -> None:
        """The random policy's reward per step on the generation seeds, drawn as a line beside the learning curve."""
        level = next((step_scores(a.steps)["reward_per_step"] for a in arms if a.name == RANDOM_POLICY), None)
        if level is not None:
            for k in range(1, self.cfg.policy.iterations + 1):
                self.store.put_metrics(k, {"random_policy_reward_per_step": level})

    # --- 4. the expert ------------------------------------------------------------------------
    def _expert(self, arm: Arm, data: Data) -> None:
        cfg = self.cfg
        keep = (NOT_EQUAL,) if arm.name == EVOL_INSTRUCT else (NOT_EQUAL, EQUAL, UNSCORABLE)
        kept = [s for s in arm.steps if s.outcome in keep]
        sampled = filter_samples(
            ([s.rewrite] for s in kept), lambda t: _Text(t.strip()) if t.strip() else None, known=data.train + data.generate,
            heldout=[q["question"] for q in data.mmlu], dedup_threshold=cfg.generate.dedup_threshold,
        )
        chosen = [kept[i] for i, _ in sampled.items][: cfg.generate.expert_queries]
        texts = [s.rewrite for s in chosen]
        params = SamplingParams(temperature=0.0, max_tokens=cfg.expert_max_tokens)
        m: dict[str, Any] = {}
        with self._counted(m):
            outs, verdicts = answer_and_judge(self.ctx, self.models["expert"], EliminationJudge(self.rules), texts, texts, params, f"{arm.name}: expert answers")
        for s, o, v in zip(chosen, outs, verdicts):
            if v.label != "pass":
                continue
            c = o[0]
            by_role = {"instructor": 1, "reviewer": int(s.outcome != ELIMINATED), "expert": 1}
            arm.rows.append(
                SFTRecord(
                    id=record_id(f"sft-{arm.name}", s.rewrite),
                    messages=[{"role": "user", "content": s.rewrite}, {"role": "assistant", "content": c.text.strip()}],
                    provenance=self._prov("expert", arm.name, seeds=[s.seed], calls=sum(by_role.values()), calls_by_role=by_role,
                                          tokens=c.prompt_tokens + c.completion_tokens, target_fingerprint=self.models["expert"].fingerprint),
                )
            )
        put(self.store, arm.rows)
        results = self.store.metrics().get(0, {})
        g = lambda k: int(results.get(f"arms.{arm.name}.{k}") or 0)  # noqa: E731
        training = self._training_calls() if arm.name == TEAMS_RL else {r: 0 for r in ROLES}
        out = {
            **{f"filter_{k}": v for k, v in sampled.counts().items()},
            "expert_queries": len(texts), "answers_eliminated": sum(1 for v in verdicts if v.label != "pass"), "dataset_size": len(arm.rows),
            "instructor_calls": training["instructor"] + g("generation_instructor_calls"),
            "reviewer_calls": training["reviewer"] + g("generation_reviewer_calls"),
            "expert_calls": m["expert_calls"],
            **self._diversity([r.messages[0]["content"] for r in arm.rows]),
        }
        if arm.name == TEAMS_RL:
            out.update({"policy_training_instructor_calls": training["instructor"], "policy_training_reviewer_calls": training["reviewer"]})
        self.store.put_metrics(0, {f"arms.{arm.name}.{k}": v for k, v in out.items()})
        self.ctx.log(f"{arm.name}: {sampled.line()}; {len(texts)} expert queries, {len(arm.rows)} SFT rows")

    def _training_calls(self) -> dict[str, int]:
        metrics = self.store.metrics()
        return {r: int(sum(metrics.get(k, {}).get(f"{r}_calls", 0) for k in range(1, self.cfg.policy.iterations + 1))) for r in ROLES}

    def _diversity(self, texts: list[str]) -> dict[str, Any]:
        from failforge.metrics.diversity import self_bleu
        from failforge.metrics.embeddings import inner_similarity

        if len(texts) < 2:
            return {"self_bleu": None, "inner_similarity": None}
        return {"self_bleu": self_bleu(texts), "inner_similarity": inner_similarity(texts, self.embedder())}

    # --- the reviewer, checked ------------------------------------------------------------------
    def _check_reviewer(self) -> None:
        """On reviewed training steps: does the reviewer give the same verdict with the
        two instructions swapped, and does it agree with an embedding-novelty rule?"""
        n, threshold = self.cfg.reviewer_check.n, self.cfg.reviewer_check.novelty_threshold
        if self.cfg.review == "novelty":
            # the rule is symmetric and is the rule it would be compared with: nothing to check
            self.ctx.log("reviewer check: not applicable, the reviewer is the embedding rule")
            self.store.put_metrics(0, {"reviewer_check.n": 0})
            return
        reviewed = sorted((r for r in load(self.store, "rewrite") if r.provenance.stage == "train" and r.outcome in (NOT_EQUAL, EQUAL)), key=lambda r: r.id)
        if not n or not reviewed:
            self.store.put_metrics(0, {"reviewer_check.n": 0})
            return
        sample = random.Random(f"{self.cfg.seed}-reviewer-check").sample(reviewed, min(n, len(reviewed)))
        with self.ctx.tracked(self.models["reviewer"], "reviewer check: swapped order", len(sample)):
            swapped = self.equality.judge([JudgeInput(instruction=r.rewrite, responses=[r.instruction]) for r in sample])
        same = [(r.outcome == NOT_EQUAL) == (v.label == "pass") for r, v in zip(sample, swapped) if v.label != "unscorable"]
        import numpy as np

        from failforge.metrics.embeddings import normalize

        emb = self.embedder()
        a, b = normalize(emb.embed([r.instruction for r in sample])), normalize(emb.embed([r.rewrite for r in sample]))
        novel = (np.sum(a * b, axis=1) < threshold).tolist()
        agree = [(r.outcome == NOT_EQUAL) == bool(nv) for r, nv in zip(sample, novel)]
        out = {
            "reviewer_check.n": len(sample),
            "reviewer_check.not_equal_rate": sum(r.outcome == NOT_EQUAL for r in sample) / len(sample),
            "reviewer_check.swap_agreement": sum(same) / len(same) if same else None,
            "reviewer_check.swap_unscorable": sum(1 for v in swapped if v.label == "unscorable"),
            "reviewer_check.novelty_not_equal_rate": sum(novel) / len(novel),
            "reviewer_check.novelty_agreement": sum(agree) / len(agree),
        }
        self.store.put_metrics(0, out)
        self.ctx.log("reviewer check: " + ", ".join(f"{k.split('.', 1)[1]}={fmt_score(v)}" for k, v in out.items()))

    # --- 6. SFT of the target, and a cheap check ------------------------------------------------
    def _train_and_evaluate(self, arms: list[Arm], mmlu: list[dict[str, Any]]) -> None:
        from failforge.judges.choice import ChoiceJudge
        from failforge.methods.versions import Versions

        cfg, ctx = self.cfg, self.ctx
        versions = Versions(ctx)
        base = versions.initial("target", cfg.target)
        if base is None:
            return
        trained = {
            a.name: versions.train_sft(f"target-{a.name}", base, [{"messages": r.messages} for r in a.rows], cfg.train)
            for a in arms
            if a.rows
        }
        if not trained or not mmlu:
            return
        like = next(iter(trained.values()))
        specs = {UNTRAINED: versions.spec("target-untrained", versions.served_like("target-untrained", base, like, cfg.train), cfg.target)}
        specs.update({arm: versions.spec(f"target-{arm}", v, cfg.target) for arm, v in trained.items()})
        prompts = [mmlu_prompt(q) for q in mmlu]
        for arm, spec in specs.items():
            model = ctx.model(f"arm-{arm}", spec)
            outs, verdicts = answer_and_judge(ctx, model, ChoiceJudge(), prompts, prompts, SamplingParams(temperature=0.0, max_tokens=8),
                                              f"{arm}: MMLU", [q["answer"] for q in mmlu])
            prov = Provenance(method="teams-rl", task=TASK, stage="mmlu", arm=arm, target_fingerprint=model.fingerprint)
            put(self.store, eval_records("mmlu", arm, prompts, outs, verdicts, prov, False, [q["answer"] for q in mmlu]))
            ctx.release(f"arm-{arm}")
            acc = accuracy(verdicts)
            self.store.put_metrics(0, {f"arms.{arm}.mmlu_accuracy": acc.rate, f"arms.{arm}.mmlu_accuracy_lo": acc.low,
                                       f"arms.{arm}.mmlu_accuracy_hi": acc.high, f"arms.{arm}.mmlu_n": len(verdicts)})

    # --- the table ----------------------------------------------------------------------------
    def table(self) -> Table:
        metrics = self.store.metrics()
        results = metrics.get(0, {})
        t = Table(title="TeaMs-RL · arms at the same expert budget")
        cols = ("arm", "SFT rows", "not-equal rate [95% CI]", "eliminated", "Self-BLEU", "inner sim.", "instructor", "reviewer", "expert", "MMLU acc. [95% CI]")
        for col in cols:
            t.add_column(col, justify="right", no_wrap=True)
        for arm in (UNTRAINED, TEAMS_RL, RANDOM_POLICY, EVOL_INSTRUCT):
            g = lambda k: results.get(f"arms.{arm}.{k}")  # noqa: E731
            if g("dataset_size") is None and g("mmlu_accuracy") is None:
                continue
            n = lambda k: "-" if g(k) is None else str(int(g(k)))  # noqa: E731
            t.add_row(arm, n("dataset_size"), fmt_ci(g, "not_equal_rate"), n("eliminated"), fmt_score(g("self_bleu")), fmt_score(g("inner_similarity")),
                      n("instructor_calls"), n("reviewer_calls"), n("expert_calls"), fmt_ci(g, "mmlu_accuracy"))
        curve = [metrics[k]["reward_per_step"] for k in sorted(metrics) if k >= 1 and "reward_per_step" in metrics[k]]
        notes = []
        if curve:
            notes.append("policy reward per step by iteration: " + " ".join(f"{v:.2f}" for v in curve))
        if results.get("reviewer_check.n"):
            notes.append(f"reviewer: swap agreement {fmt_score(results.get('reviewer_check.swap_agreement'))}, "
                         f"agreement with embedding novelty {fmt_score(results.get('reviewer_check.novelty_agreement'))} "
                         f"on {int(results['reviewer_check.n'])} reviews")
        notes.append("calls: the teams-rl row includes policy training")
        t.caption = "; ".join(notes)
        return t


def step_scores(steps: list[Step]) -> dict[str, Any]:
    """Reward per step and the count of each reviewer outcome."""
    counts = {o: sum(1 for s in steps if s.outcome == o) for o in (NOT_EQUAL, EQUAL, ELIMINATED, UNSCORABLE)}
    return {
        "steps": len(steps),
        "reward_per_step": sum(s.reward for s in steps) / len(steps) if steps else 0.0,
        "not_equal": counts[NOT_EQUAL], "equal": counts[EQUAL], "eliminated": counts[ELIMINATED], "unscorable": counts[UNSCORABLE],
    }


def _verdict(s: Step):
    from failforge.judges.base import Verdict

    return Verdict(label={NOT_EQUAL: "pass", EQUAL: "fail"}.get(s.outcome, "unscorable"))


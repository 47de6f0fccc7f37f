"""The steps of one Mistake Analysis run (the config lives in ``methods/mistake_analysis.py``)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

from failforge.judges.base import Judge, Verdict
from failforge.methods.evaluation import accuracy, answer_and_judge, eval_records, fmt_ci, fmt_score, mmlu_prompt, pass_rate
from failforge.methods.judging import measure_judge, task_judge
from failforge.models.base import SamplingParams
from failforge.run.context import RunContext
from failforge.run.records import AnalysisRecord, AttemptRecord, Provenance, SFTRecord, put, record_id
from failforge.tasks.safety import REFUSAL_TEMPLATE, SafetyTask
from failforge.train.base import ModelVersion

UNTRAINED = "untrained"
#: critiques of the embedded model's harmful answers, labelled by reading them (pass = usable)
CRITIQUE_LABELS = "critiques.jsonl"
#: premise rows longer than this (request + answer, characters) are left out: a 2,048-token window
PREMISE_MAX_CHARS = 4000
CRITIQUE_COLUMNS = {"text_col": "critique", "label_col": "label", "instruction_col": "instruction", "reference_col": "answer"}
MISTAKE_ANALYSIS, SFT, CRITIQUE_REVISE = "mistake-analysis", "sft", "critique-revise"


@dataclass
class Split:
    """Harmful instructions to train on and held out, benign tasks, MMLU questions."""

    train: list[str]
    test: list[str]
    #: (instruction, helpful answer)
    benign_train: list[tuple[str, str]]
    benign_test: list[str]
    mmlu: list[dict[str, Any]]
    #: training candidates dropped as near-duplicates of held-out instructions
    decontaminated: int = 0


@dataclass
class Bad:
    """An induced answer the judge called harmful."""

    instruction: str
    answer: str


@dataclass
class Arms:
    """Each arm's training rows (the same count for every arm) and where they came from."""

    rows: dict[str, list[SFTRecord]] = field(default_factory=dict)


def _conv(user: str, assistant: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def _take(pool: list, k: int) -> list:
    """``k`` items from ``pool`` in order, starting over when it runs out (same budget for every arm)."""
    return [pool[i % len(pool)] for i in range(k)] if pool else []


class MistakeAnalysisLoop:
    def __init__(self, config, ctx: RunContext):
        self.cfg = config
        self.ctx = ctx
        self.store = ctx.store
        self.task = SafetyTask()
        self.prompts = config.prompts

    # --- the algorithm ------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        from failforge.methods.versions import Versions

        cfg, ctx = self.cfg, self.ctx
        split = self._split()
        self.judge = task_judge(ctx, self.task, cfg.judge)
        self.versions = Versions(ctx)
        base = self.versions.initial("model", cfg.model)

        bad = self._induce(split.train)  # 1. guided mistake induction
        analyses = self._analyse(bad)  # 2. guided analysis, filtered
        harmless = self._harmless_rows(split.train)  # 3. ordinary SFT rows beside the unguided analysis rows
        helpful = [(f"helpful-{i}", _conv(q, a)) for i, (q, a) in enumerate(split.benign_train)]
        revisions = self._revise(analyses) if cfg.baselines.critique_revise else []
        arms = self._mixes(analyses, harmless, helpful, revisions)

        trained: dict[str, ModelVersion] = {}  # 4. LoRA SFT of every arm, same rows, same steps
        for arm, records in arms.rows.items():
            trained[arm] = self.versions.train_sft(f"model-{arm}", base, [{"messages": r.messages} for r in records], cfg.train)

        scores = self._evaluate(base, trained, split)  # 5. every arm on held-out instructions
        self._premise(scores.get(UNTRAINED, {}))
        return {"table": self.table(), "arms": list(scores), "train_rows": {a: len(r) for a, r in arms.rows.items()}}

    # --- set-up ---------------------------------------------------------------------------------
    def _split(self) -> Split:
        from failforge.data import load, prompt_text, task_text
        from failforge.data.dedup import normalize_text, overlaps
        from failforge.errors import ConfigError

        d, seed = self.cfg.data, self.cfg.seed
        harmful, seen = [], set()
        for source in d.harmful:
            for row in load(source):
                text = prompt_text(row)
                if text and normalize_text(text) not in seen:
                    seen.add(normalize_text(text))
                    harmful.append(text)
        random.Random(f"{seed}-harmful").shuffle(harmful)
        test, rest = harmful[: d.test], harmful[d.test :]
        leaked = overlaps(rest, test, d.dedup_threshold) if rest else []
        clean = [t for t, bad in zip(rest, leaked) if not bad]
        if len(test) < d.test or len(clean) < d.train:
            raise ConfigError(
                f"data.harmful: {len(harmful)} instructions ({sum(leaked)} near-duplicates of held-out ones) are too few "
                f"for {d.test} held out and {d.train} to train on"
            )
        benign = [(text, str(row.get("output") or "").strip()) for row in load(d.benign) if (text := task_text(row))]
        random.Random(f"{seed}-benign").shuffle(benign)
        if len(benign) <= d.benign_test:
            raise ConfigError(f"data.benign: {len(benign)} rows; {d.benign_test} held out leave none to train on")
        mmlu = load(d.mmlu, n=d.mmlu_n, seed=seed) if d.mmlu_n else []
        split = Split(
            train=clean[: d.train], test=test, benign_train=[b for b in benign[d.benign_test :] if b[1]],
            benign_test=[q for q, _ in benign[: d.benign_test]], mmlu=mmlu, decontaminated=sum(leaked),
        )
        self.ctx.log(
            f"data: {len(split.train)} harmful instructions to train on, {len(split.test)} held out "
            f"({split.decontaminated} near-duplicates of held-out ones dropped), {len(split.benign_train)} benign rows, "
            f"{len(split.benign_test)} benign held out, {len(split.mmlu)} MMLU questions"
        )
        self.store.put_metrics(0, {"data.train": len(split.train), "data.test": len(split.test), "data.decontaminated": split.decontaminated})
        return split

    def _prov(self, stage: str, model=None, arm: str | None = None, **extra) -> Provenance:
        fp = None if model is None else (model if isinstance(model, str) else model.fingerprint)
        return Provenance(
            method="mistake-analysis", task="safety", stage=stage, arm=arm, target_fingerprint=fp,
            judge=f"{self.judge.id}@{self.judge.version}", **extra,
        )

    def _params(self, max_tokens: int, temperature: float = 0.0) -> SamplingParams:
        return SamplingParams(temperature=temperature, max_tokens=max_tokens, seed=self.cfg.seed)

    def _role(self, role: str):
        spec = getattr(self.cfg, role) if role != "model" else None
        return self.ctx.model(role if spec is not None else "model", spec or self.cfg.model)

    # --- 1. guided mistake induction ----------------------------------------------------------
    def _hinted(self, stage: str, role: str, template: str, hint: str, instructions: list[str], temperature: float):
        """The model answers each instruction with a hint; the harm judge reads each answer."""
        model = self._role(role)
        prompts = [template.format(instruction=i, hint=hint) for i in instructions]
        answers, verdicts = answer_and_judge(
            self.ctx, model, self.judge, instructions, prompts, self._params(self.cfg.answer_max_tokens, temperature), stage
        )
        records = [
            AttemptRecord(
                id=record_id(stage, i), instruction=i, proposer_prompt=p, responses=[c.text for c in comps], label=v.label,
                score=v.score, reason=v.reason, harmful_content=True,
                provenance=self._prov(stage, model, calls=1, tokens=sum(c.prompt_tokens + c.completion_tokens for c in comps)),
            )
            for i, p, comps, v in zip(instructions, prompts, answers, verdicts)
        ]
        put(self.store, records)
        return records

    def _induce(self, train: list[str]) -> list[Bad]:
        records = self._hinted("induction", "inducer", self.prompts.induce, self.prompts.hint, train, self.cfg.induce_temperature)
        kept = [Bad(r.instruction, r.responses[0]) for r in records if r.label == "fail" and r.responses[0].strip()]
        counts = {"kept": len(kept), "dropped": sum(1 for r in records if r.label == "pass"), "unscorable": sum(1 for r in records if r.label == "unscorable")}
        self.ctx.log(f"induction: {len(records)} hinted answers, {counts['kept']} harmful kept, {counts['dropped']} harmless dropped, {counts['unscorable']} unscorable")
        self.store.put_metrics(0, {f"induction.{k}": v for k, v in counts.items()})
        return kept

    # --- 2. guided analysis -------------------------------------------------------------------
    def _analyse(self, bad: list[Bad]) -> list[AnalysisRecord]:
        from failforge.judges.critique import CritiqueJudge

        from failforge.judges.measured import packaged_labels

        model, p = self._role("analyst"), self.prompts
        rule = CritiqueJudge(self.cfg.critique)
        measure_judge(self.ctx, rule, labelled=(packaged_labels(CRITIQUE_LABELS), CRITIQUE_COLUMNS))
        prompts = [p.analyse.format(instruction=b.instruction, answer=b.answer, hint=p.hint) for b in bad]
        crit, verdicts = answer_and_judge(
            self.ctx, model, rule, [b.instruction for b in bad], prompts,
            self._params(self.cfg.critique_max_tokens), "analysis", references=[b.answer for b in bad],
        )
        records = [
            AnalysisRecord(
                id=record_id("analysis", b.instruction), instruction=b.instruction, answer=b.answer, critique=c[0].text.strip(),
                label=v.label, reason=v.reason, harmful_content=True,
                provenance=self._prov("analysis", model, calls=2, tokens=c[0].prompt_tokens + c[0].completion_tokens),
            )
            for b, c, v in zip(bad, crit, verdicts)
        ]
        put(self.store, records)
        dropped: dict[str, int] = {}
        for r in records:
            if not r.kept:
                reason = r.reason.split(" ", 1)[0].rstrip(":")
                dropped[reason] = dropped.get(reason, 0) + 1
        kept = [r for r in records if r.kept]
        self.ctx.log(f"analysis: {len(records)} critiques, {len(kept)} kept, dropped {dropped or 'none'}")
        self.store.put_metrics(0, {"analysis.kept": len(kept), **{f"analysis.dropped_{k}": v for k, v in dropped.items()}})
        return kept

    # --- 3. training rows -----------------------------------------------------------------------
    def _harmless_rows(self, train: list[str]) -> list[tuple[str, list[dict[str, str]]]]:
        """Harmful instruction -> harmless answer: the model's own answer with the safe
        hint when the judge calls it harmless, else the teacher's, else a refusal."""
        records = self._hinted("harmless", "model", self.prompts.harmless, self.prompts.safe_hint, train, 0.0)
        teacher_answers: dict[str, str] = {}
        missing = [r.instruction for r in records if r.label != "pass"]
        if self.cfg.teacher is not None and missing:
            teacher = self.ctx.model("teacher", self.cfg.teacher)
            with self.ctx.tracked(teacher, "teacher: harmless answers", len(missing)):
                outs = teacher.generate(missing, self._params(self.cfg.answer_max_tokens))
            teacher_answers = {i: o[0].text.strip() for i, o in zip(missing, outs) if o[0].text.strip()}
        rows, source = [], {"model": 0, "teacher": 0, "refusal": 0}
        for r in records:
            kind = "model" if r.label == "pass" else "teacher" if r.instruction in teacher_answers else "refusal"
            answer = {"model": r.responses[0] if r.responses else "", "teacher": teacher_answers.get(r.instruction, "")}.get(kind, REFUSAL_TEMPLATE)
            source[kind] += 1
            rows.append((r.id, _conv(r.instruction, answer.strip())))
        self.ctx.log(f"harmless answers: {source['model']} the model's own, {source['teacher']} the teacher's, {source['refusal']} refusals")
        self.store.put_metrics(0, {f"harmless.{k}": v for k, v in source.items()})
        return rows

    def _revise(self, analyses: list[AnalysisRecord]) -> list[tuple[str, list[dict[str, str]]]]:
        """Critique-Revise: the analyst rewrites each bad answer following its critique;
        revisions the judge still calls harmful are not trained on."""
        model, p = self._role("analyst"), self.prompts
        prompts = [p.revise.format(instruction=a.instruction, answer=a.answer, critique=a.critique, hint=p.safe_hint) for a in analyses]
        outs, verdicts = answer_and_judge(
            self.ctx, model, self.judge, [a.instruction for a in analyses], prompts, self._params(self.cfg.answer_max_tokens), "revision"
        )
        records = [
            AttemptRecord(
                id=record_id("revision", a.instruction), instruction=a.instruction, proposer_prompt=pr, responses=[o[0].text],
                label=v.label, score=v.score, reason=v.reason, harmful_content=True, provenance=self._prov("revision", model, calls=1),
            )
            for a, pr, o, v in zip(analyses, prompts, outs, verdicts)
        ]
        put(self.store, records)
        kept = [(r.id, _conv(r.instruction, r.responses[0].strip())) for r in records if r.label == "pass" and r.responses[0].strip()]
        self.ctx.log(f"critique-revise: {len(records)} revisions, {len(kept)} judged harmless and kept")
        self.store.put_metrics(0, {"revision.kept": len(kept), "revision.dropped": len(records) - len(kept)})
        return kept

    def _mixes(self, analyses, harmless, helpful, revisions) -> Arms:
        """Every arm's rows (``plan_arms``), stored with their arm and stage."""
        cfg, p = self.cfg, self.prompts
        rng = random.Random(f"{cfg.seed}-mix")
        analysis_rows = [(r.id, _conv(p.unguided.format(instruction=r.instruction, answer=r.answer), r.critique)) for r in analyses]
        plans = plan_arms(
            analysis_rows, rng.sample(harmless, len(harmless)), rng.sample(helpful, len(helpful)), revisions, cfg.mix, cfg.baselines
        )
        arms = Arms()
        if not analysis_rows:
            self.ctx.log("no usable analysis: no arm is trained (the untrained model is still evaluated)")
            return arms
        for arm, parts in plans.items():
            records = [
                SFTRecord(
                    id=f"sft-{arm}-{stage}-{k}-{src}", messages=messages, harmful_content=stage in ("analysis", "revision"),
                    provenance=self._prov(stage, arm=arm, seeds=[src]),
                )
                for stage, rows in parts
                for k, (src, messages) in enumerate(rows)
            ]
            put(self.store, records)
            arms.rows[arm] = records
        sizes = {arm: len(rs) for arm, rs in arms.rows.items()}
        shares = {stage: len(rows) for stage, rows in plans[MISTAKE_ANALYSIS]}
        self.ctx.log(f"training rows per arm: {sizes} (the mix: {shares})")
        self.store.put_metrics(0, {f"mix.{arm}": n for arm, n in sizes.items()})
        return arms

    # --- 5. evaluation --------------------------------------------------------------------------
    def _evaluate(self, base: ModelVersion | None, trained: dict[str, ModelVersion], split: Split) -> dict[str, dict[str, Any]]:
        """The untrained model and every trained arm, each served the same way, on the
        same held-out items."""
        cfg, ctx = self.cfg, self.ctx
        p = self.prompts
        hijack = [
            p.hijack[i % len(p.hijack)].format(task=split.benign_test[i % len(split.benign_test)], injection=inj)
            for i, inj in enumerate(split.test)
        ]
        mmlu_prompts = [mmlu_prompt(q) for q in split.mmlu]
        helpfulness = self._helpfulness_judge()
        specs = {UNTRAINED: cfg.model}
        if base is not None and trained:
            like = next(iter(trained.values()))
            untrained = self.versions.served_like("model-untrained", base, like, cfg.train)
            specs = {UNTRAINED: self.versions.spec("model-untrained", untrained, cfg.model)}
            specs.update({arm: self.versions.spec(f"model-{arm}", v, cfg.model) for arm, v in trained.items()})
        answer = self._params(cfg.eval_max_tokens or cfg.answer_max_tokens)
        scores: dict[str, dict[str, Any]] = {}
        for arm, spec in specs.items():
            model = ctx.model(f"arm-{arm}", spec)
            m: dict[str, Any] = {}
            for stage, texts, prompts, judge, refs, params in (
                ("harmful", split.test, split.test, self.judge, None, answer),
                ("hijack", hijack, hijack, self.judge, None, answer),
                ("mmlu", mmlu_prompts, mmlu_prompts, _choice_judge(), [q["answer"] for q in split.mmlu], self._params(8)),
                ("helpful", split.benign_test, split.benign_test, helpfulness, None, answer),
            ):
                if not texts or judge is None:
                    continue
                outs, verdicts = answer_and_judge(ctx, model, judge, texts, prompts, params, f"{arm}: {stage}", refs)
                put(self.store, eval_records(stage, arm, texts, outs, verdicts, self._prov(stage, model, arm), stage in ("harmful", "hijack"), refs))
                m.update(_stage_scores(stage, verdicts))
            ctx.release(f"arm-{arm}")
            scores[arm] = m
            self.store.put_metrics(0, {f"arms.{arm}.{k}": v for k, v in m.items()})
        return scores

    def _helpfulness_judge(self) -> Judge | None:
        spec = self.cfg.helpfulness_judge
        if spec is None:
            return None
        from failforge.judges.registry import build_judge

        judge = build_judge(spec, self.ctx.model("helpfulness-judge", spec.model) if spec.model else None)
        measure_judge(self.ctx, judge)
        return judge

    # --- the premise --------------------------------------------------------------------------
    def _premise(self, untrained: dict[str, Any]) -> None:
        """Discrimination: the model, asked "is this reply harmless?", against people's
        labels; generation: the untrained model's harmless rate on held-out instructions."""
        n = self.cfg.premise.n
        out: dict[str, Any] = {"premise.generation_harmless_rate": untrained.get("harmless_rate")}
        if n:
            from failforge.data import get_entry, pull
            from failforge.data.pypi import ROWS_FILE
            from failforge.judges.labelled import evaluate, load_labelled
            from failforge.judges.registry import JudgeSpec, build_judge
            from failforge.tasks.safety import HARM_LABELS

            self_judge = build_judge(JudgeSpec(kind="llm", rubric="harmless"), self.ctx.model("model", self.cfg.model))
            rows = load_labelled(pull(get_entry(HARM_LABELS)) / ROWS_FILE, self_judge, instruction_col="prompt")
            # rows whose request and answer fit a small model's context window (counted)
            fits = [r for r in rows if len(r.item.instruction) + len(r.item.response) <= PREMISE_MAX_CHARS]
            out["premise.too_long"] = len(rows) - len(fits)
            rows = random.Random(f"{self.cfg.seed}-premise").sample(fits, min(n, len(fits)))
            with self.ctx.tracked(self_judge.model, "premise: the model judges harm", len(rows)):
                report, _ = evaluate(self_judge, rows, data=HARM_LABELS)
            c = report.confusion
            harmful = c["fail"]["fail"] + c["fail"]["pass"] + c["fail"]["unscorable"]
            out.update(
                {
                    "premise.discrimination_accuracy": report.accuracy,
                    "premise.discrimination_rows": len(rows),
                    "premise.discrimination_unscorable": report.unscorable,
                    # how often it calls a harmful answer harmful
                    "premise.harmful_called_harmful": c["fail"]["fail"] / harmful if harmful else None,
                }
            )
        self.store.put_metrics(0, out)
        self.ctx.log("premise: " + ", ".join(f"{k.split('.', 1)[1]}={fmt_score(v)}" for k, v in out.items()))

    # --- the table ----------------------------------------------------------------------------
    def table(self) -> Table:
        results = self.store.metrics().get(0, {})
        t = Table(title="Mistake Analysis · arms on held-out instructions")
        for col in ("arm", "train rows", "harmless rate [95% CI]", "goal-hijack harmless [95% CI]", "MMLU accuracy [95% CI]", "helpfulness 1-10", "unscorable"):
            t.add_column(col, justify="right", no_wrap=True)
        arms = [a for a in (UNTRAINED, SFT, CRITIQUE_REVISE, MISTAKE_ANALYSIS) if f"arms.{a}.harmful_n" in results]
        for arm in arms:
            g = lambda k: results.get(f"arms.{arm}.{k}")  # noqa: E731
            unscorable = sum(int(g(f"{s}_unscorable") or 0) for s in ("harmful", "hijack", "mmlu", "helpful"))
            t.add_row(
                arm, "-" if results.get(f"mix.{arm}") is None else str(int(results[f"mix.{arm}"])), fmt_ci(g, "harmless_rate"),
                fmt_ci(g, "hijack_harmless_rate"), fmt_ci(g, "mmlu_accuracy"), fmt_score(g("helpfulness")), str(unscorable),
            )
        judge = self.store.meta().get("judges", {})
        if judge:
            from failforge.judges.measured import summary_lines

            t.caption = "; ".join(f"{k}: {v}" for k, v in summary_lines(judge).items())
        return t


Rows = list[tuple[str, Any]]


def plan_arms(analysis: Rows, harmless: Rows, helpful: Rows, revisions: Rows, mix, baselines) -> dict[str, list[tuple[str, Rows]]]:
    """Each arm's training rows by stage, every arm the same size: A analysis rows (in a
    baseline, what replaces them), H = mix.harmless x A harmless rows and B =
    mix.helpful x A helpful rows. Plain SFT fills the analysis share with more harmless
    rows; Critique-Revise with its kept revisions, then harmless rows."""
    a = len(analysis)
    h, b = round(mix.harmless * a), round(mix.helpful * a)
    plans = {MISTAKE_ANALYSIS: [("analysis", analysis), ("harmless", _take(harmless, h)), ("helpful", _take(helpful, b))]}
    if baselines.sft:
        plans[SFT] = [("harmless", _take(harmless, a + h)), ("helpful", _take(helpful, b))]
    if baselines.critique_revise:
        r = min(len(revisions), a)
        plans[CRITIQUE_REVISE] = [("revision", revisions[:r]), ("harmless", _take(harmless, a - r + h)), ("helpful", _take(helpful, b))]
    return plans


def _choice_judge() -> Judge:
    from failforge.judges.choice import ChoiceJudge

    return ChoiceJudge()


def _stage_scores(stage: str, verdicts: list[Verdict]) -> dict[str, Any]:
    """Rates with intervals: harmless rates (pass among scored), MMLU accuracy
    (unscorable counts as wrong), the mean helpfulness rating."""
    unscorable = sum(1 for v in verdicts if v.label == "unscorable")
    out: dict[str, Any] = {f"{stage}_n": len(verdicts), f"{stage}_unscorable": unscorable}
    if stage in ("harmful", "hijack"):
        r = pass_rate(verdicts)
        key = "harmless_rate" if stage == "harmful" else "hijack_harmless_rate"
    elif stage == "mmlu":
        r = accuracy(verdicts)
        key = "mmlu_accuracy"
    else:
        ratings = [v.score for v in verdicts if v.label != "unscorable" and v.score is not None]
        out["helpfulness"] = sum(ratings) / len(ratings) if ratings else None
        return out
    out.update({key: r.rate, f"{key}_lo": r.low, f"{key}_hi": r.high})
    return out


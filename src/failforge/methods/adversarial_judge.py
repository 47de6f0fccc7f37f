"""Adversarial judge fine-tuning (arXiv 2308.13768): an adversary hunts a judge's
blind spots, round after round, and the judge learns from what it got wrong.

Algorithm (one round; ``methods/adversarial_judge_loop.py``):
  1. the adversary, shown the judge's current misses (problematic prompts it called
     benign), writes prompts that a person would call problematic but the judge
     might pass, and benign-but-contentious ones so the judge learns both sides;
     near-duplicates and copies of held-out prompts are dropped and counted;
  2. each prompt gets a label from the labeller (web page, terminal, or an oracle);
  3. the judge classifies them; its mistakes plus a sample of its correct answers
     join its training set, and it is fine-tuned from the previous round's weights;
  4. held-out accuracy, precision and recall (with intervals) and the number of
     adversarial prompts that fooled it are recorded, beside the untuned judge and a
     judge trained on as many *randomly sampled* labelled prompts (the control).
After the last round the judges are measured on toxic-comment classification.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from failforge.judges.registry import JudgeSpec
from failforge.methods.base import Method, MethodConfig
from failforge.models.spec import ModelSpec
from failforge.train.base import TrainSettings


class PromptPools(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: catalogue datasets (or files) of problematic prompts
    problematic: list[str] = Field(default_factory=lambda: ["harmbench", "advbench"])
    #: catalogue datasets (or files) of benign prompts, contentious ones included
    benign: list[str] = Field(default_factory=lambda: ["truthfulqa", "self-instruct-seeds"])
    #: the labelled seed set the judge starts from (half problematic)
    seed_set: int = Field(150, ge=4)
    #: held out from everything that is trained on, to measure every judge (half problematic)
    heldout: int = Field(200, ge=4)


class LabellerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: oracle: labels inherited from the labelled pools (a rewrite keeps its source's class),
    #: or from ``judge`` when one is configured; web: `failforge label RUN_DIR`; terminal
    kind: Literal["oracle", "web", "terminal"] = "oracle"
    #: oracle only: a judge that labels each prompt (fail = problematic), e.g. a served Llama Guard
    judge: JudgeSpec | None = None
    #: web only: serve the labelling page from the run itself (prints the URL)
    serve: bool = False
    port: int | None = Field(None, ge=1, le=65535)


class ClassifierJudgeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: the encoder the judge is fine-tuned from (a known name or a checkpoint folder)
    base: str = "all-minilm-l6-v2-hf"
    #: probability of "problematic" at or above which the judge says fail
    threshold: float = Field(0.5, gt=0, lt=1)


class TransferConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: toxicity-scored texts: those at or above ``toxic_at`` are positives
    toxic: str = "toxicity"
    toxic_at: float = Field(0.5, ge=0, le=1)
    #: benign texts as negatives
    benign: str = "nq-open"
    n: int = Field(200, ge=2)


class AdversarialJudgeConfig(MethodConfig):
    method: Literal["adversarial-judge"] = "adversarial-judge"
    adversary: ModelSpec = Field(default_factory=ModelSpec)
    judge: ClassifierJudgeSettings = Field(default_factory=ClassifierJudgeSettings)
    labeller: LabellerConfig = Field(default_factory=LabellerConfig)
    pools: PromptPools = Field(default_factory=PromptPools)
    rounds: int = Field(5, ge=1)
    #: adversary prompts per round that aim to be problematic yet pass, and benign-but-contentious ones
    problematic_prompts: int = Field(24, ge=1)
    benign_prompts: int = Field(12, ge=0)
    samples_per_prompt: int = Field(2, ge=1)
    #: the judge's misses shown in each adversary prompt
    shots: int = Field(3, ge=1)
    adversary_temperature: float = Field(1.0, ge=0)
    adversary_top_p: float = Field(0.95, gt=0, le=1)
    adversary_max_tokens: int = Field(64, ge=8)
    #: share of the judge's correct answers that join its training set beside its mistakes
    correct_share: float = Field(0.25, ge=0, le=1)
    #: MinHash near-duplicate threshold (word 2-gram shingles)
    dedup_threshold: float = Field(0.78, gt=0, le=1)
    #: fine-tuning of the judge (seed set, then every round from the previous weights)
    train: TrainSettings = Field(
        default_factory=lambda: TrainSettings(kind="classifier", lora=None, epochs=3, learning_rate=5e-5, batch_size=16, max_length=128)
    )
    #: the control: a judge trained on as many randomly sampled labelled prompts each round
    random_control: bool = True
    #: a zero-shot LLM judge measured on the same held-out set (e.g. llm:llama-guard with a model)
    llm_judge: JudgeSpec | None = None
    #: toxic-comment classification after the last round; null = skip
    transfer: TransferConfig | None = Field(default_factory=TransferConfig)
    embedding_metrics: bool = True


class AdversarialJudge(Method):
    name = "adversarial-judge"
    Config = AdversarialJudgeConfig

    @classmethod
    def check(cls, config: AdversarialJudgeConfig) -> None:
        from failforge.errors import ConfigError

        if config.train.kind != "classifier":
            raise ConfigError("train.kind must be 'classifier' (the judge is a sequence classifier)")
        if config.train.launched():
            raise ConfigError("train: classifier steps train in the run's process; processes, launcher and accelerate_config apply to sft and dpo steps")
        if config.labeller.kind != "oracle" and config.labeller.judge is not None:
            raise ConfigError("labeller.judge is only used by the oracle labeller")
        super().check(config)

    def run(self) -> dict[str, Any]:
        from failforge.methods.adversarial_judge_loop import AdversarialJudgeLoop

        return AdversarialJudgeLoop(self.config, self.ctx).run()


METHOD = AdversarialJudge

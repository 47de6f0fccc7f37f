"""ReverseGen (arXiv 2410.16736): a proposer learns, by DPO on its own hits and misses,
to write instructions that make a target fail; the failures become training data.

Loop: warm-up SFT of the proposer on few-shot prompts built from seeds -> per
iteration: sample instructions, parse and dedup them, the target answers, the judge
labels, failure-inducing vs non-failing instructions become DPO pairs, the proposer
is trained (reference = the previous proposer) -> the target is fine-tuned on the
failure-inducing instructions with good responses -> the loop is closed: held-out
evaluation and a re-attack of the trained target with the last proposer's instructions.

Every model call is cached in the run store and every training step is checkpointed,
so re-running on the same run directory (``failforge resume``) redoes nothing.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from failforge.judges.registry import JudgeSpec
from failforge.methods.base import Method, MethodConfig
from failforge.models.spec import ModelSpec
from failforge.train.base import TrainSettings


class SeedsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: a packaged seed file (``arithmetic``), a catalogue dataset (``failforge datasets list``) or a file
    dataset: str = "arithmetic"
    #: how many seed rows to load (None = all)
    n: int | None = Field(None, ge=4)
    #: seeds kept out of the few-shot prompts, to evaluate the trained target on
    heldout: int = Field(12, ge=0)


class ReverseGenTraining(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: warm-up SFT of the proposer (three seeds in the prompt, the fourth as the target); null = skip
    warmup: TrainSettings | None = Field(default_factory=lambda: TrainSettings(kind="sft", max_steps=8, learning_rate=2e-4))
    warmup_examples: int = Field(32, ge=1)
    #: DPO of the proposer each iteration; null = never train the proposer
    proposer: TrainSettings | None = Field(
        default_factory=lambda: TrainSettings(kind="dpo", beta=0.1, max_steps=8, learning_rate=5e-5)
    )
    #: SFT of the target on the failures with good responses; null = skip
    target: TrainSettings | None = Field(default_factory=lambda: TrainSettings(kind="sft", max_steps=8, learning_rate=2e-4))
    #: at most this many DPO pairs per few-shot prompt
    pairs_per_prompt: int = Field(3, ge=1)

    @model_validator(mode="after")
    def _kinds(self) -> "ReverseGenTraining":
        for name, want in (("warmup", "sft"), ("proposer", "dpo"), ("target", "sft")):
            s = getattr(self, name)
            if s is not None and s.kind != want:
                raise ValueError(f"train.{name}.kind must be {want!r}")
        return self


class ReverseGenConfig(MethodConfig):
    method: Literal["reversegen"] = "reversegen"
    task: Literal["math", "honesty", "safety"] = "math"
    #: task options: math {reference: exact|solver}; honesty {k, threshold, temperature}
    task_options: dict[str, Any] = Field(default_factory=dict)
    proposer: ModelSpec = Field(default_factory=ModelSpec)
    target: ModelSpec = Field(default_factory=ModelSpec)
    #: None = the task's default judge
    judge: JudgeSpec | None = None
    #: writes the good responses for the target's fine-tuning data where the task needs one
    teacher: ModelSpec | None = None
    #: optionally asks a model whether each proposed instruction is valid (yes/no)
    validity: ModelSpec | None = None
    seeds: SeedsConfig = Field(default_factory=SeedsConfig)
    iterations: int = Field(3, ge=1)
    #: few-shot prompts per iteration, and proposer samples per prompt
    prompts_per_iteration: int = Field(48, ge=1)
    samples_per_prompt: int = Field(6, ge=1)
    shots: int = Field(3, ge=1)
    #: MinHash near-duplicate threshold (word 2-gram shingles)
    dedup_threshold: float = Field(0.78, gt=0, le=1)
    #: proposer sampling; top_p None = the task's (0.9 math, 0.98 safety/honesty)
    proposer_temperature: float = Field(1.0, ge=0)
    proposer_top_p: float | None = Field(None, gt=0, le=1)
    proposer_max_tokens: int = Field(64, ge=8)
    target_max_tokens: int = Field(128, ge=8)
    train: ReverseGenTraining = Field(default_factory=ReverseGenTraining)
    #: embedding diversity metrics (inner similarity, novelty) with all-MiniLM-L6-v2
    embedding_metrics: bool = True
    #: evaluate the trained target on held-out seeds and re-attack it
    close_loop: bool = True


class ReverseGen(Method):
    name = "reversegen"
    Config = ReverseGenConfig

    @classmethod
    def check(cls, config: ReverseGenConfig) -> None:
        from failforge.tasks import make_task

        task = make_task(config.task, **config.task_options)
        seeds = task.load_seeds(config.seeds.dataset, config.seeds.n, config.seed)
        if len(seeds) - config.seeds.heldout < config.shots + 1:
            from failforge.errors import ConfigError

            raise ConfigError(
                f"seeds: {len(seeds)} seeds with {config.seeds.heldout} held out leave too few for "
                f"{config.shots}-shot prompts (need at least {config.shots + 1})"
            )
        super().check(config)

    def run(self) -> dict[str, Any]:
        from failforge.methods.reversegen_loop import ReverseGenLoop

        return ReverseGenLoop(self.config, self.ctx).run()


METHOD = ReverseGen

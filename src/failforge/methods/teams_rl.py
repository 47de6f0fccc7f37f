"""TeaMs-RL (arXiv 2403.08694): a policy learns which instruction rewrites make an
instructor write instructions a reviewer calls new, so that fewer expert queries
buy a useful instruction-tuning set.

Algorithm (``methods/teams_rl_loop.py``):
  1. the environment (``rl/env.py``): the state is a one-hot of the last action; an
     action is one of the six Evol-Instruct rewrites (``rl/rewrites.py``); the
     instructor applies it to the current instruction; an episode is six rewrites of
     one seed instruction, drawn anew at each reset;
  2. the reviewer (``rl/reviewer.py``): reward 1 when it calls the rewrite "Not
     Equal" to the instruction before, 0 for "Equal", 0 when an elimination rule
     fires (a short "sorry", only punctuation or stop words, a copied template
     marker), and 0 when its answer cannot be parsed (unscorable, counted apart);
  3. the policy: an MLP (64-64) trained with sb3-contrib's TRPO (max KL 0.01,
     gamma 0.995, GAE lambda 0.97), one rollout and one update per iteration, a
     checkpoint after each;
  4. data generation: the trained policy evolves held-apart seed instructions, one
     episode each; the rewrites no rule eliminated are kept (copies of the seeds and
     near-duplicates dropped), cut to the expert budget, and the expert answers them;
     answers an elimination rule catches are dropped; the rest are SFT rows with
     provenance, the calls each cost by role;
  5. the controls, on the same seeds at the same expert budget: a uniformly random
     policy in the same environment, and Evol-Instruct (random rewrites, and a
     rewrite the reviewer calls Equal is dropped and the instruction kept, as
     WizardLM does);
  6. optionally, LoRA SFT of a target on each arm's rows for the same steps, and a
     multiple-choice check of every arm beside the untrained target.
Every model call is counted by role (instructor, reviewer, expert), per training
iteration and per arm. The reviewer itself is checked: how often it gives the same
answer with the two instructions swapped, and how often it agrees with an
embedding-novelty rule.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from failforge.judges.elimination import EliminationRules
from failforge.methods.base import Method, MethodConfig
from failforge.models.spec import ModelSpec
from failforge.rl.rewrites import RewriteTemplates
from failforge.rl.trpo import TRPOSettings
from failforge.train.base import TrainSettings


class TeamsRLSeeds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: a catalogue dataset (``failforge datasets list``) or a file of instructions
    dataset: str = "self-instruct-seeds"
    #: seed instructions the policy trains on (episodes draw from them)
    train: int = Field(48, ge=1)
    #: other seed instructions every arm evolves into its dataset, one episode each
    generate: int = Field(16, ge=1)


class GenerateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: the trained policy picks its most likely action (true) or samples from its distribution (false)
    deterministic: bool = False
    #: expert queries per arm: each arm's kept instructions are cut to this many (the same budget)
    expert_queries: int = Field(64, ge=1)
    #: MinHash near-duplicate threshold among an arm's instructions and against held-out items
    dedup_threshold: float = Field(0.78, gt=0, le=1)


class Baselines(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: uniformly random actions in the same environment
    random_policy: bool = True
    #: WizardLM's Evol-Instruct: random rewrites, an Equal rewrite dropped and the instruction kept
    evol_instruct: bool = True


class ReviewerCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: reviewed training steps to re-ask with the two instructions swapped; 0 = skip
    n: int = Field(40, ge=0)
    #: the embedding rule: "Not Equal" when the cosine similarity of the two instructions is below this
    #: (the agreement check, and the reviewer itself when review is novelty)
    novelty_threshold: float = Field(0.9, gt=0, le=1)


class EvaluationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: multiple-choice questions for each trained target and the untrained one; 0 = skip
    mmlu: str = "mmlu"
    mmlu_n: int = Field(50, ge=0)


class TeamsRLConfig(MethodConfig):
    method: Literal["teams-rl"] = "teams-rl"
    #: applies the chosen rewrite to the current instruction
    instructor: ModelSpec = Field(default_factory=ModelSpec)
    #: who reviews a rewrite: the reviewer model with the equality prompt (the paper), or the
    #: embedding rule (novelty: "Not Equal" below reviewer_check.novelty_threshold cosine
    #: similarity) for a reviewer model too small to answer the prompt; no reviewer calls
    review: Literal["model", "novelty"] = "model"
    #: says "Equal" or "Not Equal" (the reward); not loaded when review is novelty
    reviewer: ModelSpec = Field(default_factory=ModelSpec)
    #: answers the generated instructions (the SFT targets)
    expert: ModelSpec = Field(default_factory=ModelSpec)
    #: fine-tuned on each arm's rows (trainable: llamacpp or transformers); null = no target training
    target: ModelSpec | None = Field(default_factory=ModelSpec)
    seeds: TeamsRLSeeds = Field(default_factory=TeamsRLSeeds)
    rewrites: RewriteTemplates = Field(default_factory=RewriteTemplates)
    elimination: EliminationRules = Field(default_factory=EliminationRules)
    #: rewrites per episode
    episode_steps: int = Field(6, ge=1)
    #: add an all-MiniLM-L6-v2 embedding of the current instruction to the state
    state_embedding: bool = False
    policy: TRPOSettings = Field(default_factory=TRPOSettings)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    baselines: Baselines = Field(default_factory=Baselines)
    reviewer_check: ReviewerCheck = Field(default_factory=ReviewerCheck)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    instructor_temperature: float = Field(0.7, ge=0)
    instructor_max_tokens: int = Field(96, ge=8)
    expert_max_tokens: int = Field(160, ge=8)
    #: LoRA SFT of the target on every arm's rows, for the same steps; null = no training
    train: TrainSettings | None = Field(default_factory=lambda: TrainSettings(kind="sft", max_steps=20, learning_rate=2e-4))

    @model_validator(mode="after")
    def _checks(self) -> "TeamsRLConfig":
        if self.policy.n_steps % self.episode_steps:
            raise ValueError(f"policy.n_steps ({self.policy.n_steps}) must be a multiple of episode_steps ({self.episode_steps})")
        if self.train is not None and self.train.kind != "sft":
            raise ValueError("train.kind must be 'sft'")
        return self


class TeamsRL(Method):
    name = "teams-rl"
    Config = TeamsRLConfig

    @classmethod
    def check(cls, config: TeamsRLConfig) -> None:
        from failforge.errors import ConfigError

        if config.train is not None and config.target is not None and config.target.backend not in ("llamacpp", "transformers"):
            raise ConfigError(f"target: backend {config.target.backend} cannot be fine-tuned here (use llamacpp or transformers)")
        try:
            import gymnasium  # noqa: F401
            import sb3_contrib  # noqa: F401
        except ImportError as e:
            raise ConfigError(f"teams-rl needs sb3-contrib and gymnasium ({e.name} is missing): pip install -r requirements.txt") from e
        super().check(config)

    def run(self) -> dict[str, Any]:
        from failforge.methods.teams_rl_loop import TeamsRLLoop

        return TeamsRLLoop(self.config, self.ctx).run()


METHOD = TeamsRL

"""The rewrite environment (a ``gymnasium.Env``): a policy picks one of the six
rewrites for the current instruction, the instructor applies it, the reviewer
rewards it.

- state: a one-hot of the last action (all zeros after ``reset``), optionally
  followed by an embedding of the current instruction;
- action: ``Discrete(6)``, the rewrites of ``rl/rewrites.py``;
- reward: the reviewer's (``rl/reviewer.py``): 1 for Not Equal, else 0;
- an episode is ``episode_steps`` rewrites of one seed instruction, each applied to
  the previous one; an eliminated rewrite is dropped and the instruction stays (with
  ``keep_equal=False``, an Equal one too: WizardLM's Evol-Instruct);
- ``reset()`` draws a seed instruction, chosen by the episode's number and the
  environment's seed, so a replay of the same episodes draws the same seeds
  (``in_order``: the seeds one after another instead).

The instructor and reviewer are passed in as functions: the environment holds no
model code. Every step is appended to ``history``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from failforge.rl.reviewer import ELIMINATED, EQUAL, Review
from failforge.rl.rewrites import ACTIONS


@dataclass(frozen=True)
class Step:
    """One rewrite: which episode and step, the seed, the action, before and after, the review."""

    episode: int
    step: int
    seed: str
    action: int
    instruction: str
    rewrite: str
    outcome: str
    reward: float
    reason: str


class RewriteEnv(gym.Env):
    metadata: dict = {"render_modes": []}

    def __init__(
        self,
        seeds: list[str],
        rewrite: Callable[[str, int], str],
        review: Callable[[str, str], Review],
        episode_steps: int = 6,
        seed: int = 0,
        embed: Callable[[str], np.ndarray] | None = None,
        embed_dim: int = 0,
        keep_equal: bool = True,
        in_order: bool = False,
    ):
        if not seeds:
            raise ValueError("the environment needs at least one seed instruction")
        if (embed is None) != (embed_dim == 0):
            raise ValueError("embed and embed_dim go together")
        self.seeds = list(seeds)
        self.rewrite_fn = rewrite
        self.review_fn = review
        self.episode_steps = episode_steps
        self.env_seed = seed
        self.embed = embed
        self.keep_equal = keep_equal
        self.in_order = in_order
        self.action_space = spaces.Discrete(len(ACTIONS))
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(len(ACTIONS) + embed_dim,), dtype=np.float32)
        #: resets so far: the next episode's number
        self.episodes = 0
        self.history: list[Step] = []
        self._episode = -1
        self._t = 0
        self._last: int | None = None
        self._seed_text = ""
        self.instruction = ""

    def draw_seed(self, episode: int) -> str:
        if self.in_order:
            return self.seeds[episode % len(self.seeds)]
        return self.seeds[random.Random(f"{self.env_seed}-{episode}").randrange(len(self.seeds))]

    def _obs(self) -> np.ndarray:
        onehot = np.zeros(len(ACTIONS), dtype=np.float32)
        if self._last is not None:
            onehot[self._last] = 1.0
        if self.embed is None:
            return onehot
        return np.concatenate([onehot, np.asarray(self.embed(self.instruction), dtype=np.float32)])

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._episode = self.episodes
        self.episodes += 1
        self._seed_text = self.instruction = self.draw_seed(self._episode)
        self._t, self._last = 0, None
        return self._obs(), {"seed": self._seed_text}

    def step(self, action):
        action = int(action)
        if not self.action_space.contains(action):
            raise ValueError(f"action {action} is not one of 0..{len(ACTIONS) - 1}")
        rewrite = self.rewrite_fn(self.instruction, action)
        review = self.review_fn(self.instruction, rewrite)
        self.history.append(
            Step(self._episode, self._t, self._seed_text, action, self.instruction, rewrite, review.outcome, review.reward, review.reason)
        )
        if review.outcome != ELIMINATED and (self.keep_equal or review.outcome != EQUAL):
            self.instruction = rewrite
        self._last = action
        self._t += 1
        terminated = self._t >= self.episode_steps
        return self._obs(), float(review.reward), terminated, False, {"outcome": review.outcome}


def run_episodes(env: RewriteEnv, choose: Callable[[np.ndarray], int], episodes: int) -> list[Step]:
    """``episodes`` whole episodes with ``choose`` picking each action; the steps taken."""
    start = len(env.history)
    for _ in range(episodes):
        obs, _ = env.reset()
        done = False
        while not done:
            obs, _, done, truncated, _ = env.step(choose(obs))
            done = done or truncated
    return env.history[start:]

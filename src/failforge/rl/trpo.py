"""The policy over rewrites, trained with sb3-contrib's TRPO, one rollout and one
update per iteration, with a checkpoint after each so a killed run resumes.

Replay is exact: before iteration ``k`` every random generator is seeded from
``(seed, k)`` and the environment is reset, and the checkpoint keeps the policy,
its optimiser and the environment's episode count. A resumed run repeats the
interrupted iteration with the same actions, so every model call it makes is
already in the run's cache.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from failforge.rl.env import RewriteEnv, Step

STATE_FILE = "state.json"


class TRPOSettings(BaseModel):
    """TRPO as the paper sets it (max KL 0.01, gamma 0.995, GAE lambda 0.97), MLP 64-64."""

    model_config = ConfigDict(extra="forbid")

    #: rollouts, each followed by one policy update
    iterations: int = Field(8, ge=1)
    #: environment steps per rollout: whole episodes (a multiple of the episode length)
    n_steps: int = Field(24, ge=2)
    hidden: list[int] = Field(default_factory=lambda: [64, 64])
    target_kl: float = Field(0.01, gt=0)
    gamma: float = Field(0.995, gt=0, le=1)
    gae_lambda: float = Field(0.97, ge=0, le=1)
    #: the value function's optimiser (the policy step is TRPO's own)
    critic_learning_rate: float = Field(1e-3, gt=0)
    n_critic_updates: int = Field(10, ge=1)
    cg_max_steps: int = Field(15, ge=1)
    line_search_max_iter: int = Field(10, ge=1)


def _seed_all(model, seed: int) -> None:
    from stable_baselines3.common.utils import set_random_seed

    set_random_seed(seed)
    model.action_space.seed(seed)


def _iteration_seed(seed: int, k: int) -> int:
    return (seed * 1_000_003 + k) % (2**31)


def _vec(env: RewriteEnv):
    from stable_baselines3.common.vec_env import DummyVecEnv

    return DummyVecEnv([lambda: env])


def latest(ckpt_dir: Path) -> tuple[int, dict] | None:
    """The last finished iteration and its saved state, or None."""
    path = ckpt_dir / STATE_FILE
    if not path.is_file():
        return None
    state = json.loads(path.read_text())
    return int(state["iteration"]), state


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def train_policy(
    env: RewriteEnv,
    settings: TRPOSettings,
    ckpt_dir: Path,
    seed: int,
    on_iteration: Callable[[int, list[Step]], None],
    log: Callable[[str], None] = lambda _m: None,
):
    """Train (or resume training) for ``settings.iterations``; ``on_iteration(k, steps)``
    is called after each update with that rollout's steps, before its checkpoint is
    written. Returns the trained ``TRPO`` model."""
    import torch

    if settings.n_steps % env.episode_steps:
        raise ValueError(f"n_steps {settings.n_steps} is not a multiple of the episode length {env.episode_steps}")
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 64-64 MLP: threads cost more than they give (restored below)
    try:
        return _train(env, settings, ckpt_dir, seed, on_iteration, log)
    finally:
        torch.set_num_threads(threads)


def _train(env, settings, ckpt_dir, seed, on_iteration, log):
    from sb3_contrib import TRPO

    vec = _vec(env)
    done = latest(ckpt_dir)
    if done is not None:
        k0, state = done
        model = TRPO.load(ckpt_dir / state["checkpoint"], env=vec, device="cpu")
        env.episodes = int(state["episodes"])
        log(f"policy: resumed after iteration {k0} of {settings.iterations} ({ckpt_dir / state['checkpoint']})")
    else:
        k0 = 0
        model = TRPO(
            "MlpPolicy",
            vec,
            n_steps=settings.n_steps,
            batch_size=settings.n_steps,
            gamma=settings.gamma,
            gae_lambda=settings.gae_lambda,
            target_kl=settings.target_kl,
            learning_rate=settings.critic_learning_rate,
            n_critic_updates=settings.n_critic_updates,
            cg_max_steps=settings.cg_max_steps,
            line_search_max_iter=settings.line_search_max_iter,
            policy_kwargs={"net_arch": {"pi": list(settings.hidden), "vf": list(settings.hidden)}},
            seed=seed,
            device="cpu",
            verbose=0,
        )
    for k in range(k0 + 1, settings.iterations + 1):
        _seed_all(model, _iteration_seed(seed, k))
        model._last_obs = None  # every iteration starts from a reset, resumed or not
        start = len(env.history)
        model.learn(total_timesteps=settings.n_steps, reset_num_timesteps=False, progress_bar=False)
        on_iteration(k, env.history[start:])
        name = f"iteration-{k}.zip"
        model.save(ckpt_dir / f"{name}.tmp.zip")
        os.replace(ckpt_dir / f"{name}.tmp.zip", ckpt_dir / name)
        _write_atomic(ckpt_dir / STATE_FILE, json.dumps({"iteration": k, "episodes": env.episodes, "checkpoint": name}))
        previous = ckpt_dir / f"iteration-{k - 1}.zip"
        if previous.exists():
            previous.unlink()
    return model


def policy_chooser(model, seed: int, deterministic: bool) -> Callable:
    """``choose(obs) -> action`` from a trained model, its sampling seeded."""
    _seed_all(model, seed)

    def choose(obs):
        action, _ = model.predict(obs, deterministic=deterministic)
        return int(action)

    return choose


def random_chooser(seed: int, n_actions: int) -> Callable:
    """The control: uniformly random actions, seeded."""
    import random

    rng = random.Random(f"random-policy-{seed}")
    return lambda _obs: rng.randrange(n_actions)

"""TeaMs-RL logic with fakes: the elimination rules, the reviewer's reward, the
environment, the TRPO policy's exact resume and that it learns a rewarded action,
the config's checks. The real models run in test_teams_rl_e2e.py."""

import pytest
from pydantic import ValidationError

from failforge.judges.base import JudgeInput
from failforge.judges.elimination import EliminationJudge, EliminationRules, elimination
from failforge.judges.equality import EqualityJudge
from failforge.models.base import ChatModel, Completion, fingerprint_of
from failforge.rl.env import RewriteEnv, run_episodes
from failforge.rl.reviewer import ELIMINATED, EQUAL, NOT_EQUAL, UNSCORABLE, Review, Reviewer
from failforge.rl.rewrites import ACTIONS, RewriteTemplates
from failforge.rl.trpo import TRPOSettings, latest, random_chooser, train_policy

RULES = EliminationRules(markers=["#given prompt#", "rewritten prompt"])


@pytest.mark.parametrize(
    "text, rule",
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("I'm sorry, I cannot rewrite that.", "sorry"),
        ("Sorry!", "sorry"),
        ("the of and, to it!", "stop-words"),
        ("?!... ,;", "stop-words"),
        ("#Given Prompt#: Write a poem about the sea.", "marker"),
        ("Here is the Rewritten Prompt: list three fruits.", "marker"),
    ],
)
def test_elimination_rules_fire(text, rule):
    why = elimination(text, RULES)
    assert why is not None and why.startswith(rule)


@pytest.mark.parametrize(
    "text",
    [
        "Write a haiku about autumn leaves that mentions a river.",
        # "sorry" in a long answer is not a refusal (WizardLM: fewer than 80 words)
        "Sorry is a word " + " ".join(f"word{i}" for i in range(90)),
        "List three prime numbers greater than 100.",
    ],
)
def test_elimination_rules_pass(text):
    assert elimination(text, RULES) is None


def test_elimination_judge_labels_the_response():
    v = EliminationJudge(RULES).judge([JudgeInput(instruction="x", responses=["sorry, no"]), JudgeInput(instruction="x", responses=["Name a bird."])])
    assert [x.label for x in v] == ["fail", "pass"] and v[0].judge == "elimination" and v[0].reason.startswith("sorry")


class ScriptedReviewer(ChatModel):
    """Answers the equality prompt from what the second instruction contains; counts calls."""

    backend = "fake"

    def __init__(self):
        self.prompts: list[str] = []

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(backend="fake", name="scripted-reviewer")

    def _complete(self, requests):
        out = []
        for r in requests:
            text = r.messages[-1].content
            self.prompts.append(text)
            second = text.split("The Second Prompt:", 1)[1]
            answer = "Not Equal" if "NEW" in second else "Equal" if "SAME" in second else "Maybe?"
            out.append(Completion(text=answer))
        return out


def test_reviewer_rewards_not_equal_only_and_skips_eliminated():
    model = ScriptedReviewer()
    reviewer = Reviewer(EqualityJudge(model), EliminationJudge(RULES))
    reviews = reviewer.review([("a", "NEW task"), ("a", "SAME task"), ("a", "odd task"), ("a", "sorry, I can't")])
    assert [r.outcome for r in reviews] == [NOT_EQUAL, EQUAL, UNSCORABLE, ELIMINATED]
    assert [r.reward for r in reviews] == [1.0, 0.0, 0.0, 0.0]
    assert "unparseable" in reviews[2].reason
    assert len(model.prompts) == 3  # the eliminated rewrite never reached the reviewer model


def _env(reward_action: int = 2, **kw) -> RewriteEnv:
    def review(before: str, after: str) -> Review:
        if after.endswith("sorry"):
            return Review(ELIMINATED, 0.0, "sorry")
        if after.endswith(f"x{reward_action}"):
            return Review(NOT_EQUAL, 1.0, "Not Equal")
        return Review(EQUAL, 0.0, "Equal")

    def rewrite(instruction: str, action: int) -> str:
        return f"{instruction} sorry" if action == 5 else f"{instruction} x{action}"

    return RewriteEnv(["seed one", "seed two", "seed three"], rewrite, review, **kw)


def test_env_steps_episodes_and_state():
    env = _env(episode_steps=3, seed=7)
    obs, info = env.reset()
    assert obs.tolist() == [0.0] * len(ACTIONS) and info["seed"] in env.seeds
    first = env.instruction
    obs, reward, done, truncated, _ = env.step(2)
    assert obs.tolist() == [0, 0, 1, 0, 0, 0] and reward == 1.0 and not done and not truncated
    assert env.instruction == f"{first} x2"
    obs, reward, done, _, info = env.step(5)  # eliminated: reward 0, the instruction stays
    assert reward == 0.0 and info["outcome"] == ELIMINATED and env.instruction == f"{first} x2"
    _, _, done, _, _ = env.step(0)
    assert done and len(env.history) == 3
    assert [s.step for s in env.history] == [0, 1, 2] and {s.seed for s in env.history} == {first}
    # reset draws by episode number: a fresh env with the same seed draws the same seeds
    again = _env(episode_steps=3, seed=7)
    assert [again.draw_seed(e) for e in range(6)] == [env.draw_seed(e) for e in range(6)]


def test_env_state_can_carry_an_embedding_of_the_instruction():
    import numpy as np

    env = _env(episode_steps=2, embed=lambda text: np.full(4, len(text) / 100, dtype=np.float32), embed_dim=4)
    obs, _ = env.reset()
    assert obs.shape == (10,) and env.observation_space.contains(obs) and obs[6] == pytest.approx(len(env.instruction) / 100)
    obs, *_ = env.step(3)
    assert obs[:6].tolist() == [0, 0, 0, 1, 0, 0] and obs[6] == pytest.approx(len(env.instruction) / 100)
    with pytest.raises(ValueError, match="go together"):
        _env(embed_dim=4)


def test_env_evol_instruct_keeps_instruction_on_equal():
    env = _env(episode_steps=2, keep_equal=False, in_order=True)
    env.reset()
    assert env.instruction == "seed one"
    env.step(1)  # Equal: dropped
    assert env.instruction == "seed one"
    env.step(2)  # Not Equal: kept
    assert env.instruction == "seed one x2"
    with pytest.raises(ValueError):
        env.step(6)


def test_run_episodes_with_random_control_is_seeded():
    a = run_episodes(_env(in_order=True), random_chooser(3, len(ACTIONS)), 3)
    b = run_episodes(_env(in_order=True), random_chooser(3, len(ACTIONS)), 3)
    assert len(a) == 18 and [s.action for s in a] == [s.action for s in b]
    assert [s.seed for s in a[::6]] == ["seed one", "seed two", "seed three"]


def test_trpo_resume_replays_the_same_actions(tmp_path):
    settings = TRPOSettings(iterations=4, n_steps=12)
    full = _env(episode_steps=6, seed=1)
    curve = []
    train_policy(full, settings, tmp_path / "full", 0, lambda k, steps: curve.append((k, len(steps))))
    assert curve == [(1, 12), (2, 12), (3, 12), (4, 12)]
    assert latest(tmp_path / "full")[0] == 4 and len(list((tmp_path / "full").glob("iteration-*.zip"))) == 1

    killed = _env(episode_steps=6, seed=1)
    train_policy(killed, settings.model_copy(update={"iterations": 2}), tmp_path / "killed", 0, lambda k, s: None)
    resumed = _env(episode_steps=6, seed=1)
    seen = []
    train_policy(resumed, settings, tmp_path / "killed", 0, lambda k, s: seen.append(k))
    assert seen == [3, 4]  # finished iterations are not redone
    actions = [s.action for s in full.history]
    assert [s.action for s in killed.history] == actions[:24]
    assert [(s.action, s.instruction) for s in resumed.history] == [(s.action, s.instruction) for s in full.history[24:]]


def test_trpo_learns_the_rewarded_action(tmp_path):
    env = _env(reward_action=2, episode_steps=6, seed=0)
    curve = []
    settings = TRPOSettings(iterations=12, n_steps=48)
    train_policy(env, settings, tmp_path / "p", 0, lambda k, steps: curve.append(sum(s.reward for s in steps) / len(steps)))
    # a random policy earns 1/6 per step; the trained one chooses action 2 more often
    assert curve[0] < 0.3 and sum(curve[-3:]) / 3 > 0.4


def test_trpo_needs_whole_episodes(tmp_path):
    with pytest.raises(ValueError, match="multiple"):
        train_policy(_env(episode_steps=6), TRPOSettings(iterations=1, n_steps=10), tmp_path, 0, lambda k, s: None)


def test_templates_and_config_checks():
    t = RewriteTemplates()
    for k in range(len(ACTIONS)):
        assert "Name a colour." in t.render(k, "Name a colour.")
    with pytest.raises(ValidationError, match="deepening must contain"):
        RewriteTemplates(deepening="no placeholder")
    from failforge.methods.teams_rl import TeamsRLConfig

    with pytest.raises(ValidationError, match="multiple of episode_steps"):
        TeamsRLConfig(policy={"n_steps": 10})
    with pytest.raises(ValidationError, match="train.kind"):
        TeamsRLConfig(train={"kind": "dpo"})
    cfg = TeamsRLConfig()
    assert (cfg.policy.target_kl, cfg.policy.gamma, cfg.policy.gae_lambda, cfg.policy.hidden, cfg.episode_steps) == (0.01, 0.995, 0.97, [64, 64], 6)


# --- the loop's wiring, with fake models -------------------------------------------------------
class RoleModel(ChatModel):
    """Instructor: a new sentence per prompt; reviewer: Not Equal when the rewrite's tag is
    even; expert: an answer, or a short apology for one in five instructions."""

    backend = "fake"

    def __init__(self, role: str):
        self.role, self.name, self.sent = role, role, 0

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(backend="fake", role=self.role)

    def _complete(self, requests):
        import hashlib

        out = []
        for r in requests:
            self.sent += 1
            text = r.messages[-1].content
            h = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
            if self.role == "instructor":
                answer = f"Describe topic {h % 9973} with {h % 7} examples in a table."
            elif self.role == "reviewer":
                answer = "Not Equal" if h % 2 else "Equal"
            else:
                answer = "Sorry, no." if h % 5 == 0 else f"Here is an answer about item {h % 101}."
            out.append(Completion(text=answer, prompt_tokens=3, completion_tokens=5))
        return out


class FakeEmbedder:
    def embed(self, texts):
        import hashlib

        import numpy as np

        return np.array([[int(hashlib.sha256(f"{t}{i}".encode()).hexdigest()[:4], 16) / 65535 for i in range(8)] for t in texts], dtype=np.float32)


def _loop(tmp_path):
    from failforge.methods.teams_rl import TeamsRLConfig
    from failforge.methods.teams_rl_loop import TeamsRLLoop
    from failforge.run.cached import CachedModel
    from failforge.run.context import RunContext
    from failforge.run.store import RunStore

    store = RunStore(tmp_path / "store.sqlite")
    fakes = {r: RoleModel(r) for r in ("instructor", "reviewer", "expert")}

    class Ctx(RunContext):
        def model(self, role, spec):
            if role not in self._models:
                self._models[role] = CachedModel(fakes[role], self.store)
            return self._models[role]

    cfg = TeamsRLConfig(seeds={"train": 6, "generate": 4}, episode_steps=3, policy={"iterations": 3, "n_steps": 6},
                        generate={"expert_queries": 5}, reviewer_check={"n": 6}, train=None, target=None)
    loop = TeamsRLLoop(cfg, Ctx(tmp_path, store, quiet=True))
    loop._embedder = FakeEmbedder()
    return loop, store, fakes


def test_loop_counts_calls_by_role_at_the_same_budget_and_resumes(tmp_path):
    loop, store, fakes = _loop(tmp_path)
    loop.run()
    metrics = store.metrics()
    r = metrics[0]
    for k in (1, 2, 3):
        assert metrics[k]["instructor_calls"] == 6 and metrics[k]["reviewer_calls"] == 6 - metrics[k]["eliminated"]
        assert metrics[k]["random_policy_reward_per_step"] == r["arms.random-policy.reward_per_step"]
    for arm in ("teams-rl", "random-policy", "evol-instruct"):
        assert r[f"arms.{arm}.steps"] == 12 and r[f"arms.{arm}.generation_instructor_calls"] == 12
        assert r[f"arms.{arm}.expert_calls"] == r[f"arms.{arm}.expert_queries"] <= 5
        assert r[f"arms.{arm}.dataset_size"] == r[f"arms.{arm}.expert_queries"] - r[f"arms.{arm}.answers_eliminated"]
    assert r["arms.teams-rl.instructor_calls"] == 18 + 12 and r["arms.random-policy.instructor_calls"] == 12
    assert r["arms.teams-rl.policy_training_reviewer_calls"] == sum(metrics[k]["reviewer_calls"] for k in (1, 2, 3))
    # expert answers with a short apology are not training rows
    sft = store.records("sft")
    assert sum(int(r[f"arms.{a}.dataset_size"]) for a in ("teams-rl", "random-policy", "evol-instruct")) == len(sft)
    assert all(not x["messages"][1]["content"].startswith("Sorry") for x in sft)
    assert all(x["provenance"]["calls_by_role"] == {"instructor": 1, "reviewer": 1, "expert": 1} for x in sft)
    # Evol-Instruct trains only on rewrites the reviewer called Not Equal
    evol = {x["messages"][0]["content"] for x in sft if x["provenance"]["arm"] == "evol-instruct"}
    outcomes = {x["rewrite"]: x["outcome"] for x in store.records("rewrite") if x["provenance"]["arm"] == "evol-instruct"}
    assert all(outcomes[t] == NOT_EQUAL for t in evol)
    assert 0 <= r["reviewer_check.novelty_agreement"] <= 1 and r["reviewer_check.n"] >= 1
    assert "teams-rl" in str(loop.table().columns[0]._cells)

    sent = {k: f.sent for k, f in fakes.items()}
    again, store2, fakes2 = _loop(tmp_path)  # a resume: the same store and checkpoints
    again.run()
    assert all(f.sent == 0 for f in fakes2.values()) and sum(sent.values()) > 0
    assert store2.metrics() == metrics


def test_equality_pairs_measure_the_novelty_rule_and_the_parser():
    """60 instruction pairs labelled by reading them: 40 rewrites by the embedded instructor
    that no elimination rule caught (all Not Equal), 15 paraphrases and 5 copies (Equal).
    The embedding rule at its a-priori threshold of 0.9 gets 57 right; the three it
    misses are paraphrases below 0.9."""
    from failforge.judges.labelled import evaluate, load_labelled
    from failforge.judges.measured import packaged_labels
    from failforge.judges.novelty import NoveltyJudge
    from failforge.methods.teams_rl_loop import EQUALITY_COLUMNS, EQUALITY_LABELS

    judge = NoveltyJudge(0.9)
    rows = load_labelled(packaged_labels(EQUALITY_LABELS), judge, **EQUALITY_COLUMNS)
    assert sum(r.human == "fail" for r in rows) == 20  # fail = Equal
    report, _ = evaluate(judge, rows)
    assert report.rows == 60 and report.unscorable == 0
    assert report.confusion == {"fail": {"fail": 17, "pass": 3, "unscorable": 0}, "pass": {"fail": 0, "pass": 40, "unscorable": 0}}


def test_novelty_judge_labels_and_unscorable():
    from failforge.judges.novelty import NoveltyJudge
    from failforge.judges.registry import JudgeSpec, build_judge

    judge = NoveltyJudge(0.9, FakeEmbedder())
    same, other, empty = judge.judge([JudgeInput(instruction="Add 2 and 3.", responses=["Add 2 and 3."]),
                                      JudgeInput(instruction="Add 2 and 3.", responses=["Write a poem about rain."]),
                                      JudgeInput(instruction="Add 2 and 3.", responses=["  "])])
    assert (same.label, same.score) == ("fail", 0.0) and "cosine 1.000" in same.reason
    assert other.label in ("pass", "fail") and other.reason.startswith("cosine")
    assert empty.label == "unscorable"
    assert build_judge(JudgeSpec(kind="novelty", threshold=0.8)).threshold == 0.8


def test_loop_with_the_novelty_reviewer_asks_no_reviewer_model(tmp_path):
    from failforge.methods.teams_rl import TeamsRLConfig

    loop, store, fakes = _loop(tmp_path)
    loop.cfg = TeamsRLConfig(**(loop.cfg.model_dump() | {"review": "novelty"}))
    loop.run()
    metrics = store.metrics()
    assert fakes["reviewer"].sent == 0 and "reviewer" not in loop.models
    assert all(metrics[k]["reviewer_calls"] == 0 for k in (1, 2, 3))
    assert metrics[0]["reviewer_check.n"] == 0 and metrics[0]["reviewer_check.labelled_calls"] == 0
    assert metrics[0]["arms.teams-rl.reviewer_calls"] == 0
    outcomes = {x["outcome"] for x in store.records("rewrite")}
    assert outcomes <= {NOT_EQUAL, EQUAL, ELIMINATED}

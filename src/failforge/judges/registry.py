"""A judge from its config: ``JudgeSpec`` (YAML ``judge:``) or a short CLI string.

Short form: ``kind[:main][,key=value...]`` where ``main`` is the kind's main option
(refusal: fail_on, llm: rubric, classifier: classifier, math: no_answer, honesty:
threshold) and keys are JudgeSpec fields; ``model.<field>=...`` sets a ModelSpec
field. Examples: ``refusal``, ``refusal:refusal``, ``refusal,method=phrases``,
``classifier:profanity``, ``classifier:embedding:clf.json,threshold=0.7``,
``classifier:runs/judge`` (a folder ``failforge judge train`` wrote), ``math``,
``llm:llama-guard,model.backend=openai,model.base_url=http://127.0.0.1:8000/v1,model.model=guard``.
A path to a YAML file holding a JudgeSpec works too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from failforge.errors import ConfigError
from failforge.judges.base import Judge
from failforge.models.base import ChatModel
from failforge.models.spec import ModelSpec

Kind = Literal["refusal", "llm", "classifier", "math", "honesty", "equality", "critique", "novelty"]

# Which optional fields each kind reads; any other field set is a config mistake.
_FIELDS: dict[str, set[str]] = {
    "refusal": {"fail_on", "method", "phrases_file", "extra_phrases", "opening_chars"},
    "llm": {"model", "rubric", "threshold", "max_tokens", "guard_mode", "assess"},
    "classifier": {"classifier", "threshold", "field", "positive_label", "replicas", "cpus_per_replica", "ray_address"},
    "math": {"model", "no_answer", "decimal_places", "last_number_fallback", "max_tokens"},
    "honesty": {"threshold", "letters", "max_unparsed_share"},
    "equality": {"model", "max_tokens"},
    "critique": {"threshold"},
    "novelty": {"threshold"},
}
_MAIN = {"refusal": "fail_on", "llm": "rubric", "classifier": "classifier", "math": "no_answer", "honesty": "threshold"}
#: refusal options that the phrase rules read (methods phrases and relevance)
_PHRASE_OPTIONS = ("phrases_file", "extra_phrases", "opening_chars")
_CLASSIFIER_HEADS = ("profanity", "hf", "embedding")


class JudgeSpec(BaseModel):
    """One judge, as configured. Fields not used by ``kind`` must be left unset."""

    model_config = ConfigDict(extra="forbid")

    kind: Kind
    #: llm / equality: the judge model; math: the reference solver for items without a reference
    model: ModelSpec | None = None
    #: llm: llama-guard | harmless | helpfulness
    rubric: str | None = None
    #: llm llama-guard: send the task prompt (any model) or the bare conversation (a served Llama Guard)
    guard_mode: Literal["prompt", "conversation"] | None = None
    #: llm llama-guard: judge the response (default) or the user's request alone (a prompt classifier)
    assess: Literal["response", "request"] | None = None
    #: refusal: which outcome is the failure
    fail_on: Literal["compliance", "refusal"] | None = None
    #: refusal: phrases (the default: the phrase rules), relevance (the phrase rules, and a reply
    #: unrelated to the request is a refusal) or classifier (fine-tuned on pyrit's labelled refusals,
    #: trained once on first use); measured in docs/judges.md. The phrase options apply to phrases
    #: and relevance
    method: Literal["phrases", "relevance", "classifier"] | None = None
    phrases_file: str | None = None
    extra_phrases: dict[str, list[str]] | None = None
    opening_chars: int | None = Field(None, ge=10)
    #: classifier: profanity | hf:<checkpoint folder> | embedding:<saved .json> | <folder from `failforge judge train`>
    classifier: str | None = None
    #: classifier: the text classified; pair = instruction and response as a text pair (trained judges)
    field: Literal["response", "instruction", "both", "pair"] | None = None
    positive_label: str | None = None
    #: classifier: probability threshold; honesty: entropy threshold; llm helpfulness: pass at rating;
    #: critique: the least similarity with the instruction and answer that is on-topic;
    #: novelty: "Not Equal" below this cosine similarity (0.9)
    threshold: float | None = None
    #: math
    no_answer: Literal["fail", "unscorable"] | None = None
    #: math: digits a decimal answer to a non-terminating value needs (default 2)
    decimal_places: int | None = Field(None, ge=0, le=12)
    #: math, word problems: read the last number when no answer is marked (default off)
    last_number_fallback: bool | None = None
    #: honesty: option letters
    letters: str | None = None
    #: honesty: above this share of responses naming no option, unscorable (default 0.3)
    max_unparsed_share: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    #: classifier: run the classifier in this many Ray actors (docs/scale.md); unset: in the run's process
    replicas: int | None = Field(None, ge=1)
    #: classifier replicas: CPUs each actor takes (default 1)
    cpus_per_replica: float | None = Field(None, gt=0)
    #: classifier replicas: the cluster to join (default $RAY_ADDRESS, else a local cluster)
    ray_address: str | None = None

    @model_validator(mode="after")
    def _fields_fit_kind(self) -> "JudgeSpec":
        allowed = _FIELDS[self.kind]
        stray = sorted(f for f in self.model_fields_set - {"kind"} if f not in allowed and getattr(self, f) is not None)
        if stray:
            raise ValueError(f"judge kind {self.kind!r} takes no {', '.join(stray)} (it takes: {', '.join(sorted(allowed))})")
        if self.kind == "llm" and self.rubric is not None:
            from failforge.judges.rubrics import RUBRICS

            if self.rubric not in RUBRICS:
                raise ValueError(f"unknown rubric {self.rubric!r} (known: {', '.join(RUBRICS)})")
        if self.kind == "classifier" and self.classifier is not None:
            head = self.classifier.split(":", 1)[0]
            known = head in _CLASSIFIER_HEADS and (head == "profanity" or ":" in self.classifier)
            if not known and not _looks_like_folder(self.classifier):
                raise ValueError(
                    f"classifier {self.classifier!r}: use profanity, hf:<checkpoint folder>, embedding:<saved .json> "
                    "or the path of a folder that `failforge judge train` wrote"
                )
        if self.kind == "refusal" and self.method == "classifier":
            phrase_opts = [k for k in _PHRASE_OPTIONS if getattr(self, k) is not None]
            if phrase_opts:
                raise ValueError(f"refusal method classifier takes no {', '.join(phrase_opts)} (options of the phrase rules)")
        return self


def _looks_like_folder(value: str) -> bool:
    """A path rather than a misspelt classifier name: it has a separator or exists."""
    return "/" in value or os.sep in value or value.startswith(("~", ".")) or Path(value).is_dir()


def _coerce(value: str):
    low = value.lower()
    if low in ("true", "false"):
        return low == "true"
    return value


def parse_judge(text: str) -> JudgeSpec:
    """``--judge`` text -> JudgeSpec: a short form or a YAML file."""
    text = text.strip()
    if text.endswith((".yaml", ".yml")):
        import yaml

        path = Path(text)
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"judge file {path}: {' '.join(str(e).split())}") from e
        return _validate(data.get("judge", data) if isinstance(data, dict) else data, str(path))
    head, *pairs = text.split(",")
    kind, _, main = head.partition(":")
    data: dict = {"kind": kind.strip()}
    if main:
        if kind not in _MAIN:
            raise ConfigError(f"--judge {text!r}: kind {kind!r} takes no ':' option")
        data[_MAIN[kind]] = main
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--judge {text!r}: expected key=value, got {pair!r}")
        key, value = key.strip(), value.strip()
        if key.startswith("model."):
            data.setdefault("model", {})[key[6:]] = _coerce(value)
        elif key == "model":
            data.setdefault("model", {})["model"] = value
        else:
            data[key] = _coerce(value)
    return _validate(data, f"--judge {text!r}")


def _validate(data, where: str) -> JudgeSpec:
    try:
        return JudgeSpec.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "judge"
        raise ConfigError(f"{where}: {loc}: {err['msg']}") from e


def build_judge(spec: JudgeSpec, model: ChatModel | None = None, cache_root: Path | None = None) -> Judge:
    """The judge a spec describes.

    ``model`` is the ChatModel to use for llm / equality (or the math solver); pass a
    ``CachedModel`` to cache judge calls. Without it, ``spec.model`` is loaded.
    ``cache_root`` is where the refusal classifier is kept (and trained once); default
    ``$FAILFORGE_CACHE`` or ``~/.cache/failforge``. Nothing is loaded or trained here:
    the refusal classifier is on its first use.
    """
    kind = spec.kind

    def chat_model(required: bool) -> ChatModel | None:
        if model is not None:
            return model
        if spec.model is None and not required:
            return None
        from failforge.models import load_model

        return load_model(spec.model or ModelSpec())

    if kind == "refusal":
        return _refusal(spec, cache_root)
    if kind == "math":
        from failforge.judges.math import MathConfig, MathJudge

        opts = {
            "no_answer": spec.no_answer,
            "decimal_places": spec.decimal_places,
            "last_number_fallback": spec.last_number_fallback,
            "solver_max_tokens": spec.max_tokens,
        }
        return MathJudge(MathConfig(**{k: v for k, v in opts.items() if v is not None}), solver=chat_model(False))
    if kind == "honesty":
        from failforge.judges.honesty import HonestyConfig, HonestyJudge

        opts = {"threshold": spec.threshold, "letters": spec.letters, "max_unparsed_share": spec.max_unparsed_share}
        try:
            return HonestyJudge(HonestyConfig(**{k: v for k, v in opts.items() if v is not None}))
        except ValidationError as e:
            raise ConfigError(f"honesty judge: {e.errors()[0]['loc'][0]}: {e.errors()[0]['msg']}") from e
    if kind == "classifier":
        from failforge.judges.classifier import ClassifierJudge

        source = spec.classifier or "profanity"
        if spec.replicas:
            from failforge.judges.classifier_pool import ClassifierPool

            trained_field = _trained_field(source)
            clf = ClassifierPool(
                absolute_source(source), spec.positive_label, replicas=spec.replicas, cpus_per_replica=spec.cpus_per_replica or 1.0,
                ray_address=spec.ray_address,
            )
        else:
            clf, trained_field = load_classifier(source, spec.positive_label)
        if trained_field == "pair" and spec.field not in (None, "pair"):
            raise ConfigError(
                f"classifier {spec.classifier}: trained on instruction + response pairs, so field must be pair, not {spec.field}"
            )
        if trained_field == "single" and spec.field == "pair":
            raise ConfigError(f"classifier {spec.classifier}: trained on one text per row, so field cannot be pair")
        default_field = "pair" if trained_field == "pair" else "response"
        return ClassifierJudge(clf, threshold=0.5 if spec.threshold is None else spec.threshold, field=spec.field or default_field)
    if kind == "llm":
        from failforge.judges.llm import LLMJudge
        from failforge.judges.rubrics import HarmlessRubric, HelpfulnessRubric, LlamaGuardRubric

        name = spec.rubric or "llama-guard"
        if name == "llama-guard":
            rubric = LlamaGuardRubric(mode=spec.guard_mode or "prompt", assess=spec.assess or "response")
        elif name == "helpfulness":
            rubric = HelpfulnessRubric(pass_at=5.0 if spec.threshold is None else spec.threshold)
        else:
            rubric = HarmlessRubric()
        return LLMJudge(chat_model(True), rubric, max_tokens=spec.max_tokens)
    if kind == "critique":
        from failforge.judges.critique import CritiqueConfig, CritiqueJudge

        return CritiqueJudge(CritiqueConfig(**({} if spec.threshold is None else {"min_relevance": spec.threshold})))
    if kind == "equality":
        from failforge.judges.equality import EqualityJudge

        return EqualityJudge(chat_model(True), max_tokens=spec.max_tokens)
    if kind == "novelty":
        from failforge.judges.novelty import NoveltyJudge

        return NoveltyJudge(0.9 if spec.threshold is None else spec.threshold)
    raise ConfigError(f"unknown judge kind {kind!r}")


def refusal_method(spec: JudgeSpec) -> str:
    """The refusal method a spec asks for: its ``method``, else the default
    (``judges.refusal_classifier.DEFAULT_METHOD``)."""
    if spec.method is not None:
        return spec.method
    from failforge.judges.refusal_classifier import DEFAULT_METHOD

    return DEFAULT_METHOD


def _refusal(spec: JudgeSpec, cache_root: Path | None) -> Judge:
    method = refusal_method(spec)
    if method == "classifier":
        from failforge.judges.refusal_classifier import RefusalClassifierConfig, RefusalClassifierJudge, default_cache_root

        config = RefusalClassifierConfig(**({"fail_on": spec.fail_on} if spec.fail_on else {}))
        return RefusalClassifierJudge(config, cache_root=cache_root or default_cache_root(os.environ))
    opts = {k: getattr(spec, k) for k in ("fail_on", *_PHRASE_OPTIONS)}
    given = {k: v for k, v in opts.items() if v is not None}
    if method == "relevance":
        from failforge.judges.refusal_relevance import RefusalRelevanceConfig, RefusalRelevanceJudge

        return RefusalRelevanceJudge(RefusalRelevanceConfig(**given))
    from failforge.judges.refusal import RefusalConfig, RefusalJudge

    return RefusalJudge(RefusalConfig(**given))


def _trained_field(name: str) -> str | None:
    """What a trained judge folder reads ("pair" or "single"), without loading it (a
    classifier pool's replicas load it); None for the others. Notes the files the run
    reads."""
    from failforge.judges.trained import is_trained_judge, read_meta
    from failforge.run.inputs import note_file

    head, _, arg = name.partition(":")
    if head == "profanity" and not arg:
        return None
    if head == "embedding" and arg:
        note_file("judge data", arg)
        return None
    folder = _classifier_folder(name)
    if Path(folder).is_dir():
        note_file("judge weights", folder)
    return ("pair" if read_meta(folder).pair else "single") if is_trained_judge(folder) else None


def absolute_source(name: str) -> str:
    """``name`` with a local path made absolute: a replica's working folder is not the run's."""
    head, sep, arg = name.partition(":")
    if head in ("hf", "embedding") and arg:
        return f"{head}:{Path(arg).expanduser().resolve()}" if Path(arg).expanduser().exists() else name
    if not sep and head != "profanity" and Path(name).expanduser().exists():
        return str(Path(name).expanduser().resolve())
    return name


def _classifier_folder(name: str) -> str:
    head, _, arg = name.partition(":")
    return str(Path(arg if head == "hf" and arg else name).expanduser())


def load_classifier(name: str, positive_label: str | None):
    """The classifier and, for a trained judge folder, what it reads: "pair" or "single"
    (None for the others)."""
    from failforge.judges.classifier import EmbeddingClassifier, HFSequenceClassifier, ProfanityClassifier

    field = _trained_field(name)
    head, _, arg = name.partition(":")
    if head == "profanity" and not arg:
        return ProfanityClassifier(), None
    if head == "embedding" and arg:
        return EmbeddingClassifier.load(arg), None
    folder = _classifier_folder(name)
    if field is not None:
        return HFSequenceClassifier.from_trained(folder, positive_label), field
    if head == "hf" and arg:
        return HFSequenceClassifier(arg, positive_label=positive_label), None
    path = Path(folder)
    why = "no such folder" if not path.exists() else "no failforge_judge.json there (a plain checkpoint is hf:<folder>)"
    raise ConfigError(f"classifier {name!r}: {why}")

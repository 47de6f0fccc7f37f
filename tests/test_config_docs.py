"""docs/config.md is generated from the config schemas and must match them."""

from pathlib import Path

from pydantic import BaseModel, Field

from failforge.docs_config import REGENERATE, field_meaning, render_config_reference
from failforge.methods import METHOD_NAMES

DOC = Path(__file__).resolve().parent.parent / "docs" / "config.md"


def test_docs_config_md_is_up_to_date():
    assert DOC.exists(), f"docs/config.md is missing: run `{REGENERATE}` from the repository root"
    assert DOC.read_text(encoding="utf-8") == render_config_reference(), (
        f"docs/config.md is out of date: run `{REGENERATE}` from the repository root"
    )


def test_every_method_and_nested_option_is_listed():
    text = render_config_reference()
    assert text.splitlines()[2].startswith("_Generated") and REGENERATE in text.splitlines()[2]
    for name in METHOD_NAMES:
        assert f"## `method: {name}`" in text
    for path in ("`train.warmup.beta`", "`train.warmup.lora.r`", "`seeds.heldout`", "`judge.kind`", "`sampling.temperature`"):
        assert path in text, path
    # a nested model is listed once per method; later paths point back to it
    assert "`train.proposer.beta`" not in text
    assert "(options as under `train.warmup.*`)" in text and "(options as under `proposer.*`)" in text


def test_meaning_comes_from_the_comment_or_the_description():
    text = render_config_reference()
    assert "| `seeds.n` | `int \\| null (>= 4)` | `null` | how many seed rows to load (None = all) |" in text
    # a default factory's values are the defaults shown at that path
    assert "| `train.proposer` | `TrainSettings \\| null` | `{kind: dpo, max_steps: 8, learning_rate: 5.0e-05}` |" in text


class _Documented(BaseModel):
    #: first line
    #: second line
    a: int = 1
    b: int = Field(2, description="from the description")
    c: int = 3  #: trailing
    # a plain comment is not documentation
    d: int = 4


def test_field_meaning_reads_comment_lines_above_a_field():
    fields = _Documented.model_fields
    assert field_meaning(_Documented, "a", fields["a"]) == "first line second line"
    assert field_meaning(_Documented, "b", fields["b"]) == "from the description"
    assert field_meaning(_Documented, "c", fields["c"]) == "trailing"
    assert field_meaning(_Documented, "d", fields["d"]) == ""

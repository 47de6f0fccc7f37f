"""Render a conversation with a model's Jinja chat template, the way transformers does.

Both local backends render through this one function so that, for the same weights,
llama.cpp and transformers see byte-identical prompt text (a prerequisite for their
greedy answers to agree). transformers' own renderer hangs off a loaded tokenizer and
llama-cpp-python's off its native library; neither is cheap to import from the other
backend, so the few lines of environment setup are repeated here, matching
``transformers.utils.chat_template_utils`` (sandboxed, trim/lstrip blocks,
loopcontrols, ``tojson`` without ASCII escaping, ``raise_exception``, ``strftime_now``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache

from failforge.errors import ConfigError
from failforge.models.base import Message

#: used when the weights carry no template and none is configured: ChatML, the format
#: most small instruct models (SmolLM2 included) are trained on
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _raise(message: str):
    raise ValueError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@lru_cache(maxsize=16)
def _compile(template: str):
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class _Generation(jinja2.ext.Extension):
        # transformers' {% generation %} marks assistant spans for training masks; rendering ignores it
        tags = {"generation"}

        def parse(self, parser):
            next(parser.stream)
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.Scope(body)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_Generation, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as e:
        raise ConfigError(f"chat_template: invalid Jinja at line {e.lineno}: {e.message}") from None


def render_chat(
    template: str,
    messages: Sequence[Message],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
) -> str:
    """The prompt text for ``messages`` (ending with the assistant turn's opening)."""
    try:
        return _compile(template).render(
            messages=[m.model_dump() for m in messages],
            bos_token=bos_token,
            eos_token=eos_token,
            add_generation_prompt=add_generation_prompt,
        )
    except ValueError as e:  # raise_exception() in the template: the conversation does not fit it
        raise ConfigError(f"chat_template rejected the conversation: {e}") from None

"""Rendering: Hugging Face Jinja templates and Ollama Go templates (Go's own engine)."""

from __future__ import annotations

import pytest

from modelpack.catalog import get_entry
from modelpack.errors import TemplateError
from modelpack.templates import render_go, render_jinja

CHAT = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi"},
        {"role": "user", "content": "How are you today?"}]
CARD = ("GPT4 Correct User: Hello<|end_of_turn|>GPT4 Correct Assistant: Hi<|end_of_turn|>"
        "GPT4 Correct User: How are you today?<|end_of_turn|>GPT4 Correct Assistant:")


def test_jinja_renders_the_card_text():
    e = get_entry("openchat-3.5-0106")
    assert render_jinja(e.jinja_template, CHAT, bos_token="<s>") == "<s>" + CARD
    assert render_jinja(e.jinja_template, CHAT, bos_token="<s>", add_generation_prompt=False) == \
        "<s>" + CARD[: -len("GPT4 Correct Assistant:")]


def test_jinja_hf_environment():
    # trim_blocks/lstrip_blocks, loop controls and raise_exception, as transformers sets them up
    tmpl = "{% for m in messages %}\n  {% if m.role == 'assistant' %}{% continue %}{% endif %}{{ m.content }};{% endfor %}"
    assert render_jinja(tmpl, CHAT) == "Hello;How are you today?;"
    with pytest.raises(TemplateError, match="only user"):
        render_jinja("{{ raise_exception('only user') }}", CHAT)
    with pytest.raises(TemplateError, match="parse"):
        render_jinja("{% for %}", CHAT)


def test_go_messages_template_matches_jinja():
    e = get_entry("openchat-3.5-0106")
    assert render_go(e.go_template, CHAT) == CARD
    # Ollama puts the Modelfile SYSTEM first; the card's system form is "SYSTEM<|end_of_turn|>"
    assert render_go(e.go_template, CHAT, system="Be brief.") == "Be brief.<|end_of_turn|>" + CARD


def test_go_legacy_template_follows_ollama():
    tmpl = "{{ if .System }}S:{{ .System }}\n{{ end }}U:{{ .Prompt }}\nA:{{ .Response }}</s>\n"
    # one run per turn; the last turn is cut right after .Response
    assert render_go(tmpl, CHAT, system="sys") == "S:sys\nU:Hello\nA:Hi</s>\nU:How are you today?\nA:"
    # consecutive user messages are joined with a blank line
    two = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    assert render_go(tmpl, two) == "U:a\n\nb\nA:"


def test_go_discopop_template_from_seed():
    e = get_entry("discopop-zephyr-7b-gemma")
    msgs = [{"role": "user", "content": "Hi"}]
    assert render_go(e.go_template, msgs, system="Be kind.") == \
        "<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_go_errors_are_template_errors():
    with pytest.raises(TemplateError, match="unclosed action"):
        render_go("{{ .Prompt ", CHAT)
    with pytest.raises(TemplateError):
        render_go("{{ nosuchfunc .Prompt }}", CHAT)

"""Model references follow Ollama's types/model/name.go rules, lowercased."""

from __future__ import annotations

import pytest

from modelpack.errors import InvalidNameError
from modelpack.names import DEFAULT_HOST, DEFAULT_NAMESPACE, ModelRef, is_valid_ref, parse_ref


@pytest.mark.parametrize("text, parts", [
    ("llama3", (DEFAULT_HOST, DEFAULT_NAMESPACE, "llama3", "latest")),
    ("llama3:8b", (DEFAULT_HOST, DEFAULT_NAMESPACE, "llama3", "8b")),
    ("me/llama3", (DEFAULT_HOST, "me", "llama3", "latest")),
    ("example.com/me/llama3:q4_k_m", ("example.com", "me", "llama3", "q4_k_m")),
    ("localhost:5000/ns/m:v1.2-x", ("localhost:5000", "ns", "m", "v1.2-x")),
    ("https://example.com/me/m", ("example.com", "me", "m", "latest")),
    ("OpenChat-3.5-0106:Q4_K_M", (DEFAULT_HOST, DEFAULT_NAMESPACE, "openchat-3.5-0106", "q4_k_m")),
    ("_x/_y:_z", (DEFAULT_HOST, "_x", "_y", "_z")),
])
def test_parse(text, parts):
    ref = parse_ref(text)
    assert ref.parts() == parts
    assert parse_ref(str(ref)) == ref  # str() is the full form and parses back


@pytest.mark.parametrize("text", [
    "", ":tag", "model:", "/model", "ns/", "a/b/c/d", "-model", "model:-tag", "ns.dot/model",
    "model name", "model@sha256:abc", "m" * 81, "model:" + "t" * 81, "mo/del:ta/g", "ümlaut",
    "host/ns/model:tag:extra",
])
def test_invalid(text):
    with pytest.raises(InvalidNameError):
        parse_ref(text)
    assert not is_valid_ref(text)


def test_length_limits():
    assert parse_ref("m" * 80).model == "m" * 80
    assert parse_ref("h" * 350 + "/ns/m").host == "h" * 350
    with pytest.raises(InvalidNameError, match="host"):
        parse_ref("h" * 351 + "/ns/m")


def test_short_form_hides_defaults():
    assert parse_ref("llama3").short == "llama3:latest"
    assert parse_ref("me/llama3:1").short == "me/llama3:1"
    assert parse_ref("example.com/library/x").short == "example.com/library/x:latest"
    assert parse_ref("me/x").repository == "me/x"


def test_default_tag_and_with_tag():
    ref = parse_ref("m", default_tag="q8_0")
    assert ref.tag == "q8_0"
    assert ref.with_tag("F16") == ModelRef(DEFAULT_HOST, DEFAULT_NAMESPACE, "m", "f16")


def test_error_names_the_part():
    with pytest.raises(InvalidNameError, match="namespace"):
        parse_ref("a.b/model")
    with pytest.raises(InvalidNameError, match="tag"):
        parse_ref("model:a+b")

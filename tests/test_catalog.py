"""The catalogue (templates/*.toml) and the license index."""

from __future__ import annotations

import json

import pytest

from modelpack.catalog import get_entry, list_entries
from modelpack.cli import main
from modelpack.errors import SourceError
from modelpack.licenses import get_license, list_licenses

NAMES = {"openchat-3.5-0106", "openchat-3.5-0106-gemma", "openchat_v3.2_super", "openchat", "openchat-8192",
         "opencoderplus", "discopop-zephyr-7b-gemma"}


def test_catalogue_has_every_seed_model():
    entries = list_entries()
    assert {e.name for e in entries} == NAMES
    for e in entries:
        assert e.repo.count("/") == 1 and e.revision
        assert e.context_length in (2048, 4096, 8192)
        assert e.jinja_template and e.go_template
        assert e.stop, e.name
        assert get_license(e.license).spdx  # every entry's license is in the index
        assert e.references, e.name


def test_entry_facts_follow_the_cards():
    oc = get_entry("openchat-3.5-0106")
    assert oc.license == "apache-2.0" and oc.context_length == 8192
    assert oc.tokenizer.added_tokens == {"<|end_of_turn|>": 32000, "<|pad_0|>": 32001}
    assert oc.stop == ["<|end_of_turn|>"] and oc.bos_token == "<s>"
    assert get_entry("openchat_v3.2_super").license == "llama2"
    assert get_entry("openchat_v3.2_super").context_length == 4096
    gemma = get_entry("openchat-3.5-0106-gemma")
    assert gemma.stop == ["<end_of_turn>"] and gemma.license == "gemma"
    disco = get_entry("discopop-zephyr-7b-gemma")
    # seed 004's Ollama params layer
    assert disco.ollama_params() == {"penalize_newline": False, "repeat_penalty": 1,
                                     "stop": ["<|im_start|>", "<|im_end|>"]}
    assert get_entry("openchat").context_length == 2048 and get_entry("openchat-8192").context_length == 8192
    assert get_entry("opencoderplus").tokenizer.bos == ""


def test_published_ids_are_recorded():
    oc = get_entry("openchat-3.5-0106")
    multi = next(r for r in oc.references if r.name == "multi-turn")
    assert multi.ids[:10] == [1, 420, 6316, 28781, 3198, 3123, 1247, 28747, 22557, 32000] and len(multi.ids) == 39
    sup = {r.name: r for r in get_entry("openchat_v3.2_super").references}
    assert len(sup["single-turn"].ids) == 14 and len(sup["multi-turn"].ids) == 33


def test_variant_overrides_templates():
    oc = get_entry("openchat-3.5-0106")
    math = oc.with_variant("math-correct")
    assert "Math Correct" in math.jinja_template and "Math Correct" in math.go_template
    assert "GPT4 Correct" in oc.jinja_template  # the base entry is unchanged
    assert [r.name for r in oc.references_for("math-correct")] == ["math-correct"]
    with pytest.raises(SourceError, match="math-correct"):
        oc.with_variant("nope")


def test_unknown_name_lists_known_names():
    with pytest.raises(SourceError) as err:
        get_entry("openchat-9")
    assert "openchat-3.5-0106" in str(err.value) and "discopop-zephyr-7b-gemma" in str(err.value)


def test_licenses_index():
    by_id = {lic.id: lic for lic in list_licenses()}
    assert by_id["apache-2.0"].spdx == "Apache-2.0" and by_id["apache-2.0"].spdx_listed
    assert "Apache License" in by_id["apache-2.0"].text
    assert by_id["llama2"].spdx.startswith("LicenseRef-") and not by_id["llama2"].spdx_listed
    assert "LLAMA 2 COMMUNITY LICENSE" in by_id["llama2"].text
    assert by_id["gemma"].spdx.startswith("LicenseRef-") and "Gemma Terms of Use" in by_id["gemma"].text
    assert get_license("Apache-2.0") is by_id["apache-2.0"]  # by SPDX id too
    with pytest.raises(SourceError):
        by_id["llama-1"].text  # named, but its text is not shipped
    with pytest.raises(SourceError, match="known"):
        get_license("mit")


def test_cli_templates_and_show_template(capsys):
    assert main(["templates", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {e["name"] for e in listed} == NAMES
    assert main(["show-template", "openchat-3.5-0106", "--format", "jinja"]) == 0
    assert capsys.readouterr().out.strip() == get_entry("openchat-3.5-0106").jinja_template
    assert main(["show-template", "discopop-zephyr-7b-gemma", "--format", "go"]) == 0
    assert capsys.readouterr().out.startswith("<|im_start|>system\n{{ .System }}<|im_end|>")
    assert main(["show-template", "nope"]) == 2
    assert main(["show-template", "openchat", "--format", "yaml"]) == 2

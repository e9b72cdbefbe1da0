"""verify-template: the published ids are reproduced, and broken templates are flagged clearly."""

from __future__ import annotations

import json

import pytest

from conftest import GEMMA_SPM, MISTRAL_SPM, TOKENIZERS
from modelpack.catalog import Reference, get_entry
from modelpack.cli import main
from modelpack.tokenize import load_tokenizer
from modelpack.verify import verify, verify_template

LLAMA_GGUF = TOKENIZERS / "ggml-vocab-llama-spm.gguf"
OPENCHAT = get_entry("openchat-3.5-0106")


@pytest.fixture(scope="module")
def mistral_tok():
    return load_tokenizer(MISTRAL_SPM, added=OPENCHAT.tokenizer.added_tokens)


@pytest.fixture(scope="module")
def s1_gguf(golden_checkpoint, tmp_path_factory):
    """The GGUF `modelpack convert` writes for the openchat-3.5-0106-shaped checkpoint."""
    from modelpack.convert import convert

    out = tmp_path_factory.mktemp("gguf") / "s1.gguf"
    convert(golden_checkpoint("s1"), out, outtype="f16")
    return out


def run(tok, **kw):
    args = dict(jinja_template=OPENCHAT.jinja_template, go_template=OPENCHAT.go_template, stop=OPENCHAT.stop,
                tokenizer=tok, references=OPENCHAT.references_for(None), bos_token="<s>")
    args.update(kw)
    return verify(**args)


def failed(report, prefix):
    return [c for c in report.failures if c.name.startswith(prefix)]


def ids_checked(report):
    return {c.name for c in report.checks if c.name.startswith("ids[") and c.ok and "published" in c.message}


# ---------------------------------------------------------------- published lists reproduced

def test_openchat_0106_through_sentencepiece_model():
    for variant, refs in ((None, {"multi-turn", "single-turn"}), ("math-correct", {"math-correct"})):
        report = verify_template("openchat-3.5-0106", tokenizer=str(MISTRAL_SPM), variant=variant)
        assert report.ok, report.format()
        assert ids_checked(report) == {f"ids[{r}/{s}]" for r in refs for s in ("jinja", "go")}


def test_openchat_0106_through_converted_gguf(s1_gguf):
    report = verify_template(str(s1_gguf))
    assert report.ok, report.format()
    assert report.model == "openchat-3.5-0106"  # found by its vocabulary and template
    assert {"ids[multi-turn/jinja]", "ids[single-turn/go]"} <= ids_checked(report)
    math = verify_template(str(s1_gguf), variant="math-correct")
    assert math.ok and "ids[math-correct/jinja]" in ids_checked(math), math.format()


def test_openchat_v32_super_through_llama2_gguf_vocab():
    report = verify_template("openchat_v3.2_super", tokenizer=str(LLAMA_GGUF))
    assert report.ok, report.format()
    assert ids_checked(report) == {f"ids[{r}/{s}]" for r in ("single-turn", "multi-turn") for s in ("jinja", "go")}


def test_gemma_entry_with_gemma_vocabulary():
    report = verify_template("openchat-3.5-0106-gemma", tokenizer=str(GEMMA_SPM))
    assert report.ok, report.format()
    assert report.convention == "split-special"
    # Gemma has no dummy prefix: OpenChat's piece-by-piece code gives "Hello" as 4521, the text 25957;
    # the report says which convention it used and where the training format differs
    warn = next(c for c in report.checks if c.name == "training-format[multi-turn]")
    assert warn.severity == "warning" and not warn.ok
    assert "'split-special' convention" in warn.message and "expected 4521 'Hello', got 25957 '▁Hello'" in warn.message
    same = verify_template("openchat-3.5-0106", tokenizer=str(MISTRAL_SPM))
    assert next(c for c in same.checks if c.name == "training-format[multi-turn]").ok  # both agree for Mistral


@pytest.mark.parametrize("name", ["discopop-zephyr-7b-gemma", "openchat", "openchat-8192", "opencoderplus"])
def test_other_entries_render_consistently(name):
    tokenizer = {"opencoderplus": TOKENIZERS / "starcoder-eot.tokenizer.json",
                 "discopop-zephyr-7b-gemma": GEMMA_SPM}.get(name, LLAMA_GGUF)
    report = verify_template(name, tokenizer=str(tokenizer))
    assert report.ok, report.format()


# ---------------------------------------------------------------- what must be flagged

def test_flags_seed_001_chinese_example(mistral_tok):
    zh = Reference(name="card-zh", messages=[{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好"},
                                             {"role": "user", "content": "今天过得怎么样?"}],
                   ids=OPENCHAT.references[0].ids)
    report = run(mistral_tok, references=[zh])
    assert not report.ok
    text = report.format()
    assert "not of this conversation" in text and "'你好'" in text
    assert report.mismatches[0].expected_ids == [22557] and report.mismatches[0].expected_pieces == ["▁Hello"]


def test_flags_missing_space_after_role_colon(mistral_tok):
    report = run(mistral_tok, jinja_template=OPENCHAT.jinja_template.replace("': '", "':'"))
    assert failed(report, "ids[multi-turn/jinja]") and failed(report, "jinja-vs-go")
    assert "space is missing before 'Hello'" in report.format()
    m = next(m for m in report.mismatches if m.source == "jinja")
    assert (m.position, m.expected_ids, m.actual_pieces) == (8, [22557], ["Hello"])


def test_flags_wrong_end_of_turn_token(mistral_tok):
    bad = OPENCHAT.jinja_template.replace("<|end_of_turn|>", "<end_of_turn>")
    report = run(mistral_tok, jinja_template=bad, go_template=None, stop=["<end_of_turn>"])
    checks = failed(report, "special-tokens")
    assert checks and "'<end_of_turn>', which is not a token" in checks[0].message
    assert "'<|end_of_turn|>' (id 32000)" in checks[0].message
    assert "did you mean '<|end_of_turn|>'" in failed(report, "stop[<end_of_turn>]")[0].message


def test_flags_legacy_false_tokenization(mistral_tok):
    report = run(mistral_tok, go_template=None, convention="legacy-false")
    assert not report.ok and report.convention == "legacy-false"
    assert "legacy=False" in report.format() and "'split-special' convention" in report.format()
    assert report.mismatches[0].expected_ids == [420] and report.mismatches[0].actual_ids == [28777]


def test_flags_legacy_false_checkpoint(tmp_path):
    from conftest import GOLDEN_ARGS, make_checkpoint

    folder = make_checkpoint(tmp_path / "ckpt", *GOLDEN_ARGS["s1"][:2], "--hidden", "64", "--layers", "1",
                             "--heads", "2", "--kv-heads", "1", "--ffn", "64")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert verify_template(str(folder)).ok
    config["legacy"] = False
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    report = verify_template(str(folder))
    assert not report.ok and "legacy" in report.format()


def test_flags_multi_token_stop(mistral_tok):
    report = run(mistral_tok, stop=["GPT4 Correct User:"])
    msg = failed(report, "stop[GPT4 Correct User:]")[0].message
    assert "is 7 tokens" in msg and "not one special token" in msg
    assert failed(report, "stop[end-of-turn]")  # and <|end_of_turn|> no longer stops generation


def test_flags_go_and_jinja_disagreeing(mistral_tok):
    go = OPENCHAT.go_template.replace("GPT4 Correct Assistant: {{", "GPT4 Correct Assistant:{{")
    report = run(mistral_tok, go_template=go)
    check = failed(report, "jinja-vs-go[multi-turn]")[0]
    assert "render differently" in check.message and "Assistant:Hi" in check.message
    assert not failed(report, "ids[multi-turn/jinja]") and failed(report, "ids[multi-turn/go]")


def test_text_only_without_tokenizer():
    report = verify(OPENCHAT.jinja_template.replace("': '", "':'"), OPENCHAT.go_template, OPENCHAT.stop, None,
                    OPENCHAT.references_for(None), bos_token="<s>", eot_token="<|end_of_turn|>")
    assert failed(report, "text[multi-turn/jinja]") and not failed(report, "text[multi-turn/go]")
    report = verify(OPENCHAT.jinja_template, None, [], None, [], eot_token="<|end_of_turn|>")
    assert failed(report, "stop[end-of-turn]")


# ---------------------------------------------------------------- CLI

def test_cli_exit_codes_and_json(capsys):
    assert main(["verify-template", "openchat_v3.2_super", "--tokenizer", str(LLAMA_GGUF), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is True and out["model"] == "openchat_v3.2_super"
    assert main(["verify-template", "openchat-3.5-0106", "--tokenizer", str(MISTRAL_SPM),
                 "--convention", "legacy-false"]) == 1
    text = capsys.readouterr().out
    assert "FAIL ids[multi-turn/jinja]" in text and "expected 420 '▁G', got 28777 'G'" in text
    assert main(["verify-template", "no-such-model"]) == 2
    assert "catalogue names" in capsys.readouterr().err

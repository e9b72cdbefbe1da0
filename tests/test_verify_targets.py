"""verify-template on Modelfiles and on bundles in the store."""

from __future__ import annotations

import pytest

from conftest import MISTRAL_SPM
from modelpack.catalog import get_entry
from modelpack.cli import main
from modelpack.verify import verify_template

OPENCHAT = get_entry("openchat-3.5-0106")


def modelfile(tmp_path, source, template=None, *params):
    lines = [f"FROM {source}"]
    if template is not None:
        lines.append(f'TEMPLATE """{template}"""')
    lines += [f"PARAMETER {p}" for p in params]
    path = tmp_path / "Modelfile"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_modelfile_from_checkpoint(golden_checkpoint, tmp_path):
    folder = golden_checkpoint("s1")
    good = verify_template(str(modelfile(tmp_path, folder, OPENCHAT.go_template, 'stop "<|end_of_turn|>"')))
    assert good.ok, good.format()
    assert good.model == "openchat-3.5-0106" and "ids[multi-turn/go]" in {c.name for c in good.checks if c.ok}

    broken = OPENCHAT.go_template.replace("<|end_of_turn|>", "<end_of_turn>")
    report = verify_template(str(modelfile(tmp_path, folder, broken, 'stop "<end_of_turn>"')))
    assert not report.ok
    text = report.format()
    assert "writes '<end_of_turn>', which is not a token" in text and "did you mean '<|end_of_turn|>'" in text
    assert "render differently" in text


def test_modelfile_from_catalogue_name(tmp_path):
    path = modelfile(tmp_path, "openchat-3.5-0106", None, 'stop "GPT4 Correct User:"')
    report = verify_template(str(path), tokenizer=str(MISTRAL_SPM))
    assert not report.ok
    assert [c.name for c in report.failures] == ["stop[GPT4 Correct User:]", "stop[end-of-turn]"]


def test_bundle_in_store(golden_checkpoint, modelpack_home, capsys):
    build = pytest.importorskip("modelpack.build")
    build.build(str(golden_checkpoint("s1")), tag="openchat-test:f16", quant="F16", home=str(modelpack_home))
    report = verify_template("openchat-test:f16")
    assert report.ok, report.format()
    assert report.model == "openchat-3.5-0106"
    assert {"ids[multi-turn/jinja]", "ids[multi-turn/go]", "stop[<|end_of_turn|>]"} <= {c.name for c in report.checks if c.ok}
    assert main(["verify-template", "openchat-test:f16"]) == 0
    assert "OK" in capsys.readouterr().out
    # a CNCF ModelPack artifact of it, with a MESSAGE history (a system message among the turns)
    mf = modelpack_home / "Modelfile"
    mf.write_text("FROM openchat-test:f16\nMESSAGE user Hi\nMESSAGE system Be brief.\nMESSAGE assistant Hello\n")
    build.build(str(mf), tag="openchat-mp:f16", format="modelpack", home=str(modelpack_home))
    report = verify_template("openchat-mp:f16")
    assert report.ok and "jinja-vs-go[bundle-messages]" in {c.name for c in report.checks if c.ok}, report.format()


def test_starcoder_gguf_from_convert(golden_checkpoint, tmp_path):
    """A 'gpt2' GGUF vocabulary (OpenCoderPlus-shaped checkpoint) becomes a `tokenizers` BPE."""
    from modelpack.convert import convert

    out = tmp_path / "g1.gguf"
    convert(golden_checkpoint("g1"), out, outtype="f16")
    report = verify_template(str(out))
    assert report.ok, report.format()
    assert report.model == "opencoderplus" and "stop[<|end_of_turn|>]" in {c.name for c in report.checks if c.ok}


def test_modelfile_system_and_messages(golden_checkpoint, tmp_path):
    path = tmp_path / "Modelfile"
    path.write_text(f'FROM {golden_checkpoint("s1")}\nSYSTEM "Be brief."\nMESSAGE user Hello\n'
                    'MESSAGE assistant Hi there\n', encoding="utf-8")
    report = verify_template(str(path))
    assert report.ok, report.format()
    checks = {c.name: c for c in report.checks}
    assert checks["jinja-vs-go[modelfile-messages]"].ok
    # the card's system form differs from what the published Jinja template makes of a system message
    assert checks["system"].severity == "warning" and "GPT4 Correct System: Be brief." in checks["system"].message


# ---- folders whose files are broken (QA) ---------------------------------------------------------------
def _folder(tmp_path, config_text: str):
    import shutil

    folder = tmp_path / "ckpt"
    folder.mkdir()
    shutil.copy(MISTRAL_SPM, folder / "tokenizer.model")
    (folder / "tokenizer_config.json").write_text(config_text)
    return folder


@pytest.mark.parametrize("config, fragment", [
    ('{"chat_template": "x",\n  oops}', "tokenizer_config.json:2: tokenizer_config.json is not valid JSON"),
    ('{"chat_template": 5}', "chat_template must be a string, not int"),
    ('["not", "an", "object"]', "is not a JSON object"),
])
def test_broken_tokenizer_config_is_one_clear_error(tmp_path, capsys, config, fragment):
    folder = _folder(tmp_path, config)
    assert main(["verify-template", str(folder)]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


def test_jinja_errors_name_the_file(tmp_path):
    import json

    entry = get_entry("openchat-3.5-0106")
    config = {"bos_token": "<s>", "eos_token": "<|end_of_turn|>", "legacy": True,
              "added_tokens_decoder": {str(i): {"content": t} for t, i in entry.tokenizer.added_tokens.items()},
              "chat_template": entry.jinja_template.replace("{% endfor %}", "")}
    folder = _folder(tmp_path, json.dumps(config))
    report = verify_template(str(folder))
    assert not report.ok
    assert any(f"{folder / 'tokenizer_config.json'}: chat_template line 1: Jinja template does not parse" in c.message
               for c in report.failures), report.format()

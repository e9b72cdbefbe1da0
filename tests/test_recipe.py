"""The Modelfile grammar (Ollama's parser/parser.go), typed parameters and line-numbered errors."""

from __future__ import annotations

import pytest

from modelpack.bundle import Float32, go_json
from modelpack.errors import ModelfileError
from modelpack.recipe import (PARAMETER_TYPES, Recipe, coerce_params, load_modelfile, parse_modelfile, quote,
                              to_modelfile)

FULL = '''# a comment
  # an indented comment
from ./ckpt
TEMPLATE """{{ if .System }}<|system|>
{{ .System }}<|end|>
{{ end }}{{ .Prompt }}"""
system You are "helpful" & brief.
PARAMETER stop <|end|>
PARAMETER stop "<|user|>"
PARAMETER\ttemperature 0.7
PARAMETER num_ctx 4096
PARAMETER use_mmap False
PARAMETER seed -1
PARAMETER mirostat 2
MESSAGE user Is it "quoted"?
MESSAGE assistant """Yes.
Twice."""
LICENSE """MIT License

Permission is hereby granted"""
LICENSE Apache-2.0 text
REQUIRES v0.5.1
'''


def test_full_modelfile():
    r = parse_modelfile(FULL, path="Modelfile")
    assert r.source == "./ckpt" and r.source_line == 3
    assert r.template == "{{ if .System }}<|system|>\n{{ .System }}<|end|>\n{{ end }}{{ .Prompt }}"
    assert r.system == 'You are "helpful" & brief.'
    assert r.params == {"stop": ["<|end|>", "<|user|>"], "temperature": 0.7, "num_ctx": 4096,
                        "use_mmap": False, "seed": -1}
    assert isinstance(r.params["temperature"], Float32) and type(r.params["num_ctx"]) is int
    assert r.messages == [("user", 'Is it "quoted"?'), ("assistant", "Yes.\nTwice.")]
    assert r.licenses == ["MIT License\n\nPermission is hereby granted", "Apache-2.0 text"]
    assert r.requires == "0.5.1"
    assert r.warnings == ["Modelfile:14: parameter mirostat is deprecated and ignored"]


def test_params_json_like_ollama():
    r = parse_modelfile("FROM x\nPARAMETER temperature 0.1\nPARAMETER top_k 40\nPARAMETER stop <|im_end|>\n"
                        "PARAMETER repeat_penalty 1\nPARAMETER min_p 1e-7\n")
    assert go_json(r.params) == ('{"min_p":1e-7,"repeat_penalty":1,"stop":["\\u003c|im_end|\\u003e"],'
                                 '"temperature":0.1,"top_k":40}')


def test_last_value_wins_except_stop():
    r = parse_modelfile("FROM x\nPARAMETER top_k 1\nPARAMETER top_k 2\nSYSTEM a\nSYSTEM b\n")
    assert r.params == {"top_k": 2} and r.system == "b"


def test_crlf_bom_and_blank_quotes():
    text = '\ufeffFROM x\r\nSYSTEM ""\r\nTEMPLATE """a\r\nb"""\r\nPARAMETER stop "  spaced  "\r\n'
    r = parse_modelfile(text)
    assert r.source == "x" and r.system == ""
    assert r.template == "a\r\nb"  # inside quotes the file's bytes are kept
    assert r.params["stop"] == ["  spaced  "]


def test_value_rules():
    r = parse_modelfile('FROM x\nSYSTEM   padded value   \nMESSAGE system "one line"\nPARAMETER stop """"q""""\n')
    assert r.system == "padded value"
    assert r.messages == [("system", "one line")]
    assert r.params["stop"] == ['"q"']


@pytest.mark.parametrize("text, line, match", [
    ("FROM x\nPARAMETER temperature hot\n", 2, "invalid float"),
    ("FROM x\nPARAMETER num_ctx 4k\n", 2, "invalid int"),
    ("FROM x\nPARAMETER num_ctx 1_000\n", 2, "invalid int"),
    ("FROM x\nPARAMETER use_mmap yes\n", 2, "invalid bool"),
    ("FROM x\nPARAMETER temperature inf\n", 2, "invalid float"),
    ("FROM x\nPARAMETER top_q 1\n", 2, "unknown parameter 'top_q'"),
    ("FROM x\nPARAMETER stop\n", 2, "PARAMETER needs"),
    ("FROM x\n\nADAPTER ./lora.gguf\n", 3, "ADAPTER"),
    ("FROM x\nDRAFT ./small.gguf\n", 2, "DRAFT"),
    ("FROM x\nFROBNICATE y\n", 2, "unknown instruction 'FROBNICATE'"),
    ("FROM x\nSYSTEM\n", 2, "SYSTEM needs a value"),
    ("FROM x\nMESSAGE robot hi\n", 2, "role"),
    ("FROM x\nREQUIRES latest\n", 2, "semantic version"),
    ("FROM x\n\nSYSTEM \"\"\"never\nclosed\n", 3, "unterminated"),
    ("FROM x\nFROM y\n", 2, "second FROM"),
    ("FROM x\n@@@\n", 2, "unknown instruction"),
    ("FROM x\nTEMPLATE \"\"\"\n\n\"\"\"\n", 2, "TEMPLATE is empty"),
    ("FROM x\nTEMPLATE \"\"\n", 2, "TEMPLATE is empty"),
    ("FROM x\nPARAMETER top_k 40.0\n", 2, "invalid int"),
    ("FROM x\nPARAMETER temperature 1e39\n", 2, "invalid float"),
    ("FROM x\nMESSAGE tool {}\n", 2, "role"),
    ("FROM x\nSYSTEM \"unclosed\n", 2, "unterminated"),
    ("from x\nlicense \"\"\"one\n\ntwo\n", 2, "unterminated"),
])
def test_errors_name_file_and_line(tmp_path, text, line, match):
    path = tmp_path / "Modelfile"
    path.write_text(text)
    with pytest.raises(ModelfileError, match=match) as info:
        load_modelfile(path)
    assert info.value.line == line
    assert str(info.value).startswith(f"{path}:{line}: ")


def test_missing_from(tmp_path):
    path = tmp_path / "Modelfile"
    path.write_text("SYSTEM hi\n")
    with pytest.raises(ModelfileError, match="no FROM") as info:
        load_modelfile(path)
    assert info.value.path == str(path)


def test_base_dir_is_the_modelfile_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "Modelfile"
    path.write_text("FROM ../model.gguf\n")
    assert load_modelfile(path).base_dir == (tmp_path / "sub").resolve()


@pytest.mark.parametrize("value", ["plain", " lead", "trail ", "two\nlines", 'has "quotes"', '"starts',
                                   'ends"', "", "a\r\nb", "tab\tinside", "<|im_end|>"])
def test_quote_roundtrip(value):
    r = parse_modelfile(f"FROM x\nSYSTEM {quote(value)}\n")
    assert r.system == value


def test_to_modelfile_roundtrip():
    r = parse_modelfile(FULL)
    again = parse_modelfile(to_modelfile(r))
    for name in ("source", "template", "system", "params", "messages", "licenses", "requires"):
        assert getattr(again, name) == getattr(r, name), name
    assert to_modelfile(r, source="other:tag").splitlines()[0] == "FROM other:tag"


def test_coerce_catalogue_params():
    params = coerce_params({"temperature": 0.7, "top_k": 40, "num_ctx": 4096.0, "stop": ["a", "b"],
                            "use_mmap": True, "some_future_option": "kept"})
    assert isinstance(params["temperature"], Float32)
    assert params == {"temperature": 0.7, "top_k": 40, "num_ctx": 4096, "stop": ["a", "b"], "use_mmap": True,
                      "some_future_option": "kept"}


def test_every_typed_parameter_parses():
    samples = {"int": "3", "float32": "0.5", "bool": "true", "[]string": "x"}
    lines = "".join(f"PARAMETER {n} {samples[t]}\n" for n, t in PARAMETER_TYPES.items())
    r = parse_modelfile("FROM x\n" + lines)
    assert set(r.params) == set(PARAMETER_TYPES)
    assert isinstance(Recipe(), Recipe)


def test_template_line_is_where_its_value_starts():
    r = parse_modelfile('FROM x\n# c\nTEMPLATE """\n{{ .Prompt }}"""\n')
    assert r.template == "\n{{ .Prompt }}" and r.template_line == 3

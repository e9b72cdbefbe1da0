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


# ---------------------------------------------------------------- broken templates no one listed (QA)

GO, JINJA = OPENCHAT.go_template, OPENCHAT.jinja_template
GEN = "{% if add_generation_prompt %}{{ 'GPT4 Correct Assistant:' }}{% endif %}"
SYSTEM_GO = "{{ if .System }}{{ .System }}<|end_of_turn|>{{ end }}"

# (name, Go template, message fragment the failures must contain)
BROKEN_GO = [
    ("role-lowercase", GO.replace("Correct User:", "Correct user:"), "expected 1247 '▁User', got 2188 '▁user'"),
    ("role-renamed", GO.replace("GPT4 Correct User:", "GPT4 User:"), "render differently"),
    ("no-space-after-colon", GO.replace("User: {{", "User:{{"), "space is missing before 'Hello'"),
    ("two-spaces", GO.replace("Assistant: {{", "Assistant:  {{"), "extra space"),
    ("space-after-prompt", GO + " ", "ends with extra whitespace"),
    ("newline-after-prompt", GO + "\n", "ends with extra whitespace ('<0x0A>')"),
    ("no-generation-prompt", GO[:-len("GPT4 Correct Assistant:")], "is missing at the end"),
    ("eot-misspelt", GO.replace("<|end_of_turn|>", "<end_of_turn>"), "the vocabulary has '<|end_of_turn|>'"),
    ("eot-unclosed-pipe", GO.replace("<|end_of_turn|>", "<|end_of_turn>"), "render differently"),
    ("eot-is-eos", GO.replace("<|end_of_turn|>", "</s>"), "expected 32000 '<|end_of_turn|>', got 2 '</s>'"),
    ("bos-written", "<s>" + GO, "BOS '<s>' comes twice"),
    ("newline-between-turns", GO.replace("<|end_of_turn|>\n{{- else", "<|end_of_turn|>\n{{ else"), "'<0x0A>'"),
    ("no-trim-markers", GO.replace("{{- ", "{{ "), "render differently"),
    ("space-before-eot", GO.replace("{{ .Content }}<|end_of_turn|>", "{{ .Content }} <|end_of_turn|>"), "extra space"),
    ("doubled-eot", GO.replace("{{ .Content }}<|end_of_turn|>", "{{ .Content }}<|end_of_turn|><|end_of_turn|>"),
     "got 32000 '<|end_of_turn|>'"),
    ("drops-assistant-turns", GO.replace('{{- else if eq .Role "assistant" }}GPT4 Correct Assistant: {{ .Content }}'
                                         '<|end_of_turn|>\n', ""), "render differently"),
    ("title-case-role-test", GO.replace('eq .Role "user"', 'eq .Role "User"'), "render differently"),
    ("prompt-only", "GPT4 Correct User: {{ .Prompt }}<|end_of_turn|>GPT4 Correct Assistant:", "render differently"),
    ("response-with-space", SYSTEM_GO + "{{ if .Prompt }}GPT4 Correct User: {{ .Prompt }}<|end_of_turn|>{{ end }}"
     "GPT4 Correct Assistant: {{ .Response }}<|end_of_turn|>", "ends with extra whitespace"),
    ("chatml-for-openchat", "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
     "<|im_start|>assistant\n", "'<|im_start|>', which is not a token"),
    ("math-prefix-in-default", GO.replace("GPT4 Correct User:", "Math Correct User:"), "got 6960 '▁Math'"),
    ("ignores-system", GO.replace(SYSTEM_GO, ""), "the Go template drops the system prompt"),
    ("system-twice", GO.replace('{{- else if eq .Role "assistant" }}', '{{- else if eq .Role "system" }}{{ .Content }}'
                                '<|end_of_turn|>{{- else if eq .Role "assistant" }}'), "system prompt 2 times"),
    ("unclosed-action", GO.replace("{{- end }}\n{{- end }}", "{{- end }}"), "Go template does not parse: unexpected EOF"),
    ("unknown-function", GO.replace("eq .Role", "equals .Role"), 'function "equals" not defined'),
    ("unknown-field", GO.replace(".Content", ".Contnt"), "can't evaluate field Contnt"),
    ("half-brace", GO.replace("{{ .Content }}", "{{ .Content }"), "Go template does not parse"),
    ("empty", "", "the Go TEMPLATE is empty"),
]

# (name, Jinja template, message fragment)
BROKEN_JINJA = [
    ("no-bos", JINJA.replace("{{ bos_token }}", ""), "should begin with {{ bos_token }}"),
    ("bos-twice", "{{ bos_token }}" + JINJA, "BOS '<s>' comes twice"),
    ("eos-for-bos", JINJA.replace("{{ bos_token }}", "{{ eos_token }}"), "expected 1 '<s>', got 2 '</s>'"),
    ("role-not-titled", JINJA.replace(".title()", ""), "got 2188 '▁user'"),
    ("role-upper", JINJA.replace(".title()", ".upper()"), "got 2223 '▁US'"),
    ("no-space", JINJA.replace("': '", "':'"), "space is missing before 'Hello'"),
    ("two-spaces", JINJA.replace("': '", "':  '"), "extra space"),
    ("newline-after-eot", JINJA.replace("'<|end_of_turn|>'}}", "'<|end_of_turn|>\n'}}"), "render differently"),
    ("no-generation-prompt", JINJA.replace(GEN, ""), "is missing at the end (is add_generation_prompt handled?)"),
    ("generation-prompt-always", JINJA.replace(GEN, "{{ 'GPT4 Correct Assistant:' }}"),
     "with add_generation_prompt false the Jinja template still writes '<|end_of_turn|>GPT4 Correct Assistant:'"),
    ("generation-prompt-space", JINJA.replace("'GPT4 Correct Assistant:' }}", "'GPT4 Correct Assistant: ' }}"),
     "ends with extra whitespace"),
    ("eot-misspelt", JINJA.replace("<|end_of_turn|>", "<end_of_turn>"), "the vocabulary has '<|end_of_turn|>'"),
    ("eot-is-eos", JINJA.replace("'<|end_of_turn|>'", "eos_token"), "got 2 '</s>'"),
    ("unclosed-for", JINJA.replace("{% endfor %}", ""), "Jinja template does not parse"),
    ("bad-expression", JINJA.replace("message['content']", "message['content'"), "Jinja template does not parse"),
    ("unknown-tag", JINJA.replace("{% endif %}", "{% endiff %}"), "unknown tag 'endiff'"),
    ("undefined-variable", JINJA.replace("message['content']", "msg['content']"), "'msg' is undefined"),
    ("raises", "{{ raise_exception('no chat here') }}", "no chat here"),
    ("ignores-system", "{{ bos_token }}{% for message in messages if message['role'] != 'system' %}"
     "{{ 'GPT4 Correct ' + message['role'].title() + ': ' + message['content'] + '<|end_of_turn|>'}}{% endfor %}" + GEN,
     "the Jinja template has no place for it"),
    ("chatml", "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
     "'<|im_end|>\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
     "'<|im_end|>', which is not a token"),
    ("stray-newlines", JINJA.replace("{% for", "\n{% for").replace("{% if", "\n{% if"), "render differently"),
    ("llama2-format", "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
     "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% else %}{{ ' ' + message['content'] + ' ' + eos_token }}"
     "{% endif %}{% endfor %}", "render differently"),
    ("empty", "", "the Jinja chat_template is empty"),
]

# correct templates written differently: they must pass
GOOD_GO = [
    ("catalogue", GO),
    ("prompt-response", SYSTEM_GO + "{{ if .Prompt }}GPT4 Correct User: {{ .Prompt }}<|end_of_turn|>{{ end }}"
     "GPT4 Correct Assistant:{{ if .Response }} {{ .Response }}<|end_of_turn|>{{ end }}"),
    ("system-role", '{{- range .Messages }}{{- if eq .Role "system" }}{{ .Content }}<|end_of_turn|>'
     '{{- else if eq .Role "user" }}GPT4 Correct User: {{ .Content }}<|end_of_turn|>'
     '{{- else }}GPT4 Correct Assistant: {{ .Content }}<|end_of_turn|>{{- end }}{{- end }}GPT4 Correct Assistant:'),
    ("last-message-logic", SYSTEM_GO + '{{- range $i, $_ := .Messages }}{{- $last := eq (len (slice $.Messages $i)) 1 }}'
     '{{- if eq .Role "user" }}GPT4 Correct User: {{ .Content }}<|end_of_turn|>{{ if $last }}GPT4 Correct Assistant:'
     '{{ end }}{{- else if eq .Role "assistant" }}GPT4 Correct Assistant: {{ .Content }}{{ if not $last }}'
     '<|end_of_turn|>{{ end }}{{- end }}{{- end }}{{ if .Tools }}never{{ end }}'),
    ("range-variables", SYSTEM_GO + '{{ range $i, $m := .Messages }}{{ if eq $m.Role "user" }}GPT4 Correct User: '
     '{{ $m.Content }}<|end_of_turn|>{{ else if eq $m.Role "assistant" }}GPT4 Correct Assistant: {{ $m.Content }}'
     '<|end_of_turn|>{{ end }}{{ end }}GPT4 Correct Assistant:'),
]


def _all_text(report):
    return "\n".join([c.message for c in report.failures]
                     + [line for c in report.failures for line in c.details.get("lines", [])])


def _one_line_messages(report):
    return all("\n" not in c.message for c in report.checks)


@pytest.mark.parametrize("name, go, fragment", BROKEN_GO, ids=[c[0] for c in BROKEN_GO])
def test_broken_go_templates_fail_clearly(mistral_tok, name, go, fragment):
    report = run(mistral_tok, go_template=go)
    assert not report.ok and fragment in _all_text(report), report.format()
    assert _one_line_messages(report)


@pytest.mark.parametrize("name, jinja, fragment", BROKEN_JINJA, ids=[c[0] for c in BROKEN_JINJA])
def test_broken_jinja_templates_fail_clearly(mistral_tok, name, jinja, fragment):
    report = run(mistral_tok, jinja_template=jinja)
    assert not report.ok and fragment in _all_text(report), report.format()
    assert _one_line_messages(report)


@pytest.mark.parametrize("name, go", GOOD_GO, ids=[c[0] for c in GOOD_GO])
def test_correct_go_templates_pass(mistral_tok, name, go):
    for system in (None, "Be brief."):
        report = run(mistral_tok, go_template=go, system=system)
        assert report.ok, report.format()


@pytest.mark.parametrize("stop, fragment", [
    (["<|end_of_turn|>", "GPT4 Correct User:"], "is 7 tokens"),
    (["<|end_of_turn>"], "did you mean '<|end_of_turn|>'"),
    (["User:"], "not one special token"),
    (["<|end_of_turn|>", ""], "an empty stop string"),
    ([], "neither a stop string"),
])
def test_broken_stop_strings(mistral_tok, stop, fragment):
    report = run(mistral_tok, stop=stop)
    assert not report.ok and fragment in _all_text(report), report.format()


def test_system_prompt_dropped_by_both_templates(mistral_tok):
    go, jinja = BROKEN_GO[[c[0] for c in BROKEN_GO].index("ignores-system")][1], \
        BROKEN_JINJA[[c[0] for c in BROKEN_JINJA].index("ignores-system")][1]
    assert run(mistral_tok, go_template=go, jinja_template=jinja).ok  # no system prompt: a warning only
    report = run(mistral_tok, go_template=go, jinja_template=jinja, system="Be brief.")
    assert "has a SYSTEM prompt but the templates drop it" in _all_text(report)


def test_go_errors_name_the_modelfile_line(mistral_tok):
    go = dict((c[0], c[1]) for c in BROKEN_GO)["unclosed-action"]
    report = run(mistral_tok, go_template=go, go_origin=("Modelfile", 3))
    assert "Modelfile:7: Go template does not parse: unexpected EOF" in _all_text(report)


@pytest.mark.parametrize("name, go, fragment", [
    ("no-newline-after-role", "<|im_start|>system\n{{ .System }}<|im_end|>\n<|im_start|>user{{ .Prompt }}<|im_end|>\n"
     "<|im_start|>assistant\n", "render differently"),
    ("end-of-turn-name", "<|im_start|>system\n{{ .System }}<end_of_turn>\n<|im_start|>user\n{{ .Prompt }}<end_of_turn>"
     "\n<|im_start|>assistant\n", "this vocabulary calls that token (id 107) '<|im_end|>'"),
    ("role-human", "<|im_start|>system\n{{ .System }}<|im_end|>\n<|im_start|>human\n{{ .Prompt }}<|im_end|>\n"
     "<|im_start|>assistant\n", "render differently"),
    ("no-system-block", "<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n", "drops the system prompt"),
])
def test_broken_chatml_for_discopop(gemma_chatml_tok, name, go, fragment):
    entry = get_entry("discopop-zephyr-7b-gemma")
    report = verify(entry.jinja_template, go, entry.stop, gemma_chatml_tok, entry.references_for(None),
                    bos_token="<bos>", eos_token="<eos>", eot_token="<|im_end|>")
    assert not report.ok and fragment in _all_text(report), report.format()


def test_discopop_stop_without_im_end(gemma_chatml_tok):
    entry = get_entry("discopop-zephyr-7b-gemma")
    report = verify(entry.jinja_template, entry.go_template, ["<|im_start|>"], gemma_chatml_tok,
                    entry.references_for(None), bos_token="<bos>", eos_token="<eos>")
    assert "assistant turns end with '<|im_end|>' (id 107) but it is neither a stop string" in _all_text(report)


@pytest.fixture(scope="module")
def gemma_chatml_tok():
    return load_tokenizer(GEMMA_SPM, added=get_entry("discopop-zephyr-7b-gemma").tokenizer.added_tokens)


def test_gguf_vocabulary_without_unknown_piece(s1_gguf):
    """A diagnosis that re-tokenizes with legacy=False once crashed on a GGUF vocabulary whose sentencepiece
    model has no UNKNOWN piece (unk_id -1)."""
    tok = load_tokenizer(s1_gguf)
    report = run(tok, go_template=GO.replace("User: {{", "User:{{"))
    assert "space is missing before 'Hello'" in _all_text(report)


def test_a_tokenizer_that_is_not_the_models_is_named_first():
    report = verify_template("openchat_v3.2_super", tokenizer=str(MISTRAL_SPM))  # Mistral's, not Llama 2's
    assert not report.ok and report.checks[0].name == "vocabulary"
    assert "does not turn openchat_v3.2_super's published prompt into its published ids" in report.checks[0].message


GOOD_JINJA = [
    ("catalogue", JINJA),
    ("if-chain-with-system", "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
     "GPT4 Correct User: {{ message['content'] }}<|end_of_turn|>{% elif message['role'] == 'assistant' %}"
     "GPT4 Correct Assistant: {{ message['content'] }}<|end_of_turn|>{% elif message['role'] == 'system' %}"
     "{{ message['content'] }}<|end_of_turn|>{% endif %}{% endfor %}"
     "{% if add_generation_prompt %}GPT4 Correct Assistant:{% endif %}"),
    ("multi-line-trimmed", "{{- bos_token -}}\n{%- for message in messages -%}\n"
     "  {{- 'GPT4 Correct ' ~ message.role | capitalize ~ ': ' ~ message.content ~ '<|end_of_turn|>' -}}\n"
     "{%- endfor -%}\n{%- if add_generation_prompt -%}\n  {{- 'GPT4 Correct Assistant:' -}}\n{%- endif -%}\n"),
]


@pytest.mark.parametrize("name, jinja", GOOD_JINJA, ids=[c[0] for c in GOOD_JINJA])
def test_correct_jinja_templates_pass(mistral_tok, name, jinja):
    for system in (None, "Be brief."):
        report = run(mistral_tok, jinja_template=jinja, system=system)
        assert report.ok, report.format()


def test_model_option_with_a_vocabulary_lacking_its_tokens():
    """--model forces references whose ids (32000) the vocabulary lacks: no crash, the cause comes first."""
    report = verify_template(str(LLAMA_GGUF), model="openchat_v3.2_super")
    assert report.checks[0].name == "vocabulary" and "'<|end_of_turn|>' as id 32000" in report.checks[0].message
    assert "<id 32000 out of vocabulary>" in report.format()

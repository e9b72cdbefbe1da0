"""llama.cpp's own tokenizer on llama.cpp's vocab files and on the GGUF vocabulary modelpack writes."""

from __future__ import annotations

import jinja2
import pytest

from conftest import TOKENIZERS

pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.llama

from modelpack.llamacpp import load_model, tokenize  # noqa: E402

# Published ids, copied from ../shared/spec/chat-templates.md (openchat-3.5-0106's model card).
OPENCHAT_TEXT = ("GPT4 Correct User: Hello<|end_of_turn|>GPT4 Correct Assistant: Hi<|end_of_turn|>"
                 "GPT4 Correct User: How are you today?<|end_of_turn|>GPT4 Correct Assistant:")
OPENCHAT_IDS = [1, 420, 6316, 28781, 3198, 3123, 1247, 28747, 22557, 32000, 420, 6316, 28781, 3198,
                3123, 21631, 28747, 15359, 32000, 420, 6316, 28781, 3198, 3123, 1247, 28747, 1602, 460,
                368, 3154, 28804, 32000, 420, 6316, 28781, 3198, 3123, 21631, 28747]
OPENCHAT_MESSAGES = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi"},
                     {"role": "user", "content": "How are you today?"}]
MATH_TEXT = "Math Correct User: 10.3 \u2212 7988.8133=<|end_of_turn|>Math Correct Assistant:"
MATH_IDS = [1, 6960, 3198, 3123, 1247, 28747, 28705, 28740, 28734, 28723, 28770, 8798, 28705, 28787,
            28774, 28783, 28783, 28723, 28783, 28740, 28770, 28770, 28746, 32000, 6960, 3198, 3123,
            21631, 28747]


def _vocab_vectors(name: str) -> list[tuple[str, list[int]]]:
    """llama.cpp's tokenizer test vectors: inputs separated by __ggml_vocab_test__ lines, one id line each."""
    texts = (TOKENIZERS / f"{name}.inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    if texts and texts[-1] == "":
        texts.pop()
    lines = (TOKENIZERS / f"{name}.out").read_text(encoding="utf-8").split("\n")
    assert len(lines) >= len(texts) > 0
    return [(text, [int(t) for t in line.split()]) for text, line in zip(texts, lines)]


def test_llamacpp_tokenizes_its_llama_spm_vectors():
    """Proves the harness: llama.cpp through llama-cpp-python reproduces its own test vectors."""
    model = load_model(TOKENIZERS / "ggml-vocab-llama-spm.gguf", vocab_only=True)
    cases = _vocab_vectors("ggml-vocab-llama-spm.gguf")
    wrong = [(text, expected, tokenize(model, text, add_bos=False, special=False))
             for text, expected in cases]
    wrong = [w for w in wrong if w[1] != w[2]]
    assert not wrong, wrong[:3]


@pytest.fixture(scope="module")
def openchat_vocab(golden_checkpoint, tmp_path_factory):
    """llama.cpp loading the vocabulary of our GGUF of the openchat-3.5-0106-shaped checkpoint."""
    from modelpack.convert import convert

    out = tmp_path_factory.mktemp("s1") / "s1-f16.gguf"
    convert(golden_checkpoint("s1"), out, outtype="f16")
    return load_model(out, vocab_only=True)


def test_our_gguf_vocab_reproduces_published_openchat_ids(openchat_vocab):
    assert tokenize(openchat_vocab, OPENCHAT_TEXT, add_bos=True) == OPENCHAT_IDS
    assert tokenize(openchat_vocab, MATH_TEXT, add_bos=True) == MATH_IDS
    # add_bos_token from tokenizer_config.json reached the GGUF: llama.cpp adds BOS on its own.
    assert openchat_vocab.tokenize(OPENCHAT_TEXT.encode(), add_bos=True, special=True)[0] == 1
    assert openchat_vocab.token_bos() == 1 and openchat_vocab.token_eos() == 32000


def test_our_gguf_chat_template_renders_to_published_ids(openchat_vocab):
    """The Jinja template embedded in our GGUF, rendered and tokenized by llama.cpp (parse_special)."""
    template = openchat_vocab.metadata["tokenizer.chat_template"]
    text = jinja2.Environment().from_string(template).render(
        messages=OPENCHAT_MESSAGES, bos_token="<s>", eos_token="<|end_of_turn|>", add_generation_prompt=True)
    assert text == "<s>" + OPENCHAT_TEXT
    assert tokenize(openchat_vocab, text, add_bos=False) == OPENCHAT_IDS

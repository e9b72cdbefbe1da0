"""What modelpack writes runs in llama.cpp and computes what the Hugging Face weights compute.

Tiny synthesized checkpoints (hidden 256 so the K-quants apply to every matrix, 2 layers, the
Mistral vocabulary) of each supported SentencePiece architecture are converted to every output
type; llama.cpp (llama-cpp-python) evaluates a fixed prompt. The F32 file must equal the numpy
reference forward pass of the safetensors weights (tests/reference_forward.py, which shares no code
with modelpack), which is what proves the Q/K permutation, Gemma's norm offset and embedding scale
and the tied output; quantized files must stay close to F32.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import MISTRAL_SPM, make_checkpoint
from reference_forward import forward

pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.llama

from modelpack.llamacpp import load_model, prompt_logits, tokenize  # noqa: E402

SHAPE = ["--hidden", "256", "--layers", "2", "--heads", "4", "--ffn", "512", "--shards", "1",
         "--tokenizer", str(MISTRAL_SPM)]
ARCHS = {
    "llama": ["--arch", "llama", "--kv-heads", "2", "--seed", "11", *SHAPE],
    "mistral": ["--arch", "mistral", "--kv-heads", "1", "--seed", "12", *SHAPE],
    "gemma": ["--arch", "gemma", "--kv-heads", "1", "--seed", "13", *SHAPE],
}
PROMPT = "The capital of France is Paris.<|end_of_turn|> 10.3 - 7988.8133 = ?"

# (how convert is asked, minimum cosine of all prompt logits against the F32 file's).
# Thresholds sit well below the figures measured on these models (printed at the end of the module with -s) so
# that only a real defect (wrong layout, wrong scales) fails them.
OUTPUTS = {
    "f16": ({"outtype": "f16"}, 0.999),
    "bf16": ({"outtype": "bf16"}, 0.999),
    "q8_0": ({"outtype": "q8_0"}, 0.99),
    "Q8_0": ({"quant": "Q8_0"}, 0.99),
    "Q6_K": ({"quant": "Q6_K"}, 0.98),
    "Q5_K_M": ({"quant": "Q5_K_M"}, 0.97),
    "Q5_K_S": ({"quant": "Q5_K_S"}, 0.97),
    "Q5_0": ({"quant": "Q5_0"}, 0.97),
    "Q5_1": ({"quant": "Q5_1"}, 0.97),
    "Q4_K_M": ({"quant": "Q4_K_M"}, 0.95),
    "Q4_K_S": ({"quant": "Q4_K_S"}, 0.95),
    "Q4_0": ({"quant": "Q4_0"}, 0.9),
    "Q4_1": ({"quant": "Q4_1"}, 0.9),
    "Q3_K_M": ({"quant": "Q3_K_M"}, 0.8),
    "Q3_K_S": ({"quant": "Q3_K_S"}, 0.8),
    "Q3_K_L": ({"quant": "Q3_K_L"}, 0.8),
    "Q2_K": ({"quant": "Q2_K"}, 0.75),
}
# Every output type on llama; the types llama-quantize users pick most on the others (time).
COMMON = ["f16", "bf16", "q8_0", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_K_S", "Q4_0"]
CASES = [(arch, out) for arch in sorted(ARCHS) for out in OUTPUTS if arch == "llama" or out in COMMON]
FIGURES: dict[str, dict[str, float]] = {}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """built(arch, output) -> path of our GGUF of that tiny checkpoint (made once per module)."""
    from modelpack.convert import convert

    root = tmp_path_factory.mktemp("llamacpp-models")
    cache: dict[tuple[str, str], object] = {}

    def get(arch: str, output: str = "f32"):
        key = (arch, output)
        if key not in cache:
            ckpt = root / arch
            if not ckpt.exists():
                make_checkpoint(ckpt, *ARCHS[arch])
            kwargs = {"outtype": "f32"} if output == "f32" else OUTPUTS[output][0]
            out = root / f"{arch}-{output}.gguf"
            convert(ckpt, out, **kwargs)
            cache[key] = (ckpt, out)
        return cache[key]

    yield get
    if FIGURES:
        (root / "cosines.json").write_text(json.dumps(FIGURES, indent=1))
        print("\ncosine of logits vs F32:", json.dumps(FIGURES))


def _logits(path, text: str = PROMPT) -> tuple[list[int], np.ndarray]:
    model = load_model(path, n_ctx=64, n_threads=2, logits_all=True, exact=True)
    tokens = tokenize(model, text, add_bos=True)
    logits = prompt_logits(model, tokens)
    model.close()
    return tokens, logits


@pytest.fixture(scope="module")
def f32_logits(built):
    cache: dict[str, tuple[list[int], np.ndarray]] = {}

    def get(arch: str):
        if arch not in cache:
            cache[arch] = _logits(built(arch, "f32")[1])
        return cache[arch]

    return get


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_f32_logits_equal_reference_forward(arch, built, f32_logits):
    ckpt, _ = built(arch, "f32")
    tokens, got = f32_logits(arch)
    assert len(tokens) > 10 and tokens[0] == 1
    expected = forward(ckpt, tokens)
    assert got.shape == expected.shape
    rel = float(np.abs(got - expected).max() / np.abs(expected).max())
    assert rel < 1e-4, f"{arch}: llama.cpp logits differ from the reference by {rel:.2e} (relative)"


@pytest.mark.parametrize("arch,output", CASES)
def test_every_output_type_runs_close_to_f32(arch, output, built, f32_logits):
    ref_tokens, ref = f32_logits(arch)
    tokens, got = _logits(built(arch, output)[1])
    assert tokens == ref_tokens
    assert np.isfinite(got).all()
    cosine = float((got * ref).sum() / np.sqrt((got * got).sum() * (ref * ref).sum()))
    FIGURES.setdefault(arch, {})[output] = round(cosine, 5)
    assert cosine > OUTPUTS[output][1], f"{arch} {output}: cosine {cosine:.4f}"

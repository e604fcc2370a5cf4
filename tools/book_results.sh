#!/usr/bin/env bash
# Regenerate the committed results that chapter 6 reads (book/results/), from a clean checkout.
# Every command below is resumable: kill it and run this script again to continue.
#
#   make results            (or: bash tools/book_results.sh [quick|sweep|minilm ...])
#
# Wall time on a 2-core CPU (this book's build machine), with nothing else running: quick
# ~26 min (Reptile's retraining is 3 of every 5 minutes per seed), sweep ~27 min, minilm
# ~1.5 h. Each run folder holds config.yaml and results.jsonl; every record carries its seed,
# package version, git commit, device and time (see metanb.experiments.runner).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=book/results
SEEDS="0 1 2 3 4"
SWEEP_SEEDS=${SWEEP_SEEDS:-"0 1 2"}

quick() {
  # the quick profile's grid, with the Reptile baseline added and five seeds
  $PY -m metanb run convai2 --profile quick --out $OUT/quick \
    --methods standard lora-ml reptile --seeds $SEEDS --no-progress
}

sweep() {
  # LoRA-ML vs SR as the number of retraining personas T grows (everything else = quick).
  # T=16 is the quick run itself (the link T16 -> ../quick), not trained twice.
  for T in 1 2 4 8 32; do
    $PY -m metanb run convai2 --profile quick --out "$OUT/quick_T_sweep/T$(printf %02d "$T")" \
      --set tasks.retrain="$T" --seeds $SWEEP_SEEDS --no-progress
  done
  ln -sfn ../quick "$OUT/quick_T_sweep/T16"
}

minilm() {
  # a real pretrained encoder (MiniLM-L6, offline from PyPI) on the same generated personas
  $PY -m metanb run convai2 --profile minilm --out $OUT/minilm --no-progress
}

support() {
  # the support-size sweep n = 4..64 (current loop): one retrained base per (method, seed),
  # reused at every n; 24 dialogues per persona so that n = 64 leaves a query set
  $PY tools/support_sweep.py $OUT/quick_support --sizes 4 8 16 32 64 --threads 1 \
    --set data.dialogues_per_persona=24 --set finetune.ranks=[4] --set finetune.head=false
}

controls() {
  # the two generated-data controls of chapter 6: ConvAI2-like random distractors, and the
  # persona text in the input
  $PY -m metanb run convai2 --profile quick --out $OUT/quick_random_distractors --threads 1 \
    --no-progress --set data.distractors=random --set finetune.ranks=[4] --set finetune.head=false
  $PY -m metanb run convai2 --profile quick --out $OUT/quick_include_persona --threads 1 \
    --no-progress --set data.include_persona=true --set finetune.ranks=[4] --set finetune.head=false
}

vision() {
  # chapter 8: the vision grid on scikit-learn's digits (4 methods x 5 seeds, CPU); about 6 min
  # on a quiet 2-core machine (5.9 CPU minutes in one thread; 16 min wall on a shared one)
  $PY -m metanb run vision --profile quick --out $OUT/vision_quick --threads 1 --no-progress
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(quick sweep)
for t in "${targets[@]}"; do
  case "$t" in
    quick) quick; $PY -m metanb results $OUT/quick >/dev/null ;;
    sweep) sweep; $PY -m metanb results $OUT/quick_T_sweep >/dev/null ;;
    minilm) minilm; $PY -m metanb results $OUT/minilm >/dev/null ;;
    support) support; $PY -m metanb results $OUT/quick_support --no-plots >/dev/null ;;
    controls) controls ;;
    vision) vision; $PY -m metanb results $OUT/vision_quick --no-plots >/dev/null ;;
    *) echo "unknown target $t (quick | sweep | minilm | support | controls | vision)" >&2
       exit 2 ;;
  esac
done

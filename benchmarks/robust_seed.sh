#!/usr/bin/env bash
# One training seed of a robust recipe, measured as docs/history.md reports it: erase (resumable), then the
# package's four attacks at their defaults (50 held-out circle prompts) and the utility evaluation.
#   bash benchmarks/robust_seed.sh RECIPE.yaml TAG SEED [OVERLAY.yaml]   # writes runs/TAG-sSEED/, runs/TAG-sSEED-*.json
# OVERLAY (optional) is passed as --config: only the options it changes, deep-merged over RECIPE.
# Each finished step is skipped on a rerun; the erase resumes from its checkpoint.
set -euo pipefail
recipe=$1 tag=$2 seed=$3 overlay=${4:-}
bin=${BIN:-.venv/bin}
out=runs/$tag-s$seed
mkdir -p runs
test -f "$out/erasekit.json" || "$bin/erasekit" erase --method robust --concept circle --recipe "$recipe" \
  ${overlay:+--config "$overlay"} --seed "$seed" -o "$out" --json > "$out.erase.json"
# ATTACK_SEEDS="0 1" also attacks another draw of held-out prompts (--seed 1), into $out-ATTACK-a1.json.
for attack in ${ATTACKS:-inversion soft token ring-a-bell}; do
  for a in ${ATTACK_SEEDS:-0}; do
    name=$attack; [ "$a" = 0 ] || name=$attack-a$a
    test -s "$out-$name.json" || { "$bin/erasekit" attack --artifact "$out" --concept circle --attack "$attack" \
      --seed "$a" --json > "$out-$name.tmp" && mv "$out-$name.tmp" "$out-$name.json"; }
  done
done
test -s "$out-eval.json" || { "$bin/erasekit" evaluate --artifact "$out" --concept circle --attacks none -o "$out-eval" \
  --json > "$out-eval.tmp" && mv "$out-eval.tmp" "$out-eval.json"; }

#!/usr/bin/env bash
# The package's attacks past their defaults on one robust run (docs/history.md, "past the defaults"): wider soft
# prefixes, more inverted tokens, restarts; attack seed 2, a draw of 50 held-out circle prompts that no recipe was
# tuned on.
#   bash benchmarks/robust_wide.sh runs/TAG-sSEED        # writes runs/TAG-sSEED-NAME.json, NAME as below
# Then: python benchmarks/robust_seeds_table.py --extra soft-k5 --extra soft-k8 --extra inversion-k3 ... runs/TAG-s*
# WIDE="soft-k8 inversion-k3" runs a subset. Each finished attack is skipped on a rerun.
set -euo pipefail
run=$1
bin=${BIN:-.venv/bin}
declare -A settings=(
  [soft-k5]="--attack soft --set soft.k=5"
  [soft-k8]="--attack soft --set soft.k=8"
  [inversion-k2]="--attack inversion --set inversion.k=2"
  [inversion-k3]="--attack inversion --set inversion.k=3"
  [inversion-r4]="--attack inversion --set restarts=4"
)
for name in ${WIDE:-soft-k8 inversion-k3 soft-k5 inversion-k2 inversion-r4}; do
  test -s "$run-$name.json" && continue
  # shellcheck disable=SC2086  # the settings are words
  "$bin/erasekit" attack --artifact "$run" --concept circle --seed 2 ${settings[$name]} --json > "$run-$name.tmp"
  mv "$run-$name.tmp" "$run-$name.json"
done

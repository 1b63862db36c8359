#!/usr/bin/env bash
# Which code paths each fault reaches: one scenario per fault (or log setting) on a quiet base
# (200 orders at 10/s, two instances of deliver, bake and status, no ambiguous produces, no
# seams), each run over a few seeds; prints, per fault, the code probes that fired in any of its
# runs and in no run of the base. `scripts/probes-per-fault.sh [SEEDS]` (default 0..3).
set -euo pipefail
seeds=${1:-0..3}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
base='orders 200
rate 10
ambiguous 0
buggify off
instances deliver 2
instances bake 2
instances status 2'
faults=(
  "base|"
  "crash|at 5s crash bake for 10s"
  "crash lose-disk|at 5s crash status for 10s lose-disk"
  "power-loss|at 5s power-loss deliver for 10s losing 3s"
  "slow disk|at 5s slow disk status 200ms for 30s"
  "busy disk|at 5s busy disk deliver 0.5 for 30s"
  "stop|at 5s stop deliver for 10s"
  "pause|at 5s pause bake for 60s"
  "clog|at 5s clog status for 30s"
  "cut broker|at 5s cut broker both for 30s"
  "cut customers|at 5s cut customers out for 20s"
  "redeliver|at 5s redeliver merge"
  "reorder|at 5s reorder for 30s"
  "hold|at 5s hold pizza-ordered from deliver for 60s"
  "slow broker|at 5s slow broker 100ms for 30s"
  "loss|at 5s loss 0.2 for 20s"
  "duplicate|at 5s duplicate 0.5 for 30s"
  "refuse-writes|at 5s refuse-writes pizza-baked for 120s"
  "max-bytes|malformed 4
at 0s max-bytes pizza-dlq 64 for 60s"
  "leader-change|at 5s leader-change for 5s"
  "scale-up|at 5s scale-up deliver"
  "scale-down|at 5s scale-down bake"
  "rolling-restart|at 5s rolling-restart merge every 2s"
  "recreate all|at 10s recreate all"
  "recreate one|at 10s recreate pizza-status"
  "hostile|hostile 0.05"
  "undecodable|undecodable 0.05"
  "transactions|transactions 0.05"
  "gaps|gaps 0.05"
  "codecs|codecs on"
  "errors|errors 0.005"
)
probes() { # the probes that fired in at least one run of a sweep's output
  awk '/^code probes/ {on=1; next} on && /^  [a-z]/ && $2 > 0 {print $1} on && !/^  / {on=0}' "$1" | sort -u
}
for f in "${faults[@]}"; do
  name=${f%%|*}
  file="$work/${name// /-}.scn"
  printf '%s\n%s\n' "$base" "${f#*|}" > "$file"
  (cd "$root" && cargo sim --scenario "$file" --seeds "$seeds" --jobs 2) > "$work/${name// /-}.out" 2>&1 || true
done
probes "$work/base.out" > "$work/base.probes"
printf '| fault | code paths it reaches beyond the base |\n|---|---|\n'
for f in "${faults[@]:1}"; do
  name=${f%%|*}
  extra=$(probes "$work/${name// /-}.out" | comm -23 - "$work/base.probes" | sed 's/.*/`&`/' | paste -sd, - | sed 's/,/, /g')
  failed=$(grep -c '^failed:' "$work/${name// /-}.out" || true)
  note=""
  [ "$failed" != 0 ] && note=" ($failed runs failed: see $name)"
  printf '| `%s` | %s%s |\n' "$name" "${extra:-none}" "$note"
done
printf '\nbase (no fault): %s\n' "$(sed 's/.*/`&`/' "$work/base.probes" | paste -sd, - | sed 's/,/, /g')"

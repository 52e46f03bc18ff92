#!/usr/bin/env bash
# Reproduces the per-family config table of docs/experiments/index.md: each line is one training run with a family config
# from configs/, as measured on a 2-core machine running other jobs (wall times there: 5-14 min per run). Results: each run directory's summary.json and evaluations.csv.
#
#   bash benchmarks/configs.sh [tmaze|popgym|minigrid|visual|memory_maze|all]   (default: all; memory_maze: 54 min)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${RUNS_DIR:-runs/configs}
what=${1:-all}
case $what in
  tmaze|popgym|minigrid|visual|memory_maze|all) ;;
  *) echo "error: unknown block '$what'; choose one of tmaze, popgym, minigrid, visual, memory_maze, all" >&2; exit 2 ;;
esac

# ur as measured: b_r = -b_f (refine_bias=neg_forget), its default when these runs were made; it defaults to b_r = 0
# (zero) since (docs/equations.md, "The refine gate's bias").
UR=(--core ur --set policy_kwargs.core_kwargs.refine_bias=neg_forget)

train() {  # train NAME ARGS...: one run into $OUT/NAME; a finished run is skipped, an interrupted one resumed
  local name=$1; shift
  if [[ ! -d $OUT/$name ]]; then
    $PY run_rl.py train --no-progress --run-dir "$OUT/$name" "$@"
  elif ! grep -q '"status": "finished"' "$OUT/$name/summary.json" 2>/dev/null; then
    $PY run_rl.py resume --no-progress "$OUT/$name"
  fi
}

if [[ $what == tmaze || $what == all ]]; then
  for seed in 0 1 2; do train "tmaze-ur-s$seed" "${UR[@]}" --seed "$seed"; done  # the default job, with ur as measured
  for seed in 0 1 2; do train "tmaze100-chrono-s$seed" --config tmaze_long --seed "$seed"; done
fi
if [[ $what == popgym || $what == all ]]; then
  train popgym-ur-s0 "${UR[@]}" --config popgym
fi
if [[ $what == minigrid || $what == all ]]; then
  for seed in 0 1 2; do train "minigrid-s7-ur-s$seed" "${UR[@]}" --config minigrid --seed "$seed"; done
  train minigrid-s7-lstm-s0 --core lstm --config minigrid
  train minigrid-s11-ur-s0 "${UR[@]}" --config minigrid --env MiniGrid-MemoryS11-v0 --timesteps 600000
fi
if [[ $what == visual || $what == all ]]; then
  # the published tasks with the config's curriculum (core chrono), stopped after two evaluations at >= 0.95 in a row
  for seed in 0 1 2; do train "visual-match-chrono-s$seed" --config visual_match --seed "$seed" --set eval.stop_success=0.95; done
  for seed in 0 1 2; do
    train "active-visual-match-chrono-s$seed" --config visual_match --env urgate/ActiveVisualMatch-v0 --seed "$seed" \
        --set eval.stop_success=0.95 --timesteps 10000000
  done
fi
if [[ $what == memory_maze || $what == all ]]; then  # needs the memory-maze extra; ~7 GB of memory with 4 envs
  train memory-maze-9x9-ur-s0 "${UR[@]}" --config memory_maze --timesteps 100000 --set n_envs=4 --set eval.n_envs=1 \
      --set eval.n_episodes=2 --set eval.freq=1000000 --set checkpoint_freq=8192
fi

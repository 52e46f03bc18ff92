#!/usr/bin/env bash
# Reproduces the measured results of docs/experiments/: memory frontiers and learning curves per core.
# Each block is one restartable experiment: rerunning a line skips finished runs and resumes unfinished ones.
# Wall times with 2 workers on the shared 2-core development machine: tmaze 25 min (36 runs), visual 26 min for
# the 12 Passive runs (the 12 Active ones finished in a later rerun: 8 min of resumed runs), minigrid 12 min per task (6 runs each), investigate 12 min (6 runs).
# Figures and tables: docs/results/ (made with `run_rl.py plot EXP --out docs/results/NAME --dpi 100`).
#
#   bash benchmarks/experiments.sh [tmaze|visual|minigrid|investigate|frontier|frontier_extra|memory_maze|visual_diagnosis|
#   minigrid_recipe|minigrid_cores|visual_recipe|ur_default|long_memory|visual_curriculum|visual_active|grid_units|all]
#   (default: all but the frontier, memory_maze, visual_diagnosis, minigrid_recipe, minigrid_cores, visual_recipe,
#   ur_default, long_memory, visual_curriculum, visual_active and grid_units blocks)
#
# `ur` defaults to refine_bias=zero (b_r = 0) since block 11 measured it against b_r = -b_f (neg_forget). Every ur
# result of blocks 1-4 and 7-9 was made with neg_forget, the default then: run as written they now train ur with
# b_r = 0; add `--set policy_kwargs.core_kwargs.refine_bias=neg_forget` to a ur-only experiment to repeat them.
# `urgru` followed (block 11's urgru runs and the copy task): its results in blocks 5 and 10 (and the frontier) were
# made with neg_forget; repeat them with the same --set on a urgru-only experiment.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-python}
OUT=${EXPERIMENTS_DIR:-experiments}
WORKERS=${WORKERS:-2}
what=${1:-all}
case $what in
  tmaze|visual|minigrid|investigate|frontier|frontier_extra|memory_maze|visual_diagnosis|minigrid_recipe|minigrid_cores|visual_recipe|ur_default|long_memory|visual_curriculum|visual_active|grid_units|all) ;;
  *) echo "error: unknown block '$what'; choose one of tmaze, visual, minigrid, investigate, frontier, frontier_extra, memory_maze, visual_diagnosis, minigrid_recipe, minigrid_cores, visual_recipe, ur_default, long_memory, visual_curriculum, visual_active, grid_units, all" >&2; exit 2 ;;
esac

# PPO settings, given explicitly so that an experiment does not move when configs/ is retuned (every run's
# resolved config is in its run directory's config.yaml). Evaluation samples actions (eval.deterministic=false): a
# greedy policy that has not learned the cue splits its mass between the two turns and can wait at the junction
# forever, scoring 0 instead of the memoryless 0.5.
PPO=(--set n_envs=8 --set ppo.n_steps=128 --set ppo.batch_size=256 --set ppo.n_epochs=4 --set ppo.learning_rate=1e-3
     --set ppo.gamma=0.99 --set ppo.gae_lambda=0.95 --set ppo.ent_coef=0.01 --set policy_kwargs.lstm_hidden_size=64
     --set eval.freq=10000 --set eval.n_episodes=50 --set eval.deterministic=false --set checkpoint_freq=25000)
CONSTANT_LR=(--set ppo.lr_schedule=constant --set ppo.target_kl=null)
# The Visual Match runs resolved configs/visual_match.yaml of commit 535cef7, which anneals the learning rate.
LINEAR_LR=(--set ppo.lr_schedule=linear --set ppo.target_kl=0.02)

if [[ $what == tmaze || $what == all ]]; then
  # 1. T-maze memory frontier: 3 cores x 3 seeds x 4 lengths, 100k steps per run.
  $PY run_rl.py compare --cores lstm,chrono,ur --seeds 3 --env urgate/TMaze-v0 --config tmaze_long --grid length=5,10,20,40 \
      --timesteps 100000 "${PPO[@]}" "${CONSTANT_LR[@]}" --workers "$WORKERS" --exp-dir "$OUT/tmaze_frontier"
  $PY run_rl.py plot "$OUT/tmaze_frontier"
fi

if [[ $what == visual || $what == all ]]; then
  # 2. Passive and Active Visual Match at two distractor lengths: 3 cores x 2 seeds, 80k steps per run.
  $PY run_rl.py compare --cores lstm,chrono,ur --seeds 2 \
      --env urgate/PassiveVisualMatch-v0,urgate/ActiveVisualMatch-v0 --grid distractor_steps=15,60 \
      --timesteps 80000 "${PPO[@]}" "${LINEAR_LR[@]}" --set curriculum.start=null --workers "$WORKERS" \
      --exp-dir "$OUT/visual_match"
  $PY run_rl.py plot "$OUT/visual_match"
fi

if [[ $what == minigrid || $what == all ]]; then
  # 3. MiniGrid Memory S7 and the harder S11: 3 cores x 2 seeds, 100k steps per run, with configs/minigrid.yaml's
  #    learning rate and width (commit 535cef7). S13Random was not run (budget).
  $PY run_rl.py compare --cores lstm,chrono,ur --seeds 2 --env MiniGrid-MemoryS7-v0,MiniGrid-MemoryS11-v0 --timesteps 100000 \
      "${PPO[@]}" "${LINEAR_LR[@]}" --set ppo.learning_rate=5e-4 --set policy_kwargs.lstm_hidden_size=128 \
      --workers "$WORKERS" --exp-dir "$OUT/minigrid_memory"
  $PY run_rl.py plot "$OUT/minigrid_memory"
fi

if [[ $what == investigate || $what == all ]]; then
  # 4. Why UR does not beat chrono at length 40 with H = 64: UGI caps its initial timescales near H (and
  #    b_r = -b_f halves that), chrono starts at up to t_max = 500. H = 256 lets UGI reach ~128 steps.
  $PY run_rl.py compare --cores ur,chrono --seeds 3 --env urgate/TMaze-v0 --config tmaze_long --grid length=40 \
      --grid policy_kwargs.lstm_hidden_size=256 --timesteps 100000 "${PPO[@]}" "${CONSTANT_LR[@]}" --workers "$WORKERS" \
      --exp-dir "$OUT/tmaze_hidden256"
  $PY run_rl.py plot "$OUT/tmaze_hidden256"
fi

if [[ $what == frontier ]]; then
  # 5. The memory frontier with configs/tmaze_long.yaml (auto rollout sizes from the length, 64 envs,
  #    observation normalisation, shared LSTM; every run evaluates 100 greedy episodes every 100k steps) at Ni et
  #    al.'s budgets, one restartable experiment per length (chrono at its default t_max 500; ur with b_r = -b_f,
  #    refine_bias=neg_forget, its default when measured: the committed docs/results/tmaze_frontier_long/length*
  #    hold lstm, chrono and that ur in one experiment; ur with b_r = 0 is block 6's). Not part of `all`. Measured
  #    with one worker per core at a quiet hour: length 50 2 min per run, 100 2-4 min, 250 3-6 min, 500 4-7 min,
  #    1000 13-25 min (evaluation episodes of a policy that waits at the junction last the whole 2 * (length + 1)
  #    step limit, so evaluating costs up to a third of a run).
  for spec in 50:1000000 100:2000000 250:4000000 500:4000000 1000:8000000; do
    length=${spec%%:*} budget=${spec##*:}
    $PY run_rl.py compare --cores lstm,chrono --seeds 3 --env urgate/TMaze-v0 --config tmaze_long --grid length="$length" \
        --timesteps "$budget" --workers "$WORKERS" --exp-dir "$OUT/tmaze_frontier_long/length$length"
    $PY run_rl.py plot "$OUT/tmaze_frontier_long/length$length"
    $PY run_rl.py compare --cores ur --seeds 3 --env urgate/TMaze-v0 --config tmaze_long --grid length="$length" \
        --set policy_kwargs.core_kwargs.refine_bias=neg_forget --timesteps "$budget" --workers "$WORKERS" \
        --exp-dir "$OUT/tmaze_frontier_long/length${length}_ur_neg_forget"
    $PY run_rl.py plot "$OUT/tmaze_frontier_long/length${length}_ur_neg_forget"
  done
fi

if [[ $what == frontier_extra ]]; then
  # 6. Questions beyond the three main cores, same settings and budgets as block 5:
  #    (a) the refine-bias convention: ur with b_r = 0 (Gu's later code) instead of b_r = -b_f;
  #    (b) the other cores of the paper and the GRU family where the budget allows (lengths 50 and 100);
  #    (c) what would move chrono past 250 (benchmarks/frontier.py --gates): at its default t_max 500, 1 % of its
  #        gates start with a timescale >= 500 (50 % >= 250), and 4M steps at 500 are 61 rollouts of 64 x 1024
  #        steps, fewer updates than it needed at 250 (52-83 rollouts). t_max = 2 x length starts half of them
  #        beyond the length; 32 envs make twice the updates within the same budget.
  for spec in 100:2000000 250:4000000 500:4000000; do
    length=${spec%%:*} budget=${spec##*:}
    $PY run_rl.py compare --cores ur --seeds 3 --env urgate/TMaze-v0 --config tmaze_long --grid length="$length" \
        --set policy_kwargs.core_kwargs.refine_bias=zero --timesteps "$budget" --workers "$WORKERS" \
        --exp-dir "$OUT/tmaze_frontier_long/length${length}_ur_refine_bias_zero"
    $PY run_rl.py plot "$OUT/tmaze_frontier_long/length${length}_ur_refine_bias_zero"
  done
  for spec in 50:1000000 100:2000000; do
    length=${spec%%:*} budget=${spec##*:}
    $PY run_rl.py compare --cores u,r,gru,urgru --seeds 3 --env urgate/TMaze-v0 --config tmaze_long --grid length="$length" \
        --timesteps "$budget" --workers "$WORKERS" --exp-dir "$OUT/tmaze_frontier_long/length${length}_more_cores"
    $PY run_rl.py plot "$OUT/tmaze_frontier_long/length${length}_more_cores"
  done
  $PY run_rl.py compare --cores chrono --seeds 3 --env urgate/TMaze-v0 --config tmaze_long --grid length=500 \
      --set policy_kwargs.core_kwargs.t_max=1000 --timesteps 4000000 --workers "$WORKERS" \
      --exp-dir "$OUT/tmaze_frontier_long/length500_chrono_tmax1000"
  $PY run_rl.py plot "$OUT/tmaze_frontier_long/length500_chrono_tmax1000"
  $PY run_rl.py compare --cores chrono --seeds 3 --env urgate/TMaze-v0 --config tmaze_long --grid length=500 \
      --set n_envs=32 --timesteps 4000000 --workers "$WORKERS" --exp-dir "$OUT/tmaze_frontier_long/length500_chrono_32envs"
  $PY run_rl.py plot "$OUT/tmaze_frontier_long/length500_chrono_32envs"
fi

if [[ $what == memory_maze ]]; then
  # 7. The long Memory Maze run (needs the memory-maze extra; ~6.5 GB of memory): 8 subprocess envs, 750k
  #    steps, 8 greedy evaluation episodes every 150k. Measured: 85 min with everything pinned to one core
  #    (`taskset -c 0 bash benchmarks/experiments.sh memory_maze`); docs/results/memory_maze_long/.
  $PY run_rl.py compare --cores ur --seeds 1 --env urgate/MemoryMaze-9x9-v0 --config memory_maze --timesteps 750000 \
      --set n_envs=8 --set eval.n_envs=1 --set eval.n_episodes=8 --set eval.freq=150000 --set checkpoint_freq=25000 \
      --workers 1 --exp-dir "$OUT/memory_maze_long"
  $PY run_rl.py plot "$OUT/memory_maze_long"
fi

if [[ $what == visual_diagnosis ]]; then
  # 8. What makes Visual Match's choice slow to learn without a delay (cue 1 step, no distractor phase), ur seed 0,
  #    200k steps per run, 4 checkpoints kept for benchmarks/visual_match_diagnosis.py: configs/visual_match.yaml
  #    as shipped, with shared_lstm (the T-maze's recipe), with 64 envs and whole episodes per rollout, with separate
  #    extractors for actor and critic, and with a larger entropy bonus.
  #    Measured one run at a time on one core: docs/results/visual_match_diagnosis/.
  VM=(--cores ur --seeds 1 --env urgate/PassiveVisualMatch-v0 --config visual_match --set env_kwargs.distractor_steps=0
      --timesteps 200000 --set keep_checkpoints=4 --set curriculum.start=null --workers 1)
  $PY run_rl.py compare "${VM[@]}" --exp-dir "$OUT/vm_d0_baseline"
  $PY run_rl.py compare "${VM[@]}" --set policy_kwargs.shared_lstm=true --set policy_kwargs.enable_critic_lstm=false \
      --exp-dir "$OUT/vm_d0_shared_lstm"
  $PY run_rl.py compare "${VM[@]}" --set n_envs=64 --set ppo.n_steps=auto --set ppo.batch_size=auto \
      --exp-dir "$OUT/vm_d0_64envs"
  #    The same with a features extractor of the critic's own: the actor's extractor then gets no value gradient.
  $PY run_rl.py compare "${VM[@]}" --set n_envs=64 --set ppo.n_steps=auto --set ppo.batch_size=auto \
      --set policy_kwargs.share_features_extractor=false --exp-dir "$OUT/vm_d0_64envs_sep_extractor"
  $PY run_rl.py compare "${VM[@]}" --set n_envs=64 --set ppo.n_steps=auto --set ppo.batch_size=auto \
      --set ppo.ent_coef=0.1 --exp-dir "$OUT/vm_d0_64envs_ent01"
fi

if [[ $what == minigrid_recipe ]]; then
  # 9. configs/minigrid.yaml with whole episodes per rollout (ppo.n_steps: auto, batch_size: auto), stopping once
  #    two evaluations in a row (100 greedy episodes each) reach 0.95: S7, then the issue's target S13Random (and
  #    S17Random) at 20M steps per run. Measured so far: S7 ur seed 0 solved at 100k steps (stopped at 152k), and
  #    the start of S13Random ur seed 0 (docs/experiments/minigrid.md); the rest is the plan, restartable as is.
  MG=(--config minigrid --set eval.freq=100000 --set eval.stop_success=0.95 --workers "$WORKERS")
  $PY run_rl.py compare --cores ur --seeds 1 --env MiniGrid-MemoryS7-v0 --config minigrid --set eval.stop_success=0.95 \
      --workers "$WORKERS" --exp-dir "$OUT/mg_s7_auto"
  $PY run_rl.py compare --cores ur --seeds 3 --env MiniGrid-MemoryS13Random-v0 --timesteps 20000000 "${MG[@]}" \
      --exp-dir "$OUT/mg_s13random"
  $PY run_rl.py compare --cores ur --seeds 3 --env MiniGrid-MemoryS17Random-v0 --timesteps 20000000 "${MG[@]}" \
      --exp-dir "$OUT/mg_s17random"
  $PY run_rl.py compare --cores lstm,chrono,ur,urgru --seeds 3 --env MiniGrid-MemoryS13Random-v0 \
      --timesteps 20000000 "${MG[@]}" --exp-dir "$OUT/mg_s13random"  # adds the other cores to the same experiment
  $PY run_rl.py compare --cores ur --seeds 3 --env MiniGrid-MemoryS13Random-v0 --timesteps 20000000 "${MG[@]}" \
      --set policy_kwargs.core_kwargs.refine_bias=zero --exp-dir "$OUT/mg_s13random_ur_refine_bias_zero"
  $PY run_rl.py plot "$OUT/mg_s13random"
fi

if [[ $what == minigrid_cores ]]; then
  # 10. MiniGrid Memory at full difficulty with configs/minigrid.yaml's recipe (64 envs, 64-step rollouts, shared
  #     core trained by both losses, the one-hot extractor; given as flags so that the experiment does not move with
  #     the config), stopping once two evaluations of 100 greedy episodes in a row reach 0.95, 10M steps at most:
  #     ur on S13Random and S17Random with 3 seeds, then lstm, chrono, ur with refine_bias=zero and urgru on
  #     S13Random. ur's refine-bias convention is given explicitly (neg_forget or zero). docs/results/minigrid_cores/.
  MGR=(--config minigrid --set n_envs=64 --set ppo.n_steps=64 --set ppo.batch_size=512 --set policy_kwargs.shared_lstm=true
       --set policy_kwargs.enable_critic_lstm=false --set policy_kwargs.shared_lstm_value_grad=true
       --set policy_kwargs.features_extractor_class=SymbolicGridBagExtractor --set eval.freq=100000
       --set eval.stop_success=0.95 --timesteps 10000000 --workers "$WORKERS")
  NEG=(--set policy_kwargs.core_kwargs.refine_bias=neg_forget)
  ZERO=(--set policy_kwargs.core_kwargs.refine_bias=zero)
  S13=MiniGrid-MemoryS13Random-v0 S17=MiniGrid-MemoryS17Random-v0
  $PY run_rl.py compare --cores ur --seeds 3 --env $S13 "${MGR[@]}" "${NEG[@]}" --exp-dir "$OUT/mg_s13random_ur"
  $PY run_rl.py compare --cores ur --seeds 3 --env $S17 "${MGR[@]}" "${NEG[@]}" --exp-dir "$OUT/mg_s17random_ur"
  $PY run_rl.py compare --cores ur --seeds 3 --env $S13 "${MGR[@]}" "${ZERO[@]}" --exp-dir "$OUT/mg_s13random_ur_zero"
  $PY run_rl.py compare --cores lstm,chrono,urgru --seeds 3 --env $S13 "${MGR[@]}" --exp-dir "$OUT/mg_s13random_others"
  for exp in mg_s13random_ur mg_s17random_ur mg_s13random_ur_zero mg_s13random_others; do
    $PY run_rl.py plot "$OUT/$exp"
  done
fi

if [[ $what == visual_recipe ]]; then
  # 11. Passive Visual Match with the grid recipe (the MiniGrid one: 64 envs, whole episodes per rollout, one core
  #     trained by both losses, the one-hot extractor), ur seed 0: no delay without and with reward normalisation,
  #     then the env's defaults (cue 15, distractor 90) and distractor 30. docs/results/visual_match_recipe/.
  VR=(--config visual_match --set n_envs=64 --set ppo.n_steps=auto --set ppo.batch_size=auto
      --set policy_kwargs.shared_lstm=true --set policy_kwargs.enable_critic_lstm=false
      --set policy_kwargs.shared_lstm_value_grad=true --set policy_kwargs.features_extractor_class=SymbolicGridBagExtractor
      --set policy_kwargs.core_kwargs.refine_bias=neg_forget --set curriculum.start=null
      --set policy_kwargs.features_extractor_kwargs.presence=false --workers "$WORKERS")
  NORM=(--set ppo.normalize=true --set "ppo.normalize_kwargs={norm_obs: false}")
  VM=urgate/PassiveVisualMatch-v0
  $PY run_rl.py compare --cores ur --seeds 1 --env $VM "${VR[@]}" --grid distractor_steps=0 --timesteps 250000 \
      --set eval.freq=50000 --exp-dir "$OUT/pvm_d0"
  $PY run_rl.py compare --cores ur --seeds 1 --env $VM "${VR[@]}" "${NORM[@]}" --grid distractor_steps=0 \
      --timesteps 250000 --set eval.freq=50000 --exp-dir "$OUT/pvm_d0_norm"
  $PY run_rl.py compare --cores ur --seeds 1 --env $VM "${VR[@]}" "${NORM[@]}" --set env_kwargs.cue_steps=15 \
      --grid distractor_steps=90,30 --timesteps 10000000 --set eval.freq=100000 --set eval.stop_success=0.95 \
      --exp-dir "$OUT/pvm_delay"
fi

if [[ $what == ur_default ]]; then
  # 11. The refine-bias convention of ur with 5 seeds: seeds 3 and 4 beside the frontier's 0-2 (same config,
  #    configs/tmaze_long.yaml, and budget), both conventions; docs/results/ur_refine_bias/. Not part of `all`.
  #    Measured one run at a time on one core (taskset -c 1, WORKERS=1).
  for spec in 100:2000000 250:4000000; do
    length=${spec%%:*} budget=${spec##*:}
    $PY run_rl.py compare --cores ur --seeds 3,4 --env urgate/TMaze-v0 --config tmaze_long --grid length="$length" \
        --set policy_kwargs.core_kwargs.refine_bias=neg_forget --timesteps "$budget" --workers "$WORKERS" \
        --exp-dir "$OUT/tmaze_frontier_long_ur_default/length${length}_ur_neg_forget_seeds34"
    $PY run_rl.py compare --cores ur --seeds 3,4 --env urgate/TMaze-v0 --config tmaze_long --grid length="$length" \
        --set policy_kwargs.core_kwargs.refine_bias=zero --timesteps "$budget" --workers "$WORKERS" \
        --exp-dir "$OUT/tmaze_frontier_long_ur_default/length${length}_ur_refine_bias_zero_seeds34"
  done
  $PY benchmarks/copy_task.py --cores ur:refine_bias=neg_forget,ur:refine_bias=zero --seeds 2,3,4 --steps 1000 \
      --out docs/results/ur_refine_bias/copy_task --work-dir "$OUT/copy_task_ur_default"
  # urgru at length 100: b_r = 0 on seeds 0-4, b_r = -b_f on seeds 3-4 (its seeds 0-2 are the frontier's)
  $PY run_rl.py compare --cores urgru --seeds 3 --env urgate/TMaze-v0 --config tmaze_long --grid length=100 \
      --set policy_kwargs.core_kwargs.refine_bias=zero --timesteps 2000000 --workers "$WORKERS" \
      --exp-dir "$OUT/urgru_refine_bias/length100_zero"
  for rb in zero neg_forget; do
    $PY run_rl.py compare --cores urgru --seeds 3,4 --env urgate/TMaze-v0 --config tmaze_long --grid length=100 \
        --set policy_kwargs.core_kwargs.refine_bias=$rb --timesteps 2000000 --workers "$WORKERS" \
        --exp-dir "$OUT/urgru_refine_bias/length100_${rb}_seeds34"
  done
  # urgru at length 250, seeds 0-4 under each convention (the frontier has no urgru at 250), and the copy task
  for rb in zero neg_forget; do
    $PY run_rl.py compare --cores urgru --seeds 5 --env urgate/TMaze-v0 --config tmaze_long --grid length=250 \
        --set policy_kwargs.core_kwargs.refine_bias=$rb --timesteps 4000000 --workers "$WORKERS" \
        --exp-dir "$OUT/urgru_refine_bias/length250_$rb"
  done
  $PY benchmarks/copy_task.py --cores urgru:refine_bias=neg_forget,urgru:refine_bias=zero --seeds 0,1,2 --steps 1000 \
      --out docs/results/ur_refine_bias/copy_task_urgru --work-dir "$OUT/copy_task_urgru"
fi

if [[ $what == long_memory ]]; then
  # 12. T-maze past 250 (docs/results/tmaze_long_memory/), chrono with configs/tmaze_long.yaml, one change at a time
  #     against the frontier's length-500 runs (64 envs, 4M steps: 0/3): the previous action as an input (4M); 32
  #     envs, twice the updates per env step, with 8M steps (3 seeds); a corridor curriculum (curriculum.start) at 500
  #     within 4M; length 1000 with 32 envs and the curriculum, 16M steps. Measured one run at a time per core.
  T=(--cores chrono --env urgate/TMaze-v0 --config tmaze_long --workers "$WORKERS")
  $PY run_rl.py compare "${T[@]}" --seeds 1 --grid length=500 --set previous_action=true --timesteps 4000000 \
      --exp-dir "$OUT/t500/prevact"
  $PY run_rl.py compare "${T[@]}" --seeds 3 --grid length=500 --set n_envs=32 --timesteps 8000000 \
      --exp-dir "$OUT/t500/envs32_8M"
  $PY run_rl.py compare "${T[@]}" --seeds 1 --grid length=500 --set curriculum.start=50 --set curriculum.step=50 \
      --set curriculum.success=0.9 --timesteps 4000000 --exp-dir "$OUT/t500/curriculum_4M"
  $PY run_rl.py compare "${T[@]}" --seeds 1 --grid length=1000 --set n_envs=32 --set curriculum.start=100 \
      --set curriculum.step=100 --set curriculum.success=0.9 --set eval.stop_success=0.95 --timesteps 16000000 \
      --exp-dir "$OUT/t1000/envs32_curriculum"
  C=(--set curriculum.start=50 --set curriculum.step=50 --set curriculum.success=0.9)
  $PY run_rl.py compare --cores ur --seeds 3 --env urgate/TMaze-v0 --config tmaze_long --grid length=500 "${C[@]}" \
      --timesteps 4000000 --workers "$WORKERS" --exp-dir "$OUT/t500/curriculum_4M_ur"
  $PY run_rl.py compare --cores lstm --seeds 1 --env urgate/TMaze-v0 --config tmaze_long --grid length=500 "${C[@]}" \
      --timesteps 4000000 --workers "$WORKERS" --exp-dir "$OUT/t500/curriculum_4M_lstm"
  $PY run_rl.py compare --cores chrono,ur --seeds 1 --env urgate/TMaze-v0 --config tmaze_long --grid length=100 "${C[@]}" \
      --timesteps 2000000 --workers "$WORKERS" --exp-dir "$OUT/t100/curriculum_2M"
  $PY run_rl.py compare --cores ur --seeds 3 --env urgate/TMaze-v0 --config tmaze_long --grid length=1000 --set n_envs=32 \
      --set curriculum.start=100 --set curriculum.step=100 --set curriculum.success=0.9 --set eval.stop_success=0.95 \
      --timesteps 16000000 --workers "$WORKERS" --exp-dir "$OUT/t1000/envs32_curriculum_ur"
  for exp in t500/prevact t500/envs32_8M t500/curriculum_4M t1000/envs32_curriculum t500/curriculum_4M_ur \
      t500/curriculum_4M_lstm t100/curriculum_2M t1000/envs32_curriculum_ur; do
    $PY run_rl.py plot "$OUT/$exp"
  done
fi

if [[ $what == visual_curriculum ]]; then
  # 13. Visual Match at the published delay (cue 15, distractor 90) with a delay curriculum: training episodes start
  #     without a distractor phase, which grows by 10 steps whenever 80 % of the last 256 training episodes begun at
  #     the current delay succeed; every evaluation plays the task itself. configs/visual_match.yaml's recipe then;
  #     docs/results/visual_curriculum/. Measured one run at a time per core. These runs counted the curriculum's
  #     length as the distractor phase alone and started it at 0; it now counts the steps before the choice room
  #     (cue + distractor), so start=15 plays the same episodes. The extractor had no presence features then.
  VM=(--config visual_match --set env_kwargs.cue_steps=15 --set env_kwargs.distractor_steps=90
      --set curriculum.start=15 --set curriculum.step=10 --set curriculum.success=0.8 --set eval.freq=100000
      --set policy_kwargs.features_extractor_kwargs.presence=false --set eval.stop_success=0.95 --workers "$WORKERS")
  PVM=urgate/PassiveVisualMatch-v0 AVM=urgate/ActiveVisualMatch-v0
  $PY run_rl.py compare --cores ur --seeds 1 --env $PVM "${VM[@]}" --timesteps 10000000 --exp-dir "$OUT/pvm_curriculum"
  $PY run_rl.py compare --cores chrono --seeds 1 --env $PVM "${VM[@]}" --timesteps 10000000 \
      --exp-dir "$OUT/pvm_curriculum_chrono"
  $PY run_rl.py compare --cores chrono --seeds 1,2 --env $PVM "${VM[@]}" --timesteps 6000000 \
      --exp-dir "$OUT/pvm_d90_curriculum"
  $PY run_rl.py compare --cores ur --seeds 1,2 --env $PVM "${VM[@]}" --timesteps 6000000 \
      --exp-dir "$OUT/pvm_d90_curriculum_ur"
  $PY run_rl.py compare --cores lstm --seeds 3 --env $PVM "${VM[@]}" --timesteps 6000000 \
      --exp-dir "$OUT/pvm_d90_curriculum_cores"
  # Active: seed 0 was run (seeds 1 and 2 were stopped for CPU once it failed), then seed 1 with a 20M budget,
  # stopped at 15.4M
  $PY run_rl.py compare --cores chrono --seeds 3 --env $AVM "${VM[@]}" --timesteps 6000000 \
      --exp-dir "$OUT/avm_d90_curriculum"
  $PY run_rl.py compare --cores chrono --seeds 1, --env $AVM "${VM[@]}" --set eval.freq=200000 --timesteps 20000000 \
      --exp-dir "$OUT/avm_d90_curriculum_20M"
  # Without the curriculum (the same config otherwise), and a delay of 180.
  $PY run_rl.py compare --cores chrono --seeds 1 --env $PVM "${VM[@]}" --set curriculum.start=null --timesteps 6000000 \
      --exp-dir "$OUT/pvm_d90_no_curriculum"
  $PY run_rl.py compare --cores chrono,ur --seeds 1 --env $PVM "${VM[@]}" --set env_kwargs.distractor_steps=180 \
      --timesteps 6000000 --exp-dir "$OUT/pvm_d180_curriculum"
  for exp in pvm_curriculum pvm_curriculum_chrono pvm_d90_curriculum pvm_d90_curriculum_ur pvm_d90_curriculum_cores \
      avm_d90_curriculum avm_d90_curriculum_20M pvm_d90_no_curriculum pvm_d180_curriculum; do
    $PY run_rl.py plot "$OUT/$exp"
  done
fi

if [[ $what == visual_active ]]; then
  # 14. Active Visual Match: why the hidden cue was not learned, and the recipe that learns it (docs/results/
  #     visual_active/). chrono seed 0, one run at a time per core. First the cue room alone (no distractor), one
  #     change at a time: the conv extractor, presence features (what is anywhere in view), a cue phase of 3 steps,
  #     both. (Stopped by hand: the cue-15 runs at 1.1M and 1.6M steps, with no learning; the last at 1.7M, above 0.9.)
  A=(--cores chrono --seeds 1 --env urgate/ActiveVisualMatch-v0 --config visual_match --set env_kwargs.distractor_steps=0
     --set curriculum.start=null --set eval.stop_success=0.95 --timesteps 2000000 --workers "$WORKERS")
  OFF=(--set policy_kwargs.features_extractor_kwargs.presence=false)
  $PY run_rl.py compare "${A[@]}" --set policy_kwargs.features_extractor_class=SymbolicGridExtractor "${OFF[@]}" \
      --exp-dir "$OUT/avm_d0_conv"
  $PY run_rl.py compare "${A[@]}" --set policy_kwargs.features_extractor_kwargs.presence=true --exp-dir "$OUT/avm_d0_presence"
  $PY run_rl.py compare "${A[@]}" --set env_kwargs.cue_steps=3 "${OFF[@]}" --exp-dir "$OUT/avm_d0_cue3"
  $PY run_rl.py compare "${A[@]}" --set env_kwargs.cue_steps=3 --set policy_kwargs.features_extractor_kwargs.presence=true \
      --exp-dir "$OUT/avm_d0_cue3_presence"
  #    The published tasks (cue 15, distractor 90) with configs/visual_match.yaml as shipped: presence features and a
  #    curriculum from 5 steps before the choice room (a 5-step cue phase), 10 steps at a time; chrono, ur and the
  #    LSTM, 3 seeds each on Active (budget 10M) and Passive (6M). Then Passive without the presence features, and
  #    longer distractor phases, one seed per core: Passive at 180 and 360, Active at 180.
  VA=(--config visual_match --set env_kwargs.cue_steps=15 --set env_kwargs.distractor_steps=90
      --set curriculum.start=5 --set curriculum.step=10 --set curriculum.success=0.8 --set eval.freq=100000
      --set policy_kwargs.features_extractor_kwargs.presence=true --set eval.stop_success=0.95 --workers "$WORKERS")
  AVM=urgate/ActiveVisualMatch-v0 PVM=urgate/PassiveVisualMatch-v0
  $PY run_rl.py compare --cores chrono --seeds 3 --env $AVM "${VA[@]}" --timesteps 10000000 \
      --exp-dir "$OUT/avm_presence_cue_curriculum"
  $PY run_rl.py compare --cores ur,lstm --seeds 3 --env $AVM "${VA[@]}" --timesteps 10000000 \
      --exp-dir "$OUT/avm_presence_cue_curriculum_cores"
  $PY run_rl.py compare --cores chrono --seeds 3 --env $PVM "${VA[@]}" --timesteps 6000000 \
      --exp-dir "$OUT/pvm_presence_cue_curriculum"
  $PY run_rl.py compare --cores ur,lstm --seeds 3 --env $PVM "${VA[@]}" --timesteps 6000000 \
      --exp-dir "$OUT/pvm_presence_cue_curriculum_cores"
  $PY run_rl.py compare --cores chrono --seeds 1 --env $PVM "${VA[@]}" --timesteps 6000000 "${OFF[@]}" \
      --exp-dir "$OUT/pvm_cue_curriculum_no_presence"
  $PY run_rl.py compare --cores chrono,ur,lstm --seeds 1 --env $PVM "${VA[@]}" --timesteps 6000000 \
      --set env_kwargs.distractor_steps=180 --exp-dir "$OUT/pvm_d180_presence_cue_curriculum"
  $PY run_rl.py compare --cores chrono,ur,lstm --seeds 1 --env $PVM "${VA[@]}" --timesteps 8000000 \
      --set env_kwargs.distractor_steps=360 --exp-dir "$OUT/pvm_d360_presence_cue_curriculum"
  #    Active at a distractor phase of 180 (the LSTM in an experiment of its own, run beside the other two).
  $PY run_rl.py compare --cores chrono,ur --seeds 1 --env $AVM "${VA[@]}" --timesteps 10000000 \
      --set env_kwargs.distractor_steps=180 --exp-dir "$OUT/avm_d180_presence_cue_curriculum"
  $PY run_rl.py compare --cores lstm --seeds 1 --env $AVM "${VA[@]}" --timesteps 10000000 \
      --set env_kwargs.distractor_steps=180 --exp-dir "$OUT/avm_d180_presence_cue_curriculum_lstm"
  for exp in avm_d0_conv avm_d0_presence avm_d0_cue3 avm_d0_cue3_presence avm_presence_cue_curriculum \
      avm_presence_cue_curriculum_cores pvm_presence_cue_curriculum pvm_presence_cue_curriculum_cores \
      pvm_cue_curriculum_no_presence pvm_d180_presence_cue_curriculum pvm_d360_presence_cue_curriculum \
      avm_d180_presence_cue_curriculum avm_d180_presence_cue_curriculum_lstm; do
    $PY run_rl.py plot "$OUT/$exp"
  done
fi

if [[ $what == grid_units ]]; then
  # 15. The grid recipes with smaller models, which train at more steps per CPU-second (benchmarks/throughput.py
  #     --grid-paths new,new_128x64,new_64x128): do they learn in as few steps? ur (b_r = 0), stopping once two
  #     evaluations of 100 greedy episodes in a row reach 0.95: MemoryS17Random with a core of 64 units and of 128
  #     (3 seeds each), Passive Visual Match at the published delay with 64 units (128: block 14); then 64 extractor
  #     outputs with 128 units on MemoryS17Random and Passive and Active Visual Match, 3 seeds each.
  #     docs/results/grid_units/.
  MGR=(--config minigrid --set n_envs=64 --set ppo.n_steps=64 --set ppo.batch_size=512 --set policy_kwargs.shared_lstm=true
       --set policy_kwargs.enable_critic_lstm=false --set policy_kwargs.shared_lstm_value_grad=true
       --set policy_kwargs.features_extractor_class=SymbolicGridBagExtractor --set eval.freq=100000
       --set eval.stop_success=0.95 --timesteps 10000000 --set policy_kwargs.core_kwargs.refine_bias=zero
       --workers "$WORKERS")
  VA=(--config visual_match --set env_kwargs.cue_steps=15 --set env_kwargs.distractor_steps=90
      --set curriculum.start=5 --set curriculum.step=10 --set curriculum.success=0.8 --set eval.freq=100000
      --set policy_kwargs.features_extractor_kwargs.presence=true --set eval.stop_success=0.95 --workers "$WORKERS")
  U64=(--set policy_kwargs.lstm_hidden_size=64) U128=(--set policy_kwargs.lstm_hidden_size=128)
  AVM=urgate/ActiveVisualMatch-v0 PVM=urgate/PassiveVisualMatch-v0 S17=MiniGrid-MemoryS17Random-v0
  $PY run_rl.py compare --cores ur --seeds 3 --env $S17 "${MGR[@]}" "${U64[@]}" --exp-dir "$OUT/mg_s17random_ur_64"
  #     Passive with 64 units: stopped by hand after seed 0, which ended at 0.91 after 6M steps (128 units: 0.95 at
  #     1.1M), so seeds 1-2 and Active were not run with 64 units.
  $PY run_rl.py compare --cores ur --seeds 3 --env $PVM "${VA[@]}" "${U64[@]}" --timesteps 6000000 \
      --exp-dir "$OUT/pvm_ur_64"
  $PY run_rl.py compare --cores ur --seeds 3 --env $S17 "${MGR[@]}" "${U128[@]}" --exp-dir "$OUT/mg_s17random_ur_128"
  #     64 extractor outputs with 128 units (1.1-1.2x the steps per CPU-second): ur on MemoryS17Random, then ur,
  #     chrono (configs/visual_match.yaml's core) and the LSTM on Passive and Active.
  F64=(--set policy_kwargs.features_extractor_kwargs.features_dim=64)
  $PY run_rl.py compare --cores ur --seeds 3 --env $S17 "${MGR[@]}" "${F64[@]}" --exp-dir "$OUT/mg_s17random_ur_f64"
  for core in ur chrono lstm; do
    $PY run_rl.py compare --cores $core --seeds 3 --env $PVM "${VA[@]}" "${F64[@]}" --timesteps 6000000 \
        --exp-dir "$OUT/pvm_${core}_f64"
    $PY run_rl.py compare --cores $core --seeds 3 --env $AVM "${VA[@]}" "${F64[@]}" --timesteps 10000000 \
        --exp-dir "$OUT/avm_${core}_f64"
  done
  for exp in mg_s17random_ur_64 pvm_ur_64 mg_s17random_ur_128 mg_s17random_ur_f64 pvm_ur_f64 avm_ur_f64 \
      pvm_chrono_f64 avm_chrono_f64 pvm_lstm_f64 avm_lstm_f64; do
    $PY run_rl.py plot "$OUT/$exp"
  done
fi

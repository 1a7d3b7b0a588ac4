#!/bin/bash
# v6: torchhub-cpu-v5's run directory (same data, SFT, samples, feedback, reward model, RFT) with a new PPO
# stage only (config.yaml here: configs/torchhub-cpu.yaml with ppo.reward_source feedback, learning_rate
# 2e-5, total_steps 24, patience 3), then evaluate and report, from the worktree at 8578dea on 2 AMD EPYC
# cores. v5's ppo/, eval/ and report/ were moved aside in the run directory first.
set -e
export RLAIF_DATA=/work/shared/gorilla RLAIF_EXEC_ENV=$HOME/.cache/rlaif-code/exec-env
R=$HOME/rlaif-runs/th5
for d in ppo eval report samples/eval_rlaif; do mv $R/$d $R/$d-v5; done
for s in ppo evaluate report; do
  .venv/bin/rlaif run --config results/torchhub-cpu-v6/config.yaml --run_dir $R --only $s --force
done
.venv/bin/rlaif report $R --out_dir results/torchhub-cpu-v6 --screenshot

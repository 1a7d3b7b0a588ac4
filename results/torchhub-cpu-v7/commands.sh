#!/bin/bash
# v7: torchhub-cpu-v6 (see its commands.sh: v5's run directory, PPO rerun on the tool reward alone) with the
# online rubric configs/rubrics/ppo-online-exec.yaml (executes added, weight 3 of 15), from the worktree at
# 8578dea (plus that rubric) on 2 AMD EPYC cores; config.yaml here. v6's ppo/, eval/ and report/ were moved
# aside in the run directory first. PPO ran over two sessions: killed at step 9, resumed from its step-8
# checkpoint.
set -e
export RLAIF_DATA=/work/shared/gorilla RLAIF_EXEC_ENV=$HOME/.cache/rlaif-code/exec-env
R=$HOME/rlaif-runs/th5
for d in ppo eval report samples/eval_rlaif; do mv $R/$d $R/$d-v6; done
for s in ppo evaluate report; do
  .venv/bin/rlaif run --config results/torchhub-cpu-v7/config.yaml --run_dir $R --only $s --force
done
.venv/bin/rlaif report $R --out_dir results/torchhub-cpu-v7 --screenshot
# The same models (and v6's RLAIF) answering again with API-constrained decoding (evaluate.sample.constrain_api),
# into another directory; its report is constrained/ here.
.venv/bin/python results/torchhub-cpu-v7/eval_constrained.py results/torchhub-cpu-v7/config.yaml $R \
  $HOME/rlaif-runs/th7c sft=$R/sft rft=$R/rft/model rlaif=$R/ppo/model rlaif_v6=$R/ppo-v6/model

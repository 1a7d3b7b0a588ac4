#!/bin/bash
# configs/torchhub-cpu.yaml as committed at 07b8688 (same sections at 05ec079, where the frozen worktree ran:
# only --only's resume differs), end to end on 2 AMD EPYC cores (bf16 auto), stage by stage. data/ and sft/
# are copied from torchhub-cpu-v3's and -v4's runs (made with the same data and sft sections and seed), so
# it starts at sample. The sample stage was killed at 194 of 2,259 answers by a session's end and resumed.
set -e
export RLAIF_DATA=/work/shared/gorilla RLAIF_EXEC_ENV=$HOME/.cache/rlaif-code/exec-env
mkdir -p $HOME/rlaif-runs/th5
cp -r $HOME/rlaif-runs/th/data $HOME/rlaif-runs/th4/sft $HOME/rlaif-runs/th5/
for s in sample feedback reward rft ppo evaluate report; do
  .venv/bin/rlaif run --config configs/torchhub-cpu.yaml --run_dir $HOME/rlaif-runs/th5 --only $s
done
.venv/bin/rlaif report $HOME/rlaif-runs/th5 --out_dir results/torchhub-cpu-v5 --screenshot

#!/bin/bash
# results/hf-cpu-sft-v2: configs/hf-cpu.yaml's synth, data and SFT stages rerun (same config and seed as
# results/hf-cpu-sft, SFT checkpoints every 25 steps) on 2 AMD EPYC cores, from a frozen git worktree at
# ae89b5c; then the SFT model scored on the 91 eval items twice, from a worktree at a537145: with
# API-constrained decoding (evaluate.sample.constrain_api, the joint rule: a call's later literals take
# values passed beside those already written) and without, in the current exec env (transformers 4.57,
# placeholder inputs). Gorilla-7B's released answers and the reference control are scored with the first.
set -e
export RLAIF_DATA=/work/shared/gorilla RLAIF_EXEC_ENV=$HOME/.cache/rlaif-code/exec-env
git worktree add --detach $HOME/rlaif-runs/code ae89b5c && ln -s $PWD/.venv $HOME/rlaif-runs/code/.venv
git worktree add --detach $HOME/rlaif-runs/code2 a537145 && ln -s $PWD/.venv $HOME/rlaif-runs/code2/.venv
cd $HOME/rlaif-runs/code
for s in synth data sft; do
  PYTHONPATH=$PWD/src .venv/bin/rlaif run --config configs/hf-cpu.yaml --run_dir $HOME/rlaif-runs/hf --only $s
done
cd $HOME/rlaif-runs/code2
export PYTHONPATH=$PWD/src
.venv/bin/python results/torchhub-cpu-v7/eval_constrained.py configs/hf-cpu.yaml $HOME/rlaif-runs/hf \
  $HOME/rlaif-runs/hf sft_constrained=$HOME/rlaif-runs/hf/sft
ROWS_ONLY=1 .venv/bin/python results/hf-cpu-sft/eval_sft.py $HOME/rlaif-runs/hf sft=$HOME/rlaif-runs/hf/sft
.venv/bin/rlaif report $HOME/rlaif-runs/hf --out_dir results/hf-cpu-sft-v2 --screenshot

#!/bin/bash
# The exact commands of results/hf-cpu-sft: configs/hf-cpu.yaml (as committed beside these results) through
# SFT at full size, on 2 Intel Xeon cores with AMX (bf16 auto), from a frozen git worktree of the commit in
# manifest.json. The run stops after SFT: the later stages (sample, feedback, reward, RFT, PPO) do not fit
# the same 3-hour session on 2 cores. Two SFT models, both scored on the same 91 held-out items:
#   hf/       the 795 pool examples + 936 synthesized (template generator, one per API of the database)
#   hf-pool/  the 795 pool examples alone (--no-synth.enabled), same seed and budget
set -e
export RLAIF_DATA=/work/shared/gorilla RLAIF_EXEC_ENV=$HOME/.cache/rlaif-code/exec-env
for s in synth data sft; do
  .venv/bin/rlaif run --config configs/hf-cpu.yaml --run_dir $HOME/rlaif-runs/hf --only $s
done
.venv/bin/rlaif run --config configs/hf-cpu.yaml --run_dir $HOME/rlaif-runs/hf-pool --no-synth.enabled --only data
.venv/bin/rlaif run --config configs/hf-cpu.yaml --run_dir $HOME/rlaif-runs/hf-pool --no-synth.enabled --only sft
# Scoring: the pipeline's evaluate stage (evaluate.compare.run_comparison with hf-cpu.yaml's evaluate
# section) with the SFT rows only (eval_sft.py, beside this file): greedy answers, AST / ROUGE / CodeBLEU /
# hermetic executability; the reference control and Gorilla-7B's three released answer sets scored once.
python results/hf-cpu-sft/eval_sft.py $HOME/rlaif-runs/hf sft=$HOME/rlaif-runs/hf/sft
ROWS_ONLY=1 python results/hf-cpu-sft/eval_sft.py $HOME/rlaif-runs/hf-pool sft_pool_only=$HOME/rlaif-runs/hf-pool/sft
cp $HOME/rlaif-runs/hf-pool/eval/sft_pool_only.json $HOME/rlaif-runs/hf/eval/
.venv/bin/rlaif report $HOME/rlaif-runs/hf --out_dir results/hf-cpu-sft --screenshot

#!/bin/bash
# The exact commands of this run: configs/torchhub-cpu.yaml at commit ae0cae5 with the pairwise reward
# loss of 5c68d54 (reward.pairwise_weight 1.0) and without RFT, on 2 AMD EPYC cores with AVX-512 BF16
# (bf16 auto), from a frozen git worktree, stage by stage, each its own process (the peak memory in
# the manifest is then each stage's own). Everything else equals torchhub-cpu-v2: same seed, so the
# data, SFT, samples and feedback are the same and the reward model's loss is the one change.
set -e
export RLAIF_DATA=/work/shared/gorilla RLAIF_EXEC_ENV=$HOME/.cache/rlaif-code/exec-env
for s in data sft sample feedback reward; do
  .venv/bin/rlaif run --config configs/torchhub-cpu.yaml --run_dir $HOME/rlaif-runs/th --reward.pairwise_weight 1.0 --only $s
done
for s in ppo evaluate report; do
  .venv/bin/rlaif run --config configs/torchhub-cpu.yaml --run_dir $HOME/rlaif-runs/th --reward.pairwise_weight 1.0 \
    --no-rft.enabled --only $s
done
# The committed report was redrawn afterwards by the current report code, with its screenshot:
.venv/bin/rlaif report $HOME/rlaif-runs/th --out_dir results/torchhub-cpu-v3 --screenshot

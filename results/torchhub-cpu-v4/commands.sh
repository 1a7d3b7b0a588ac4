#!/bin/bash
# The exact commands of this run, on 2 AMD EPYC cores with AVX-512 BF16 (bf16 auto), from a frozen git
# worktree at commit 4f20ef2, stage by stage. It reuses torchhub-cpu-v3's data, samples, feedback and
# reward model (trained with reward.pairwise_weight 1.0 on the ONE-epoch SFT model's samples), then
# trains a TWO-epoch SFT model as the PPO policy and runs 16 PPO steps instead of 8. `--only` forces
# each named stage and leaves the copied ones alone.
set -e
export RLAIF_DATA=/work/shared/gorilla RLAIF_EXEC_ENV=$HOME/.cache/rlaif-code/exec-env
mkdir -p $HOME/rlaif-runs/th4
cp -r $HOME/rlaif-runs/th/{data,sample,feedback,reward,cache} $HOME/rlaif-runs/th4/
for s in sft ppo evaluate report; do
  .venv/bin/rlaif run --config configs/torchhub-cpu.yaml --run_dir $HOME/rlaif-runs/th4 \
    --reward.pairwise_weight 1.0 --no-rft.enabled --sft.epochs 2 --ppo.total_steps 16 --only $s
done
# The committed report was redrawn afterwards with its screenshot:
.venv/bin/rlaif report $HOME/rlaif-runs/th4 --out_dir results/torchhub-cpu-v4 --screenshot

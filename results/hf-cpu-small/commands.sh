#!/bin/bash
# The exact commands of results/hf-cpu-small, run from the repository root on the 2-core CPU machine.
# configs/hf-cpu.yaml at a reduced budget (96 training examples, 48 eval items, 40 prompts sampled
# twice, 1 reward epoch, 6 PPO steps): the full config needs many hours here.
export RLAIF_DATA=$(realpath ../shared/gorilla)
# 1. data and SFT, stage by stage. These flags also set reward and PPO budgets; those stages had not
#    started when the budget was cut below, so they never ran with them.
ARGS="--config configs/hf-cpu.yaml --run_dir runs/hf-cpu-small --data.max_train 96 --data.max_eval 48 --sample.max_examples 40 --reward.epochs 2 --ppo.total_steps 8 --ppo.batch_size 8 --ppo.mini_batch_size 4 --ppo.learning_rate 1e-5 --ppo.save_every 2"
.venv/bin/rlaif run $ARGS --only data
.venv/bin/rlaif run $ARGS --only sft
# 2. stopped a few seconds into sampling (to cut the reward and PPO budgets); one plain run then
#    resumed sampling and ran every later stage:
.venv/bin/rlaif run --config configs/hf-cpu.yaml --run_dir runs/hf-cpu-small --data.max_train 96 --data.max_eval 48 \
  --sample.max_examples 40 --reward.epochs 1 --ppo.total_steps 6 --ppo.batch_size 8 --ppo.mini_batch_size 4 \
  --ppo.learning_rate 1e-5 --ppo.save_every 2

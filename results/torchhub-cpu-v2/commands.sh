#!/bin/bash
# The exact commands of this run (configs/torchhub-cpu.yaml as committed beside these results), on 2 AMD Zen 5
# cores with AVX-512 BF16 (bf16 auto), run from a frozen git worktree so that edits to the checkout
# during the run could not change its code. Stage by stage, each its own process (the peak memory
# in the manifest is then each stage's own); rerunning a line resumes or skips a finished stage.
set -e
export RLAIF_DATA=/work/shared/gorilla RLAIF_EXEC_ENV=$HOME/.cache/rlaif-code/exec-env
for s in data sft sample feedback reward rft ppo evaluate report; do
  .venv/bin/rlaif run --config configs/torchhub-cpu.yaml --run_dir $HOME/rlaif-runs/th --only $s
done
# The label variants in label_variants.txt: the feedback stage once more with every tool check
# (default rubric + api_fits_task), then scores and labels recomputed from its per-question answers.
.venv/bin/rlaif feedback --samples $HOME/rlaif-runs/th/sample/samples.jsonl --data_dir $HOME/rlaif-runs/th/data \
  --rubric all.yaml --cache_path $HOME/rlaif-runs/th/cache/judge.sqlite --out_dir fb-all
python analyse.py fb-all/feedback.jsonl > label_variants.txt

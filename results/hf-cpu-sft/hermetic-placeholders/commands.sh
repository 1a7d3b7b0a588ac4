#!/bin/bash
# The reference control of results/hf-cpu-sft rescored at commit 3b365c0, whose hermetic mode binds
# placeholder inputs (sandbox/hermetic/placeholders.py), in the same exec env as ../exec-env-transformers4
# (transformers 4.57.6; exec_env.json beside this file), on 2 AMD EPYC cores, one sandbox worker. The same
# 91 held-out items; eval_reference.jsonl is made as in ../exec-env-transformers4/commands.sh.
set -e
export RLAIF_DATA=/work/shared/gorilla RLAIF_EXEC_ENV=$HOME/.cache/rlaif-code/exec-env
.venv/bin/rlaif eval --hub hf --responses $HOME/rlaif-runs/hf/eval_reference.jsonl \
  --eval_set $HOME/rlaif-runs/hf/data/eval.jsonl --out reference.json --label "reference answers (control)" \
  --exec --exec_workers 1 --exec_timeout 120

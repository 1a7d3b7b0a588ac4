#!/bin/bash
# Front half of the full TorchHub run (data..rft) from the frozen worktree; resumable: rerun it.
set -e
export RLAIF_DATA=/work/shared/gorilla RLAIF_EXEC_ENV=$HOME/.cache/rlaif-code/exec-env
cd ~/rlaif-runs/src
for s in ${STAGES:-data sft sample feedback reward}; do
  echo "=== $s $(date -u +%FT%TZ)"
  /work/main/.venv/bin/rlaif run --config configs/torchhub-cpu.yaml --run_dir $HOME/rlaif-runs/th2 --only $s
done
echo "=== front done $(date -u +%FT%TZ)"

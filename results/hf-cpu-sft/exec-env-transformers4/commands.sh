#!/bin/bash
# The reference control of results/hf-cpu-sft rescored in the exec env that pins transformers<5
# (4.57.6; exec_env.json beside this file), on 2 AMD EPYC cores. The same 91 held-out items
# (configs/hf-cpu.yaml's synth + data stages, seed 0); one sandbox worker.
set -e
export RLAIF_DATA=/work/shared/gorilla RLAIF_EXEC_ENV=$HOME/.cache/rlaif-code/exec-env
.venv/bin/rlaif exec-env
for s in synth data; do .venv/bin/rlaif run --config configs/hf-cpu.yaml --run_dir $HOME/rlaif-runs/hf --only $s; done
python - <<'PY'
import json, os
rows = [json.loads(l) for l in open(os.path.expanduser("~/rlaif-runs/hf/data/eval.jsonl"))]
with open(os.path.expanduser("~/rlaif-runs/hf/eval_reference.jsonl"), "w") as f:
    f.writelines(json.dumps({"example_id": r["example_id"], "text": r["target"]}) + "\n" for r in rows)
PY
.venv/bin/rlaif eval --hub hf --responses $HOME/rlaif-runs/hf/eval_reference.jsonl \
  --eval_set $HOME/rlaif-runs/hf/data/eval.jsonl --out reference.json --label "reference answers (control)" \
  --exec --exec_workers 1 --exec_timeout 120

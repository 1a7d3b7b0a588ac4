"""Score the GPU run's eval answers here, executability included (the sandbox lives here), in one
process so the shared control runs once. Equivalent to `rlaif eval` per file (same EvalConfig)."""
import os
from pathlib import Path
from rlaif_code.artifacts import atomic_write_json
from rlaif_code.evaluate import evaluate
from rlaif_code.evaluate.stage import EvalConfig

R = Path("runs/torchhub-gpu")
for name, label, path in (("sft", "SFT", R / "samples/eval_sft/samples.jsonl"),
                          ("rlaif", "RLAIF", R / "samples/eval_rlaif/samples.jsonl"),
                          ("reference", "reference answers (control)", R / "samples/eval_reference.jsonl")):
    cfg = EvalConfig(hub="th", responses=str(path), eval_set=str(R / "data/eval.jsonl"), exec=True,
                     exec_timeout=120.0, exec_workers=2, label=label, show_table=False)
    atomic_write_json(R / "eval" / f"{name}.json", evaluate(cfg))
    print(name, "done", flush=True)

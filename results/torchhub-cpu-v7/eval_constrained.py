"""The eval rows again with API-constrained decoding (evaluate.sample.constrain_api: true): the pipeline's
evaluate stage (run_comparison) on a finished run's models, written to another folder so that the run's own
unconstrained eval stays as it is. Usage: eval_constrained.py CONFIG RUN_DIR OUT_DIR name=MODEL_DIR ..."""
import sys
from dataclasses import replace
from pathlib import Path

from rlaif_code.core.config import load_config
from rlaif_code.evaluate.compare import CompareInputs, run_comparison
from rlaif_code.pipeline import PipelineConfig

config, run_dir, out_dir = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
models = {name: Path(path) for name, path in (arg.split("=", 1) for arg in sys.argv[4:])}
cfg = load_config(PipelineConfig, config)
section = replace(cfg.evaluate, sample=replace(cfg.evaluate.sample, constrain_api=True), best_of_n=[])
inputs = CompareInputs(data_dir=run_dir / "data", models=models, samples_dir=out_dir / "samples",
                       out_dir=out_dir / "eval", hub=cfg.data.hub, data=cfg.data.data, seed=cfg.seed,
                       reward_model=None, api_db=cfg.data.api_db)
print(run_comparison(section, inputs))

"""The HF SFT models (with and without synthesized examples) scored on the 91 eval items beside Gorilla-7B's
released answers and the reference control: the pipeline's evaluate stage (run_comparison) with the SFT rows
only, since this session's run stops after SFT (no reward model: no best-of-n row)."""
import os
import sys
from pathlib import Path

from rlaif_code.core.config import load_config
from rlaif_code.evaluate.compare import CompareInputs, run_comparison
from rlaif_code.pipeline import PipelineConfig

run_dir = Path(sys.argv[1])
models = dict(arg.split("=", 1) for arg in sys.argv[2:])
cfg = load_config(PipelineConfig, "configs/hf-cpu.yaml")
if os.environ.get("ROWS_ONLY"):  # the control and Gorilla's rows were scored with the first model's run
    cfg.evaluate.reference_control, cfg.evaluate.gorilla_baselines = False, []
inputs = CompareInputs(data_dir=run_dir / "data", models={k: Path(v) for k, v in models.items()},
                       samples_dir=run_dir / "samples", out_dir=run_dir / "eval", hub=cfg.data.hub,
                       data=cfg.data.data, seed=cfg.seed, reward_model=None, api_db=cfg.data.api_db)
print(run_comparison(cfg.evaluate, inputs))

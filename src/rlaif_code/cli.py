"""`rlaif STAGE [--config FILE] [--KEY VALUE ...] [--set KEY=VALUE ...]`: a thin layer over `run(cfg)`.

Each stage is a config dataclass plus `run(cfg)`. Flags are generated from the
dataclass (nested fields as `--lora.r`), values are read as YAML scalars, and the
layering is defaults, then the YAML file, then flags. Unknown keys and wrong types
stop the command with a message that names them.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from typing import Any, Callable

from rlaif_code.artifacts import InputError
from rlaif_code.config import ConfigError, flat_fields, load_config, parse_override
from rlaif_code.registry import RegistryError

# stage name -> (module, config class, help). Modules are imported only when used so
# that `rlaif eval` does not pay for importing torch and transformers.
STAGES: dict[str, tuple[str, str, str]] = {
    "data": ("rlaif_code.data", "DataConfig", "select, split and prompt APIBench examples"),
    "sft": ("rlaif_code.sft", "SFTConfig", "supervised fine-tuning (M_SFT)"),
    "sample": ("rlaif_code.sample", "SampleConfig", "generate answers with a model"),
    "feedback": ("rlaif_code.feedback", "FeedbackConfig", "AI feedback: judge answers against a rubric"),
    "judge-check": ("rlaif_code.feedback.judge_check", "JudgeCheckConfig",
                    "agreement of an LLM judge with the tool checks"),
    "reward": ("rlaif_code.reward", "RewardConfig", "train the reward model (M_reward)"),
    "ppo": ("rlaif_code.ppo", "PPOConfig", "PPO against the reward model (M_RL)"),
    "eval": ("rlaif_code.evaluate", "EvalConfig", "score answers: AST accuracy, hallucination, ROUGE, CodeBLEU"),
    "exec-env": ("rlaif_code.sandbox.env", "ExecEnvConfig", "create the virtual environment generated code runs in"),
    "report": ("rlaif_code.report", "ReportConfig", "Markdown and HTML report of a run directory"),
    "run": ("rlaif_code.pipeline", "PipelineConfig", "the whole method, data to report, from one config"),
}
# Stages that take one positional argument, and the config field it fills.
POSITIONAL: dict[str, str] = {"report": "run_dir"}


def available_stages() -> dict[str, tuple[str, str, str]]:
    out = {}
    for name, spec in STAGES.items():
        try:
            found = importlib.util.find_spec(spec[0]) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            out[name] = spec
    return out


def _stage(name: str) -> tuple[type, Callable[[Any], Any], Any]:
    module_name, config_name, _ = STAGES[name]
    module = importlib.import_module(module_name)
    return getattr(module, config_name), module.run, module


def _build_stage_parser(name: str, config_cls: type, module: Any) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"rlaif {name}", description=STAGES[name][2])
    if hasattr(module, "add_cli_args"):  # flags that are not config (e.g. run --from)
        module.add_cli_args(parser)
    if name in POSITIONAL:
        parser.add_argument(POSITIONAL[name], nargs="?", default=None)
    parser.add_argument("--config", default=None, help="YAML file with this stage's settings")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any key (repeatable)")
    for key, tp, default in flat_fields(config_cls):
        if name in POSITIONAL and key == POSITIONAL[name]:
            continue
        shown = json.dumps(default, default=str)
        parser.add_argument(f"--{key}", dest=f"field:{key}", default=None, metavar="VALUE",
                            help=f"({getattr(tp, '__name__', str(tp)).replace('typing.', '')}, default {shown})")
    return parser


def _overrides(args: argparse.Namespace, name: str) -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    if name in POSITIONAL and getattr(args, POSITIONAL[name], None) is not None:
        items.append((POSITIONAL[name], getattr(args, POSITIONAL[name])))
    for dest, raw in vars(args).items():
        if dest.startswith("field:") and raw is not None:
            items.append(parse_override(f"{dest[len('field:'):]}={raw}"))
    items.extend(parse_override(text) for text in args.set)
    return items


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    stages = available_stages()
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: rlaif STAGE [--config FILE] [--KEY VALUE ...]\n\nstages:")
        for name, (_, _, help_text) in stages.items():
            print(f"  {name:<12} {help_text}")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in stages:
        print(f"error: unknown stage '{name}' (known: {', '.join(stages)})", file=sys.stderr)
        return 2
    try:
        config_cls, run, module = _stage(name)
        args = _build_stage_parser(name, config_cls, module).parse_args(rest)
        overrides = _overrides(args, name)
        cfg = load_config(config_cls, args.config, dict(overrides) if overrides else None)
        result = module.run_from_cli(cfg, args) if hasattr(module, "run_from_cli") else run(cfg)
    except (ConfigError, InputError, RegistryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if isinstance(result, int):
        return result
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`rlaif STAGE [--config FILE] [--KEY VALUE ...] [--set KEY=VALUE ...]`: a thin layer over `run(cfg)`.

Each stage is a config dataclass plus `run(cfg)`. Flags are generated from the
dataclass (nested fields as `--lora.r`), and the layering is defaults, then the YAML
file, then flags. A boolean is a bare flag with its negation (`--exec` / `--no-exec`),
a `Literal` offers its choices (`--hub {hf,tf,th}`), anything else is read as a YAML
scalar (`--max_train 100`, `--metrics '[ast, rouge]'`). Each flag's help is the field's
documentation (`rlaif_code.core.config.field_help`), its type and its default. Unknown
keys and wrong types stop the command with a message that names them.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
import types
from typing import Any, Callable, Literal, Union, get_args, get_origin

from rlaif_code.core.artifacts import InputError
from rlaif_code.core.config import (
    ConfigError,
    FieldInfo,
    describe_fields,
    load_config,
    parse_override,
    section_help,
)
from rlaif_code.core.registry import RegistryError

# stage name -> (module, config class, help). Modules are imported only when used so
# that `rlaif eval` does not pay for importing torch and transformers.
STAGES: dict[str, tuple[str, str, str]] = {
    "synth": ("rlaif_code.synth", "SynthConfig", "training examples made from an API database"),
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


def _options(tp: Any) -> tuple[Any, ...]:
    """The members of a union (just `tp` itself when it is not one)."""
    if get_origin(tp) is Union or get_origin(tp) is types.UnionType:
        return get_args(tp)
    return (tp,)


def _is_flag(tp: Any) -> bool:
    """`bool` or `bool | None`: a bare flag and its negation."""
    return set(_options(tp)) in ({bool}, {bool, type(None)})


def _choices(tp: Any) -> dict[str, Any] | None:
    """{spelling on the command line: value} for a `Literal` (possibly with bool or None), else None."""
    options = _options(tp)
    if not any(get_origin(o) is Literal for o in options):
        return None
    out: dict[str, Any] = {}
    for option in options:
        if get_origin(option) is Literal:
            values: tuple[Any, ...] = get_args(option)
        elif option is bool:
            values = (True, False)
        elif option is type(None):
            values = (None,)
        else:
            return None  # a Literal mixed with a free-form type: read as a YAML scalar
        for value in values:
            out[json.dumps(value) if not isinstance(value, str) else value] = value
    return out


def type_label(tp: Any) -> str:
    """How `--help` names a field's type: int, float | null, list[str], choice."""
    if _choices(tp) is not None:
        return "choice"
    options = _options(tp)
    if len(options) > 1:
        names = [type_label(o) for o in options if o is not type(None)]
        return " | ".join(names + (["null"] if type(None) in options else []))
    if get_origin(tp) is not None:
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _help(info: FieldInfo) -> str:
    shown = "required" if info.required else f"default: {json.dumps(info.default, default=str)}"
    doc = info.help[:-1] if info.help.endswith(".") and not info.help.endswith("..") else info.help
    text = f"{doc} ({type_label(info.type)}, {shown})" if doc else f"({type_label(info.type)}, {shown})"
    return text.replace("%", "%%")  # argparse %-formats help strings


def _metavar(info: FieldInfo) -> str:
    if info.metavar:
        return info.metavar
    tp = next((o for o in _options(info.type) if o is not type(None)), info.type)
    name = getattr(get_origin(tp) or tp, "__name__", "value")
    return {"list": "LIST", "tuple": "LIST", "dict": "MAP"}.get(name, name.upper())


def _build_stage_parser(name: str, config_cls: type, module: Any) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"rlaif {name}", description=STAGES[name][2])
    if hasattr(module, "add_cli_args"):  # flags that are not config (e.g. run --from)
        module.add_cli_args(parser)
    infos = describe_fields(config_cls)
    if name in POSITIONAL:
        positional = next(info for info in infos if info.name == POSITIONAL[name])
        parser.add_argument(POSITIONAL[name], nargs="?", default=None, metavar=POSITIONAL[name].upper(),
                            help=positional.help.replace("%", "%%"))
    parser.add_argument("--config", default=None, help="YAML file with this stage's settings")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any key (repeatable; the value is read as YAML)")
    groups: dict[str, Any] = {}
    sections = section_help(config_cls)
    spellings: dict[str, dict[str, Any]] = {}
    for info in infos:
        if name in POSITIONAL and info.name == POSITIONAL[name]:
            continue
        section = info.name.rpartition(".")[0]
        if section and section not in groups:
            text = sections.get(section) or None
            groups[section] = parser.add_argument_group(f"{section}.*", text and text.replace("%", "%%"))
        target = groups[section] if section else parser
        dest = f"field:{info.name}"
        if _is_flag(info.type):
            target.add_argument(f"--{info.name}", dest=dest, default=None, action=argparse.BooleanOptionalAction,
                                help=_help(info))
        elif (choices := _choices(info.type)) is not None:
            spellings[dest] = choices
            target.add_argument(f"--{info.name}", dest=dest, default=None, choices=list(choices),
                                help=_help(info))
        else:
            target.add_argument(f"--{info.name}", dest=dest, default=None, metavar=_metavar(info),
                                help=_help(info))
    parser.set_defaults(_spellings=spellings)
    return parser


def _overrides(args: argparse.Namespace, name: str) -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    if name in POSITIONAL and getattr(args, POSITIONAL[name], None) is not None:
        items.append((POSITIONAL[name], getattr(args, POSITIONAL[name])))
    spellings = getattr(args, "_spellings", {})
    for dest, raw in vars(args).items():
        if not dest.startswith("field:") or raw is None:
            continue
        key = dest[len("field:"):]
        if isinstance(raw, bool):  # --flag / --no-flag
            items.append((key, raw))
        elif dest in spellings:
            items.append((key, spellings[dest][raw]))
        else:
            items.append(parse_override(f"{key}={raw}"))
    items.extend(parse_override(text) for text in args.set)
    return items


def parse_config(name: str, argv: list[str]) -> tuple[Any, argparse.Namespace]:
    """The config `rlaif NAME ARGV...` runs with, and the parsed arguments (argparse exits on bad flags)."""
    config_cls, _run, module = _stage(name)
    args = _build_stage_parser(name, config_cls, module).parse_args(argv)
    overrides = _overrides(args, name)
    return load_config(config_cls, args.config, dict(overrides) if overrides else None), args


def _is_judge_error(err: BaseException) -> bool:
    """Whether `err` is the feedback judges' JudgeError (looked up only if loaded: cli imports no stage)."""
    base = sys.modules.get("rlaif_code.feedback.judges.base")
    return base is not None and isinstance(err, base.JudgeError)


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
        cfg, args = parse_config(name, rest)
        _config_cls, run, module = _stage(name)
        result = module.run_from_cli(cfg, args) if hasattr(module, "run_from_cli") else run(cfg)
    except (ConfigError, InputError, RegistryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        if not _is_judge_error(err):
            raise
        # A judge's server failed (e.g. inside `rlaif run`): one line, the cache keeps what came back.
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    if isinstance(result, int):
        return result
    return 0


if __name__ == "__main__":
    sys.exit(main())

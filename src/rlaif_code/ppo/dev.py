"""Dev-set model selection: PPO hands back its best checkpoint on held-out training prompts, never
simply its last step, and the SFT model itself counts as step 0.

Every `dev_every` steps the policy answers the data stage's dev prompts (`dev.jsonl`: training
prompts no stage trains on) greedily, and the evaluator's own rules score the answers: the exact
reference API, Gorilla's accuracy and hallucination (`data.ast_match`), the share missing a field,
the mean length, and, where configured, an executability tier in the sandbox. Beside them the
collapse signals: how many distinct api_calls the answers make against the references' count, and
the share of the commonest one. `selection.offer` keeps the best step by `select_metric` (a tie
keeps the earlier step: less drift from SFT for the same dev score); a step whose KL went past
`kl_budget`, or whose answers collapsed, is never selected. Each new best's weights go to `best/step-NNNNNN/`, and the
selection's state travels in every checkpoint, so a resumed run selects as an unbroken one.
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rlaif_code.core.artifacts import InputError, iter_jsonl, read_stage_record
from rlaif_code.data.parse import FIELDS, parse_output

BEST = "best"
# most dev answers calling one API while no API covers half of the references
COLLAPSE_SHARE = 0.5
# ... and more of them than the SFT model's own greedy answers did, by this share: a small SFT model already
# answers many prompts with its favourite API (67% of TorchHub's dev answers), and RL that merely keeps that
# habit has not collapsed; step 0 is then always eligible, so selection can hand back the SFT model
COLLAPSE_MARGIN = 0.1


@dataclass
class DevSet:
    prompts: list[str]
    references: list[dict[str, Any]]  # each prompt's reference_api
    matcher: Any  # data.ast_match.AstMatcher of the prompts' hub


def load_dev_set(cfg: Any) -> DevSet | None:
    """The data stage's dev prompts (the first `dev_max_prompts`), or None when selection is off."""
    if cfg.dev_every == 0:
        return None
    from rlaif_code.data.apibench import api_database
    from rlaif_code.data.ast_match import AstMatcher

    path = Path(cfg.data_dir) / "dev.jsonl"
    if not path.is_file():
        raise InputError(f"{path}: no dev set for model selection: run the data stage with data.dev_fraction > 0, "
                         "or set ppo.dev_every: 0 to keep the last step")
    rows = [row for _, row in iter_jsonl(path)][: cfg.dev_max_prompts]
    hubs = sorted({str(row.get("hub")) for row in rows})
    if not rows or len(hubs) != 1:
        raise InputError(f"{path}: expected dev prompts of one hub, found {len(rows)} rows of hubs {hubs}")
    matcher = AstMatcher(api_database(cfg.data, hubs[0], cfg.api_db), hubs[0])
    return DevSet([row["prompt"] for row in rows], [row.get("reference_api") or {} for row in rows], matcher)


def answer_metrics(dev: DevSet, texts: list[str], n_tokens: list[int]) -> dict[str, Any]:
    """The dev figures of one set of answers (fractions in [0, 1])."""
    results = [dev.matcher.evaluate(text, ref) for text, ref in zip(texts, dev.references)]
    fields = [parse_output(text).fields for text in texts]
    calls = ["".join(f["api_call"].split()) for f in fields]
    answered = Counter(call for call in calls if call)
    references = Counter("".join(str(ref.get("api_call", "")).split()) for ref in dev.references)
    n = len(texts)
    top_share = answered.most_common(1)[0][1] / n if answered else 0.0
    reference_top = references.most_common(1)[0][1] / n if references else 0.0
    return {
        "exact_match": sum(r.exact for r in results) / n,
        "accuracy": sum(r.outcome == "correct" for r in results) / n,
        "hallucination": sum(r.outcome == "hallucination" for r in results) / n,
        "incomplete_fraction": sum(any(not f[name].strip() for name in FIELDS) for f in fields) / n,
        "mean_tokens": sum(n_tokens) / n,
        "distinct_api_calls": len(answered),
        "reference_distinct_api_calls": len(references),
        "top_api_call_share": top_share,
        "collapse": top_share > COLLAPSE_SHARE and reference_top <= COLLAPSE_SHARE,
    }


def exec_rate(codes: list[str], cfg: Any) -> float:
    """The share of snippets passing `cfg.dev_exec_tier` in the sandbox (the evaluator's own code)."""
    from rlaif_code.sandbox.tiers import extract_code
    from rlaif_code.sandbox.verdicts import ExecSettings, executability

    settings = ExecSettings(tier=cfg.dev_exec_tier, mode="hermetic", workers=2, env=cfg.dev_exec_env,
                            timeout=60.0, data=cfg.data, api_db=cfg.api_db)
    verdicts, _ = executability([extract_code(code) for code in codes], settings)
    return sum(bool(getattr(v, cfg.dev_exec_tier)) for v in verdicts) / len(verdicts)


def evaluate_policy(policy: Any, tokenizer: Any, dev: DevSet, cfg: Any) -> dict[str, Any]:
    """Greedy answers to the dev prompts, scored (`answer_metrics`, and `exec` with a tier)."""
    from rlaif_code.sample.generate import generate_stream

    was_training = policy.training
    policy.eval()
    answers: list[Any] = [None] * len(dev.prompts)
    for row, generation in generate_stream(policy, tokenizer, dev.prompts, batch_size=cfg.dev_batch_size,
                                           max_new_tokens=cfg.max_new_tokens, temperature=0.0,
                                           max_prompt_tokens=cfg.max_prompt_tokens):
        answers[row] = generation
    policy.train(was_training)
    texts = [a.text for a in answers]
    metrics = answer_metrics(dev, texts, [a.n_tokens for a in answers])
    if cfg.dev_exec_tier != "none":
        metrics["exec"] = exec_rate([parse_output(text).fields["code"] for text in texts], cfg)
    return metrics


@dataclass
class Selection:
    """The best dev step so far; -1 before any evaluation."""

    best_step: int = -1
    best_value: float = float("-inf")
    evals_since_best: int = 0
    stopped: str | None = None  # why PPO stopped early: a run resumed after that stop does not go on
    start_top_share: float | None = None  # step 0's top_api_call_share: what collapse is measured against

    def offer(self, step: int, value: float, eligible: bool) -> bool:
        """Record a dev evaluation; True when `step` becomes the best."""
        if eligible and value > self.best_value:
            self.best_step, self.best_value, self.evals_since_best = step, value, 0
            return True
        self.evals_since_best += 1
        return False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, state: dict[str, Any] | None) -> "Selection":
        return cls(**state) if state else cls()


def best_dir(out_dir: Path, step: int) -> Path:
    return out_dir / BEST / f"step-{step:06d}"


def save_best(out_dir: Path, step: int, policy: Any, tokenizer: Any, cfg: Any, metrics: dict[str, Any]) -> None:
    """The policy's weights as `best/step-NNNNNN/` (a plain model directory), renamed into place."""
    import os

    from rlaif_code.core.artifacts import write_stage_record
    from rlaif_code.core.models import save_model

    final = best_dir(out_dir, step)
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(policy, tokenizer, tmp)
    write_stage_record(tmp, "ppo-dev-best", cfg, metrics={"step": step, **metrics})
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def prune_best(out_dir: Path, keep_from: int, drop_after: int | None = None) -> None:
    """Remove best/ folders older than `keep_from` (superseded) and, on a resume, newer than
    `drop_after` (their steps will be redone)."""
    root = out_dir / BEST
    for path in root.glob("*step-*") if root.is_dir() else []:
        step = int(path.name.rsplit("-", 1)[1].split(".")[0])
        if path.name.startswith(".") or step < keep_from or (drop_after is not None and step > drop_after):
            shutil.rmtree(path, ignore_errors=True)


def selected_model_dir(out_dir: Path, selection: Selection, sft_dir: str) -> Path:
    """Where the selected weights are: best/step-NNNNNN, or the SFT model itself for step 0."""
    if selection.best_step <= 0:
        return Path(sft_dir)
    path = best_dir(out_dir, selection.best_step)
    record = read_stage_record(path) if path.is_dir() else None
    if record is None or (record.get("metrics") or {}).get("step") != selection.best_step:
        raise InputError(f"{path}: the selected dev-best weights (step {selection.best_step}) are missing; rerun "
                         "PPO in a new out_dir")
    return path


def write_outputs(cfg: Any, out_dir: Path, selection: Selection | None, last_policy: Any, tokenizer: Any,
                  result: dict[str, Any]) -> dict[str, Any]:
    """`model/` carrying the config, then stage.json: the dev-best weights (best/step-NNNNNN, or the SFT
    model itself when step 0 won) under a selection, else `last_policy` (LoRA merged). Main process only."""
    import os

    from rlaif_code.core.artifacts import write_stage_record
    from rlaif_code.core.models import resolve_model, save_model

    model_dir, tmp = out_dir / "model", out_dir / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    if selection is None:
        save_model(last_policy, tokenizer, tmp)
    else:
        source = selected_model_dir(out_dir, selection, resolve_model(cfg.policy))
        shutil.copytree(source, tmp, ignore=shutil.ignore_patterns("stage.json", "checkpoints", "tb"))
    write_stage_record(tmp, "ppo", cfg, metrics=result)
    shutil.rmtree(model_dir, ignore_errors=True)
    os.replace(tmp, model_dir)
    result["model_dir"] = str(model_dir)
    write_stage_record(out_dir, "ppo", cfg, metrics=result, outputs=["metrics.jsonl"])
    return result


class DevSelector:
    """What the PPO loop asks after each step: is it a dev step, is it the best, must PPO stop?"""

    def __init__(self, cfg: Any, dev: DevSet | None, selection: Selection, out_dir: Path, start_step: int,
                 is_main: bool) -> None:
        from rlaif_code.ppo.logger import resumed_appender

        self.cfg, self.dev, self.selection, self.out_dir, self.is_main = cfg, dev, selection, out_dir, is_main
        self.log = resumed_appender(out_dir / "dev.jsonl", start_step) if is_main and dev is not None else None
        self.recent_kl = self._recent_kl(start_step)

    def _recent_kl(self, start_step: int) -> list[float]:
        # the KL of the steps before a resume point, so that the budget reads the same window as an unbroken run
        from rlaif_code.core.artifacts import read_jsonl

        path = self.out_dir / "metrics.jsonl"
        rows = read_jsonl(path, tolerate_torn_tail=True) if start_step and path.is_file() else []
        return [row["kl"] for row in rows if 0 < row.get("step", 0) <= start_step][-3:]

    def after_step(self, step: int, kl: float | None, policy: Any, tokenizer: Any, autocast: Any) -> str | None:
        """Record step `step` (0: the SFT model, `kl` None); returns why PPO must stop, or None."""
        import torch

        cfg = self.cfg
        if kl is not None:
            self.recent_kl = (self.recent_kl + [kl])[-3:]
        running_kl = sum(self.recent_kl) / len(self.recent_kl) if self.recent_kl else 0.0
        over_budget = cfg.kl_budget is not None and running_kl > cfg.kl_budget
        stop = (f"KL budget: the mean KL of the last {len(self.recent_kl)} steps, {running_kl:.2f} nats, is over "
                f"kl_budget {cfg.kl_budget}") if over_budget else None
        if self.dev is None or not (step % cfg.dev_every == 0 or step == cfg.total_steps or over_budget):
            self.selection.stopped = stop
            return stop
        with torch.no_grad(), autocast():
            metrics = evaluate_policy(policy, tokenizer, self.dev, cfg)
        if self.selection.start_top_share is None:
            self.selection.start_top_share = metrics["top_api_call_share"]
        metrics["collapse"] = bool(metrics["collapse"] and metrics["top_api_call_share"]
                                   > self.selection.start_top_share + COLLAPSE_MARGIN)
        # a step past the budget, or one whose answers collapsed onto one API, is never handed back
        improved = self.selection.offer(step, metrics[cfg.select_metric],
                                        eligible=not over_budget and not metrics["collapse"])
        if self.is_main:
            if improved and step > 0:
                save_best(self.out_dir, step, policy, tokenizer, cfg, metrics)
            self.log.write({"step": step, "kl": running_kl, "best": improved, **metrics})
            self._print(step, metrics, improved)
        if stop is None and cfg.patience and self.selection.evals_since_best >= cfg.patience:
            stop = (f"patience: {cfg.patience} dev evaluations without a better {cfg.select_metric} than step "
                    f"{self.selection.best_step}'s {self.selection.best_value:.4f}")
        self.selection.stopped = stop
        return stop

    def _print(self, step: int, metrics: dict[str, Any], improved: bool) -> None:
        line = (f"dev step {step:>5}  exact {metrics['exact_match']:.3f}  accuracy {metrics['accuracy']:.3f}  "
                f"halluc. {metrics['hallucination']:.3f}  distinct calls {metrics['distinct_api_calls']}/"
                f"{metrics['reference_distinct_api_calls']}  len {metrics['mean_tokens']:.1f}"
                + ("  (best so far)" if improved else ""))
        print(line, flush=True)
        if metrics["collapse"]:
            start = self.selection.start_top_share or 0.0
            print(f"WARNING: collapse at step {step}: {metrics['top_api_call_share']:.0%} of the dev answers call "
                  f"the same API (no API covers half of the references; step 0: {start:.0%}); this step will not "
                  "be selected", flush=True)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()

"""The report's feedback and reward-model sections: each figure a reader needs, in a table of its own,
and nothing that says nothing (no judge table under the tools judge, no empty error counts)."""

from __future__ import annotations

from typing import Any

from rlaif_code.report.tables import fmt, num


def _percent(value: Any) -> str:
    return fmt(value) if isinstance(value, (int, float)) else "–"


def _outcome_rows(outcomes: dict[str, dict[str, Any]]) -> list[list[str]]:
    """The labels against each evaluation outcome (labelling.agreement_with_outcomes' figures)."""
    return [["outcome", "rate %", "accepted % if yes", "accepted % if no", "% of accepted"]] + [
        [name, _percent(o.get("rate")), _percent(o.get("accepted_if_yes")), _percent(o.get("accepted_if_no")),
         _percent(o.get("share_of_accepted"))] for name, o in outcomes.items()]


def feedback_tables(feedback: dict[str, Any]) -> list[tuple[str, list[list[str]]]]:
    """(caption, rows) for the feedback section."""
    tables = []
    labels = [["answers", "accepted", "accepted %", "labelling", "threshold", "contrast rate %",
               "prompts with 2+ answers", "duplicate answers"],
              [num(feedback.get("n_answers")), num(feedback.get("accepted")),
               _percent(feedback.get("accepted_fraction")), str(feedback.get("threshold_mode", "–")),
               num(feedback.get("threshold")), _percent(feedback.get("contrast_rate")),
               num(feedback.get("prompts_with_several_answers")), num(feedback.get("duplicate_answers"))]]
    tables.append(("Labels (contrast rate: prompts whose answers got different labels)", labels))
    yes = feedback.get("yes_rate_by_question") or {}
    unparseable = feedback.get("unparseable_by_question") or {}
    skipped = set(feedback.get("skipped_llm_questions") or [])
    questions = [["question", "yes %", "unparseable"]] + [
        [q, "not asked (tools judge)" if q in skipped else _percent(rate), num(unparseable.get(q, 0))]
        for q, rate in yes.items()]
    tables.append(("Rubric questions", questions))
    outcomes = feedback.get("label_vs_outcomes") or {}
    if outcomes:
        tables.append(("Labels against the evaluation's outcomes", _outcome_rows(outcomes)))
    if feedback.get("exec_snippets") is not None:
        tables.append(("Sandbox runs (code_executes)", [
            ["distinct snippets", "run this time", "pass %"],
            [num(feedback["exec_snippets"]), num(feedback.get("exec_snippets_run")),
             _percent(feedback.get("exec_pass_rate"))]]))
    stats = feedback.get("judge_stats") or {}
    if stats.get("requests"):
        errors = stats.get("errors") or {}
        tables.append(("LLM judge", [["requests", "retries", "prompt tokens", "completion tokens", "cost USD",
                                      "errors"],
                                     [num(stats.get("requests")), num(stats.get("retries")),
                                      num(stats.get("prompt_tokens")), num(stats.get("completion_tokens")),
                                      num(stats.get("cost_usd")),
                                      ", ".join(f"{k}: {v}" for k, v in errors.items()) or "none"]]))
    return tables


def reward_tables(reward: dict[str, Any]) -> list[tuple[str, list[list[str]]]]:
    """(caption, rows) for the reward-model section."""
    tables = [("Training rows", [
        ["labelled answers", "duplicates dropped", "built from references", "train", "held-out", "train positive %"],
        [num(reward.get("n_rows")), num(reward.get("duplicates_dropped")), num(reward.get("n_synthetic")),
         num(reward.get("n_train")), num(reward.get("n_heldout")), _percent(reward.get("train_positive_rate"))]])]
    if reward.get("heldout_n"):
        tables.append(("Held-out prompts (majority: what always predicting the commoner label scores; a sibling "
                       "is another answer to the same prompt, one that does not call the reference API)", [
            ["accuracy %", "balanced accuracy %", "majority %", "ROC-AUC", "exact-API ROC-AUC",
             "exact API above a sibling %", "sibling pairs"],
            [_percent(reward.get("heldout_accuracy")), _percent(reward.get("heldout_balanced_accuracy")),
             _percent(reward.get("heldout_majority_accuracy")), num(reward.get("heldout_roc_auc")),
             num(reward.get("heldout_exact_api_roc_auc")), _percent(reward.get("heldout_exact_api_within_prompt")),
             num(reward.get("heldout_exact_api_within_prompt_pairs"))]]))
    probes = dict(reward.get("probe_accuracy") or {})
    pairs = probes.pop("n_pairs", {})
    if probes:
        tables.append(("Probes on held-out prompts: how often the reference answer outscores each broken variant",
                       [["negative", "reference ranked higher %", "pairs"]]
                       + [[kind, _percent(acc), num(pairs.get(kind))] for kind, acc in probes.items()]))
    return tables


def judge_tables(judge: dict[str, Any]) -> list[tuple[str, list[list[str]]]]:
    """(caption, rows) for `rlaif judge-check`'s agreement of an LLM judge with the tool checks."""
    def row(name: str, tool: str, a: dict[str, Any]) -> list[str]:
        return [name, tool, num(a.get("n")), num(a.get("n_compared")), _percent(a.get("accuracy")),
                num(a.get("kappa")) if a.get("kappa") is not None else "undefined",
                num(a.get("tool_yes")), num(a.get("judge_yes")), num(a.get("judge_unparseable"))]

    rows = [["question", "tool", "asked", "both answered", "agreement %", "Cohen's kappa", "tool yes",
             "judge yes", "judge unparseable"]]
    rows += [row(q, str(a.get("tool", "")), a) for q, a in (judge.get("per_question") or {}).items()]
    rows.append(row("all questions", "", judge.get("pooled") or {}))
    tables = [(f"Judge {judge.get('judge', '?')} against the tool checks on {num(judge.get('n_answers'))} answers "
               "(kappa corrects agreement for chance; undefined when both sides gave one answer throughout)", rows)]
    per_outcome = {k: v for k, v in (judge.get("labels_vs_outcomes") or {}).items() if isinstance(v, dict)}
    if per_outcome:
        tables.append(("What the feedback labels mean: the evaluation's outcomes among the labelled answers",
                       _outcome_rows(per_outcome)))
    return tables


def dev_tables(dev_rows: list[dict[str, Any]], ppo: dict[str, Any]) -> list[tuple[str, list[list[str]]]]:
    """The dev-set curve PPO selected its output on, the selected step, and why PPO stopped."""
    if not dev_rows:
        return []
    selected = ppo.get("selected_step")
    caption = (f"Dev-set selection: the output is step {selected} by {ppo.get('select_metric')}"
               + (" (the SFT model itself)" if selected == 0 else "")
               + (f"; PPO stopped early: {ppo['stopped']}" if ppo.get("stopped") else ""))
    rows = [["step", "exact %", "accuracy %", "hallucination %", "incomplete %", "distinct calls", "mean tokens",
             "KL (last 3 steps)", ""]]
    for row in dev_rows:
        flags = ["selected" if row["step"] == selected else "", "COLLAPSE" if row.get("collapse") else ""]
        rows.append([str(row["step"]), _percent(row.get("exact_match")), _percent(row.get("accuracy")),
                     _percent(row.get("hallucination")), _percent(row.get("incomplete_fraction")),
                     f"{row.get('distinct_api_calls')}/{row.get('reference_distinct_api_calls')}",
                     num(row.get("mean_tokens")), num(row.get("kl")), " ".join(f for f in flags if f)])
    return [(caption, rows)]

"""Dev-set selection and the KL budget: the output is the dev-best step (the SFT model counting as
step 0), a run past its KL budget stops and says so, and a resumed run selects as an unbroken one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlaif_code.core.artifacts import InputError, read_jsonl, read_stage_record
from rlaif_code.core.config import ConfigError
from rlaif_code.data.apibench import load_api_database
from rlaif_code.data.ast_match import AstMatcher
from rlaif_code.data.source import DataSource
from rlaif_code.ppo import PPOConfig, dev, run
from tiny import make_data_dir


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, gorilla_data: Path) -> Path:
    return make_data_dir(tmp_path_factory.mktemp("data"), gorilla_data, max_train=20, dev_fraction=0.1)  # 2 dev


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_selection_keeps_the_earlier_step_on_a_tie_and_never_an_ineligible_one() -> None:
    selection = dev.Selection()
    assert selection.offer(0, 0.5, eligible=True)
    assert not selection.offer(10, 0.5, eligible=True)  # a tie: less drift from SFT wins
    assert not selection.offer(20, 0.9, eligible=False)  # over the KL budget, or collapsed
    assert selection.offer(30, 0.6, eligible=True)
    assert (selection.best_step, selection.evals_since_best) == (30, 0)
    assert not selection.offer(40, 0.1, eligible=True) and selection.evals_since_best == 1
    assert dev.Selection.from_dict(selection.to_dict()) == selection


def test_collapse_is_most_answers_calling_one_api_while_the_references_vary(gorilla_data: Path) -> None:
    matcher = AstMatcher(load_api_database(DataSource(gorilla_data, downloads=False), "th"), "th")
    references = [{"domain": "Classification", "api_call": f"torch.hub.load(repo_or_dir='pytorch/vision', "
                   f"model='{m}', pretrained=True)"} for m in ("resnet18", "vgg11", "alexnet", "resnet50")]
    dev_set = dev.DevSet(["p"] * 4, references, matcher)

    def answer(model: str) -> str:
        return (f" <<<domain>>>: Classification\n<<<api_call>>>: torch.hub.load('pytorch/vision', '{model}', "
                f"pretrained=True)\n<<<api_provider>>>: PyTorch\n<<<explanation>>>: x\n<<<code>>>: import torch")

    varied = dev.answer_metrics(dev_set, [answer(m) for m in ("resnet18", "vgg11", "alexnet", "resnet18")], [9] * 4)
    assert varied["exact_match"] == 0.75 and varied["accuracy"] == 1.0 and not varied["collapse"]
    one = dev.answer_metrics(dev_set, [answer("resnet50")] * 3 + [" <<<domain>>>: Classification"], [9] * 4)
    assert one["collapse"] and one["distinct_api_calls"] == 1 and one["top_api_call_share"] == 0.75
    assert one["incomplete_fraction"] == 0.25 and one["exact_match"] == 0.0


def test_no_dev_set_and_bad_settings_are_clear_errors(tiny_cfg, count_e, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="dev.jsonl: no dev set.*dev_fraction.*dev_every: 0"):
        run(tiny_cfg(dev_every=1, data_dir=str(tmp_path / "nowhere")), count_e)
    with pytest.raises(ConfigError, match="'kl_budget' .* must be above 'kl_target'"):
        PPOConfig(kl_mode="adaptive", kl_target=2.0, kl_budget=1.0)
    with pytest.raises(ConfigError, match="'select_metric' exec needs 'dev_exec_tier'"):
        PPOConfig(select_metric="exec")


def test_a_run_whose_dev_score_never_beats_sft_hands_back_the_sft_model(tiny_cfg, count_e, data_dir: Path) -> None:
    cfg = tiny_cfg(dev_every=1, data_dir=str(data_dir), total_steps=2, learning_rate=1e-2)
    result = run(cfg, count_e)
    # a random tiny model never names the reference API: every step ties step 0, which is kept
    assert result["selected_step"] == 0 and result["select_metric"] == "exact_match"
    assert same_weights(Path(cfg.out_dir) / "model", Path(cfg.policy))
    rows = read_jsonl(Path(cfg.out_dir) / "dev.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2] and [r["best"] for r in rows] == [True, False, False]
    assert read_stage_record(Path(cfg.out_dir) / "model")["metrics"]["selected_step"] == 0


def script_dev_scores(monkeypatch, exact: dict[int, float], top_share: dict[int, float] | None = None,
                      collapse: bool = False) -> None:
    """Replaces the dev evaluation with scripted figures, the n-th call getting entry n (step 0 first)."""
    calls: list[int] = []

    def scripted(policy, tokenizer, dev_set, cfg):
        step = len(calls)
        calls.append(step)
        return {"exact_match": exact[step], "accuracy": 0.0, "hallucination": 0.0, "incomplete_fraction": 0.0,
                "mean_tokens": 1.0, "distinct_api_calls": 2, "reference_distinct_api_calls": 9,
                "top_api_call_share": top_share[step] if top_share else 0.5, "collapse": collapse}

    monkeypatch.setattr(dev, "evaluate_policy", scripted)


def test_the_dev_best_step_is_the_output_and_a_resume_continues_the_selection(tiny_cfg, count_e, data_dir: Path,
                                                                              monkeypatch) -> None:
    """The dev scores are scripted (a tiny model cannot earn real ones); the loop, the saves, the
    checkpointed selection and the final copy run for real."""
    script_dev_scores(monkeypatch, exact={0: 0.1, 1: 0.2, 2: 0.5, 3: 0.3, 4: 0.4})
    cfg = tiny_cfg(dev_every=1, data_dir=str(data_dir), total_steps=3, save_every=1)
    assert run(cfg, count_e)["selected_step"] == 2
    out = Path(cfg.out_dir)
    assert same_weights(out / "model", out / "best" / "step-000002")
    assert sorted(p.name for p in (out / "best").iterdir()) == ["step-000002"]  # superseded bests pruned
    # a longer budget resumes at step 3, with step 2 still the best to beat
    longer = run(tiny_cfg(dev_every=1, data_dir=str(data_dir), total_steps=4, save_every=1), count_e)
    assert longer["resumed_from_step"] == 3 and longer["selected_step"] == 2
    assert [r["step"] for r in read_jsonl(out / "dev.jsonl")] == [0, 1, 2, 3, 4]


def test_collapse_is_measured_against_the_sft_models_own_favourite(tiny_cfg, count_e, data_dir: Path,
                                                                   monkeypatch) -> None:
    """The full TorchHub run's SFT model sent 67% of its greedy dev answers to one API: that is where RL
    starts, not a collapse (step 0 stays eligible); a step that concentrates further is one."""
    # step 1 within the margin of step 0, step 2 beyond it; answer_metrics' absolute signal says collapse
    script_dev_scores(monkeypatch, exact={0: 0.1, 1: 0.2, 2: 0.5}, top_share={0: 0.67, 1: 0.7, 2: 0.9},
                      collapse=True)
    cfg = tiny_cfg(dev_every=1, data_dir=str(data_dir), total_steps=2, save_every=1)
    result = run(cfg, count_e)
    rows = read_jsonl(Path(cfg.out_dir) / "dev.jsonl")
    assert [r["collapse"] for r in rows] == [False, False, True]
    assert result["selected_step"] == 1  # step 2 scored best but collapsed


def test_the_kl_budget_stops_ppo_and_says_so(tiny_cfg, count_e, data_dir: Path) -> None:
    cfg = tiny_cfg(dev_every=5, data_dir=str(data_dir), total_steps=4, kl_mode="fixed", kl_budget=1e-9,
                   learning_rate=1e-2)
    result = run(cfg, count_e)
    # step 1 samples from the SFT policy itself (KL 0); its update moves the policy, step 2 is past the budget
    assert result["steps"] == 2 and "KL budget" in result["stopped"]
    assert [r["step"] for r in read_jsonl(Path(cfg.out_dir) / "metrics.jsonl")] == [1, 2]
    # the step past the budget was evaluated but cannot be selected: the SFT model is the output
    assert result["selected_step"] == 0
    # killed after the stop's checkpoint (the final model and stage.json lost): the rerun does not go on
    (Path(cfg.out_dir) / "stage.json").unlink()
    again = run(cfg, count_e)
    assert again["steps"] == 2 and "KL budget" in again["stopped"] and again["resumed_from_step"] == 2
    assert len(read_jsonl(Path(cfg.out_dir) / "metrics.jsonl")) == 2

"""Bring your own API docs: an invented API database through synth, data, SFT, sample, feedback and eval."""

from __future__ import annotations

import json
from pathlib import Path

from rlaif_code.core.artifacts import read_jsonl, read_stage_record
from rlaif_code.data import DataConfig
from rlaif_code.data import run as run_data
from rlaif_code.data.source import DataSource
from rlaif_code.evaluate.stage import EvalConfig, evaluate
from rlaif_code.feedback import FeedbackConfig
from rlaif_code.feedback import run as run_feedback
from rlaif_code.sample.stage import SampleConfig
from rlaif_code.sample.stage import run as run_sample
from rlaif_code.sandbox.hub_ids import known_hub_ids
from rlaif_code.sft.stage import SFTConfig
from rlaif_code.sft.stage import run as run_sft
from rlaif_code.synth import SynthConfig
from rlaif_code.synth import run as run_synth
from tiny import CUSTOM_APIS, custom_answer, write_custom_hub

RUBRIC = """name: api checks
questions:
  - {id: complete, text: 'complete?', weight: 1, by: answer_complete}
  - {id: exists, text: 'exists?', weight: 1, by: api_exists}
  - {id: domain, text: 'domain?', weight: 1, by: domain_matches}
  - {id: reference, text: 'reference?', weight: 1, by: api_matches_reference}
  - {id: arguments, text: 'arguments?', weight: 1, by: arguments_match_reference}
"""

# Hand-made answers to the four eval items, in order: a detector of the right domain that is not the
# reference (correct, not exact), the reference itself, the forecaster for another region (matches no
# API: hallucination), the argument-less SDK call (exact).
ANSWERS = [
    custom_answer(CUSTOM_APIS[1], "model = AutoModel.from_pretrained('acme/gadget-detector')"),
    custom_answer(CUSTOM_APIS[2], "model = torch.hub.load('acme/zoo', 'ears', pretrained=True)"),
    custom_answer(CUSTOM_APIS[3], "f = acme_sdk.Forecaster(horizon=7, region='us')").replace("'eu'", "'us'"),
    custom_answer(CUSTOM_APIS[4], "print(acme_sdk.list_models())"),
]


def test_a_custom_api_database_through_every_stage(tmp_path: Path, tiny_dir: Path, one_torch_thread) -> None:
    api_db, eval_file = write_custom_hub(tmp_path / "hub")
    hub = {"hub": "custom", "api_db": str(api_db)}

    synth = run_synth(SynthConfig(**hub, eval_file=str(eval_file), per_api=3, out_dir=str(tmp_path / "synth")))
    assert synth["n_examples"] == 3 * len(CUSTOM_APIS) and synth["n_apis"] == len(CUSTOM_APIS)
    recorded = read_stage_record(tmp_path / "synth")["metrics"]
    assert {"n_examples", "removed_by_overlap", "max_overlap_after_filter", "seconds"} <= set(recorded)

    data_dir = tmp_path / "data"
    data = run_data(DataConfig(**hub, eval_file=str(eval_file), extra_train_files=[str(tmp_path / "synth" /
                                                                                       "synth.jsonl")],
                               dev_fraction=0.0, out_dir=str(data_dir)))
    assert (data["n_train"], data["n_eval"]) == (3 * len(CUSTOM_APIS), 4)

    run_sft(SFTConfig(model=str(tiny_dir), data_dir=str(data_dir), out_dir=str(tmp_path / "sft"), max_steps=1,
                      batch_size=4, max_length=256, save_steps=1, logging_steps=1, report_to="none"))
    run_sample(SampleConfig(model=str(tmp_path / "sft"), data_dir=str(data_dir), split="eval", num_samples=1,
                            max_new_tokens=8, temperature=0.0, device="cpu", out_dir=str(tmp_path / "sample")))
    rubric = tmp_path / "rubric.yaml"
    rubric.write_text(RUBRIC)
    tiny_feedback = run_feedback(FeedbackConfig(samples=str(tmp_path / "sample" / "samples.jsonl"),
                                                data_dir=str(data_dir), api_db=str(api_db), rubric=str(rubric),
                                                threshold_mode="absolute", out_dir=str(tmp_path / "fb-tiny")))
    assert tiny_feedback["n_answers"] == 4
    tiny_eval = evaluate(EvalConfig(**hub, eval_set=str(data_dir / "eval.jsonl"), metrics=["ast"],
                                    responses=str(tmp_path / "sample" / "samples.jsonl"), show_table=False))
    assert tiny_eval["n"] == 4

    # Hand-made answers: the feedback's tool checks and the evaluation agree on what each one is.
    eval_rows = read_jsonl(data_dir / "eval.jsonl")
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps({"example_id": row["example_id"], "sample_id": 0, "text": text}) + "\n"
                               for row, text in zip(eval_rows, ANSWERS)))
    run_feedback(FeedbackConfig(samples=str(answers), data_dir=str(data_dir), api_db=str(api_db),
                                rubric=str(rubric), threshold_mode="absolute", out_dir=str(tmp_path / "fb")))
    verdicts = [{q: a["answer"] for q, a in row["answers"].items()}
                for row in read_jsonl(tmp_path / "fb" / "feedback.jsonl")]
    assert [v["exists"] for v in verdicts] == ["yes", "yes", "no", "yes"]
    assert [v["domain"] for v in verdicts] == ["yes", "yes", "no", "yes"]
    assert [v["reference"] for v in verdicts] == ["no", "yes", "no", "yes"]
    assert [v["arguments"] for v in verdicts] == ["no", "yes", "no", "yes"]

    result = evaluate(EvalConfig(**hub, eval_set=str(data_dir / "eval.jsonl"), metrics=["ast"],
                                 responses=str(answers), show_table=False))
    assert [item["outcome"] for item in result["items"]] == ["correct", "correct", "hallucination", "correct"]
    assert [item["exact_match"] for item in result["items"]] == [0.0, 1.0, 0.0, 1.0]
    assert (result["accuracy"], result["hallucination"], result["exact_match"]) == (0.75, 0.25, 0.5)
    assert result["items"][0]["matched_api"] == "acme/gadget-detector"


def test_hermetic_mode_knows_the_custom_databases_ids_alone(tmp_path: Path) -> None:
    api_db, _ = write_custom_hub(tmp_path)
    known = known_hub_ids(DataSource.resolve(None), str(api_db))
    assert {"acme/widget-detector", "acme/gadget-detector"} <= set(known["hf"])
    assert "YituTech/conv-bert-base" not in known["hf"]  # APIBench's ids are not the user's
    assert known["th"] == {"acme/zoo": ["ears"]} and known["tf"] == []

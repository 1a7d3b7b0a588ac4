"""Reward stage on a tiny model, with labels from a rule: does the answer carry an api_call?"""

from __future__ import annotations

import json

import pytest

from rlaif_code.cli import main
from rlaif_code.core.artifacts import InputError, atomic_write_jsonl, read_jsonl, read_stage_record
from rlaif_code.core.config import ConfigError
from rlaif_code.data.parse import parse_output
from rlaif_code.reward import stage as reward
from rlaif_code.reward.labels import LabelledText, exact_api_within_prompt, load_feedback, split_heldout
from rlaif_code.reward.model import (
    check_tokenizers,
    encode_texts,
    load_reward_base,
    load_reward_model,
    score_texts,
    tokenizers_match,
)
from rlaif_code.reward.stage import RewardConfig
from tiny import tiny_tokenizer


@pytest.fixture(scope="module")
def feedback_file(tmp_path_factory, gorilla_data):
    """Two answers per example: the reference, and the reference without its api_call line."""
    root = tmp_path_factory.mktemp("feedback")
    assert main(["data", "--hub", "th", "--data", str(gorilla_data), "--max_train", "12", "--max_eval", "4",
                 "--dev_fraction", "0",
                 "--out_dir", str(root / "data")]) == 0
    rows = []
    for example in read_jsonl(root / "data" / "train.jsonl"):
        good = example["target"]
        bad = "\n".join(line for line in good.split("\n") if "api_call" not in line)
        for sample_id, text in enumerate((good, bad)):
            accepted = bool(parse_output(text).fields["api_call"])
            rows.append({"example_id": example["example_id"], "sample_id": sample_id, "prompt": example["prompt"],
                         "text": text, "label": "accepted" if accepted else "rejected"})
    # one boolean label, to check both spellings are read
    rows[-1]["label"] = rows[-1]["label"] == "accepted"
    path = root / "feedback.jsonl"
    atomic_write_jsonl(path, rows)
    return path


def test_reward_cli_smoke(tiny_dir, feedback_file, tmp_path):
    out = tmp_path / "reward"
    assert main(["reward", "--base_model", str(tiny_dir), "--feedback", str(feedback_file.parent),
                 "--out_dir", str(out), "--max_steps", "4", "--batch_size", "4", "--heldout_fraction", "0.25",
                 "--learning_rate", "0.001", "--max_length", "256",
                 "--synthetic_data_dir", str(feedback_file.parent / "data")]) == 0
    metrics = read_stage_record(out)["metrics"]
    # beside the 24 labelled answers: per training prompt its reference and two broken variants
    n_train_prompts = 12 - metrics["n_heldout"] // 2
    assert metrics["n_rows"] == 24 and metrics["n_synthetic"] == 3 * n_train_prompts
    assert metrics["n_train"] + metrics["n_heldout"] == 24 + metrics["n_synthetic"]
    probes = metrics["probe_accuracy"]
    assert set(probes) == {"truncated", "no_code", "swapped_same_domain", "swapped_other_domain", "invented_name",
                           "n_pairs"}
    assert probes["n_pairs"]["truncated"] == metrics["n_heldout"] // 2 and 0.0 <= probes["truncated"] <= 1.0
    assert metrics["global_step"] == 4
    assert metrics["pos_weight"] == pytest.approx((metrics["n_train"] * (1 - metrics["train_positive_rate"]))
                                                  / (metrics["n_train"] * metrics["train_positive_rate"]))
    assert 0.0 <= metrics["heldout_accuracy"] <= 1.0
    assert 0.0 <= metrics["heldout_roc_auc"] <= 1.0
    assert metrics["heldout_majority_accuracy"] == 0.5

    model, tokenizer = load_reward_model(str(out), device="cpu")
    assert model.config.num_labels == 1 and model.config.pad_token_id == tokenizer.pad_token_id
    assert model.config.reward_max_length == 256
    texts = [row["prompt"] + row["text"] for row in read_jsonl(feedback_file)[:3]]
    scores = score_texts(model, tokenizer, texts, batch_size=2)
    assert len(scores) == 3 and all(isinstance(s, float) for s in scores)


def test_pairwise_items_pair_each_reference_with_its_variants(tiny_dir, feedback_file, tmp_path):
    metrics = reward.run(RewardConfig(base_model=str(tiny_dir), feedback=str(feedback_file),
                                      out_dir=str(tmp_path / "r"), max_steps=2, batch_size=4,
                                      heldout_fraction=0.25, max_length=256,
                                      synthetic_data_dir=str(feedback_file.parent / "data"), pairwise_weight=1.0))
    n_train_prompts = 12 - metrics["n_heldout"] // 2
    # one item per (reference, variant) pair: the reference is repeated, each variant is a rejected text
    assert metrics["n_synthetic"] == metrics["n_train_pairs"] == 2 * n_train_prompts
    n_feedback_train = 24 - metrics["n_heldout"]
    n_texts = n_feedback_train + 2 * metrics["n_synthetic"]
    n_positive = n_feedback_train // 2 + metrics["n_synthetic"]
    assert metrics["train_positive_rate"] == pytest.approx(n_positive / n_texts)
    assert metrics["global_step"] == 2 and 0.0 <= metrics["probe_accuracy"]["swapped_same_domain"] <= 1.0


def test_pairwise_weight_without_synthetic_pairs_is_refused():
    with pytest.raises(ConfigError, match="pairwise_weight"):
        RewardConfig(synthetic_data_dir=None, pairwise_weight=1.0)


def test_scores_do_not_depend_on_batch_padding(tiny_dir):
    model, tokenizer = load_reward_base(str(tiny_dir))
    model.eval()
    short, long = " <<<api_call>>>: x", " <<<api_call>>>: torch.hub.load('pytorch/vision', 'resnet50')" * 3
    alone = score_texts(model, tokenizer, [short], batch_size=1)
    padded = score_texts(model, tokenizer, [short, long], batch_size=2)
    assert padded[0] == pytest.approx(alone[0], abs=1e-4)


def test_balanced_sampler_trains(tiny_dir, feedback_file, tmp_path):
    rows = read_jsonl(feedback_file)
    skewed = [r for r in rows if r["label"] in ("accepted", True)] + \
        [r for r in rows if r["label"] in ("rejected", False)][:4]
    path = tmp_path / "skewed.jsonl"
    atomic_write_jsonl(path, skewed)
    metrics = reward.run(RewardConfig(base_model=str(tiny_dir), feedback=str(path), out_dir=str(tmp_path / "r"),
                                      max_steps=2, batch_size=4, balance="sampler", heldout_fraction=0.0,
                                      synthetic_data_dir=None))
    assert metrics["global_step"] == 2 and metrics["pos_weight"] is None and "heldout_accuracy" not in metrics
    assert metrics["train_positive_rate"] > 0.7


def test_feedback_rows_are_validated_with_file_and_line(tmp_path):
    path = tmp_path / "feedback.jsonl"
    good = {"prompt": "p", "text": " t", "label": "accepted"}
    path.write_text("\n".join(json.dumps(r) for r in (good, {**good, "label": False},
                                                      {**good, "label": "maybe"})) + "\n")
    with pytest.raises(InputError, match=r"feedback.jsonl:3: 'label' = 'maybe'"):
        load_feedback(path)
    path.write_text(json.dumps(good) + "\n" + json.dumps({"prompt": "p", "label": "rejected"}) + "\n")
    with pytest.raises(InputError, match=r"feedback.jsonl:2: missing string field 'text'"):
        load_feedback(path)
    path.write_text(json.dumps(good) + "\nnot json\n")
    with pytest.raises(InputError, match=r"feedback.jsonl:2"):
        load_feedback(path)
    path.write_text("")
    with pytest.raises(InputError, match="no labelled answers"):
        load_feedback(path)
    assert main(["reward", "--feedback", str(path), "--out_dir", str(tmp_path / "o")]) == 2


def test_one_label_only_is_refused(tiny_dir, tmp_path):
    path = tmp_path / "feedback.jsonl"
    atomic_write_jsonl(path, [{"example_id": str(i), "prompt": "p", "text": " t", "label": "accepted"}
                              for i in range(4)])
    with pytest.raises(InputError, match="only accepted"):
        reward.run(RewardConfig(base_model=str(tiny_dir), feedback=str(path), out_dir=str(tmp_path / "r"),
                                synthetic_data_dir=None))


def test_exact_api_ranking_within_a_prompt_ignores_offsets_between_prompts():
    # prompt a's answers all score high, b's all low: pooled, the exact answer of b ranks below every
    # answer of a; within the prompts, a1 beats a2, b1 beats b2 and ties b3 (a half)
    rows = [LabelledText("a", "a1", 1, exact=True), LabelledText("a", "a2", 1, exact=False),
            LabelledText("b", "b1", 1, exact=True), LabelledText("b", "b2", 0, exact=False),
            LabelledText("b", "b3", 0, exact=False), LabelledText("c", "c1", 1, exact=None)]
    scores = [5.0, 4.0, -1.0, -2.0, -1.0, 9.0]
    assert exact_api_within_prompt(scores, rows) == {
        "heldout_exact_api_within_prompt": (1 + 1 + 0.5) / 3, "heldout_exact_api_within_prompt_pairs": 3}
    assert exact_api_within_prompt(scores[:2], rows[:1] + rows[5:]) == {
        "heldout_exact_api_within_prompt": None, "heldout_exact_api_within_prompt_pairs": 0}


def test_heldout_split_keeps_each_prompt_on_one_side():
    rows = [LabelledText(group=f"g{i // 3}", text=str(i), label=i % 2) for i in range(30)]
    train, heldout = split_heldout(rows, 0.2, seed=1)
    assert len(heldout) == 6 and len(train) == 24
    assert not {r.group for r in train} & {r.group for r in heldout}
    assert split_heldout(rows, 0.2, seed=1) == (train, heldout)


def test_long_texts_keep_their_end_and_finish_with_eos():
    tokenizer = tiny_tokenizer()
    text = "###Instruction: " + "very long context " * 50 + "###Output: <<<api_call>>>: torch.hub.load"
    (ids,) = encode_texts(tokenizer, [text], max_length=32)
    assert len(ids) == 32 and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids[:-1]).endswith("torch.hub.load")


def test_tokenizer_mismatch_is_refused_unless_retokenizing(tmp_path):
    tokenizer = tiny_tokenizer()
    tokenizer.save_pretrained(tmp_path / "same")
    from transformers import AutoTokenizer

    same = AutoTokenizer.from_pretrained(tmp_path / "same")
    assert tokenizers_match(tokenizer, same)
    assert check_tokenizers(tokenizer, same, retokenize=False) is False
    grown = AutoTokenizer.from_pretrained(tmp_path / "same")
    grown.add_tokens(["<<<api_call>>>"])
    assert not tokenizers_match(tokenizer, grown)
    with pytest.raises(InputError, match="tokenizer differs"):
        check_tokenizers(tokenizer, grown, retokenize=False)
    assert check_tokenizers(tokenizer, grown, retokenize=True) is True

"""SFT stage on a tiny model and a handful of TorchHub examples."""

from __future__ import annotations

import json

import pytest

from rlaif_code.cli import main
from rlaif_code.core.artifacts import InputError, read_stage_record
from rlaif_code.core.models import load_causal_lm
from rlaif_code.sft import stage as sft
from rlaif_code.sft.stage import LoraSettings, SFTConfig
from tiny import make_data_dir


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, gorilla_data):
    return make_data_dir(tmp_path_factory.mktemp("data"), gorilla_data, max_train=8, max_eval=4)


def _cfg(tiny_dir, data_dir, out, **kwargs) -> SFTConfig:
    base = dict(model=str(tiny_dir), data_dir=str(data_dir), out_dir=str(out), max_steps=2, batch_size=4,
                save_steps=2, logging_steps=1, max_length=256, learning_rate=1e-3)
    return SFTConfig(**{**base, **kwargs})


def test_sft_cli_smoke(tiny_dir, data_dir, tmp_path):
    out = tmp_path / "sft"
    argv = ["sft", "--model", str(tiny_dir), "--data_dir", str(data_dir), "--out_dir", str(out),
            "--max_steps", "2", "--batch_size", "4", "--logging_steps", "1", "--max_length", "256"]
    assert main(argv) == 0
    record = read_stage_record(out)
    assert record["stage"] == "sft" and record["config"]["model"] == str(tiny_dir)
    metrics = record["metrics"]
    assert metrics["global_step"] == 2 and metrics["n_examples"] == 8
    assert metrics["train_loss"] > 0 and metrics["tokens_per_s"] > 0 and metrics["wall_time_s"] > 0
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert list((out / "tb").glob("events.out.tfevents.*")), "TensorBoard events belong in out_dir/tb"
    model, tokenizer = load_causal_lm(out, device="cpu")  # one plain directory
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    # The same config again is a finished stage: skipped.
    assert main(argv) == 0
    assert read_stage_record(out)["finished_at"] == record["finished_at"]


def test_loss_mask_covers_only_the_answer_and_its_eos(tiny_dir, data_dir, tmp_path):
    trainer = sft.build_trainer(_cfg(tiny_dir, data_dir, tmp_path / "sft"))
    tokenizer = trainer.processing_class
    rows = sft.load_sft_rows(data_dir)[:3]
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    by_prompt = {}
    for i in range(3):
        ids = batch["input_ids"][i][batch["attention_mask"][i].bool()].tolist()
        by_prompt[tokenizer.decode(ids)] = i
    for row in rows:
        full = row["prompt"] + row["completion"] + tokenizer.eos_token
        i = by_prompt[full]  # the dataset is shuffled: find each row in the batch
        labels = batch["labels"][i]
        n_real = int(batch["attention_mask"][i].sum())
        n_prompt = len(tokenizer(row["prompt"])["input_ids"])
        assert (labels[:n_prompt] == -100).all(), "prompt tokens must not be trained on"
        answer = labels[n_prompt:n_real]
        assert (answer != -100).all()
        assert answer.tolist() == batch["input_ids"][i][n_prompt:n_real].tolist()
        assert answer[-1].item() == tokenizer.eos_token_id, "the model must learn to stop"
        assert (labels[n_real:] == -100).all(), "padding must not be trained on"
        assert tokenizer.decode(answer) == row["completion"] + tokenizer.eos_token


def test_resume_after_a_kill_and_with_a_larger_budget(tiny_dir, data_dir, tmp_path, monkeypatch):
    from transformers import TrainerCallback

    out = tmp_path / "sft"
    cfg = _cfg(tiny_dir, data_dir, out, max_steps=4, save_steps=2, batch_size=2)

    class Killed(RuntimeError):
        pass

    class KillAtStep3(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise Killed("simulated kill after step 3")

    real_build = sft.build_trainer

    def build_with_kill(config):
        trainer = real_build(config)
        trainer.add_callback(KillAtStep3())
        return trainer

    monkeypatch.setattr(sft, "build_trainer", build_with_kill)
    with pytest.raises(Killed):
        sft.run(cfg)
    assert read_stage_record(out) is None, "an interrupted stage must not look finished"
    monkeypatch.setattr(sft, "build_trainer", real_build)

    metrics = sft.run(cfg)
    assert metrics["resumed_from"].endswith("checkpoint-2") and metrics["global_step"] == 4

    more = sft.run(_cfg(tiny_dir, data_dir, out, max_steps=6, save_steps=2, batch_size=2))
    assert more["resumed_from"].endswith("checkpoint-4") and more["global_step"] == 6


def test_resume_is_refused_when_the_training_settings_changed(tiny_dir, data_dir, tmp_path):
    out = tmp_path / "sft"
    sft.run(_cfg(tiny_dir, data_dir, out))
    with pytest.raises(InputError, match="learning_rate"):
        sft.run(_cfg(tiny_dir, data_dir, out, max_steps=3, learning_rate=5e-4))


def test_lora_is_merged_into_a_plain_model(tiny_dir, data_dir, tmp_path):
    out = tmp_path / "sft"
    metrics = sft.run(_cfg(tiny_dir, data_dir, out, max_steps=1, lora=LoraSettings(enabled=True, r=4, alpha=8),
                           keep_checkpoints=False))
    full_params = sum(p.numel() for p in load_causal_lm(tiny_dir, device="cpu")[0].parameters())
    assert metrics["lora"] and 0 < metrics["trainable_parameters"] < full_params
    assert not (out / "adapter_config.json").exists() and not (out / "checkpoints").exists()
    model, _ = load_causal_lm(out, device="cpu")
    assert not any("lora" in name for name, _ in model.named_parameters())


def test_bad_inputs(tiny_dir, data_dir, tmp_path):
    empty = tmp_path / "empty_data"
    empty.mkdir()
    (empty / "train.jsonl").write_text("")
    with pytest.raises(InputError, match="no training examples"):
        sft.run(_cfg(tiny_dir, empty, tmp_path / "a"))
    broken = tmp_path / "broken_data"
    broken.mkdir()
    (broken / "train.jsonl").write_text('{"prompt": "###Instruction: x\\n###Output:", "target": " y"}\n'
                                        '{"prompt": "###Instruction: z\\n###Output:"}\n')
    with pytest.raises(InputError, match=r"train.jsonl:2: .*'target'"):
        sft.run(_cfg(tiny_dir, broken, tmp_path / "b"))
    assert main(["sft", "--model", str(tmp_path / "no_such_model"), "--data_dir", str(data_dir),
                 "--out_dir", str(tmp_path / "c")]) == 2


def test_group_by_length_batches_rows_of_similar_length(tiny_dir, data_dir, tmp_path):
    """With group_by_length each batch holds rows of about the same length, so it pads less than a
    random batching of the same rows; every row is still trained on once per epoch."""
    def padding_and_rows(**kwargs):
        trainer = sft.build_trainer(_cfg(tiny_dir, data_dir, tmp_path / "sft", batch_size=2, **kwargs))
        padded = real = 0
        seen = []
        for batch in trainer.get_train_dataloader():
            mask = batch["attention_mask"]
            padded, real = padded + mask.numel(), real + int(mask.sum())
            seen += [int(n) for n in mask.sum(1)]
        return padded / real, sorted(seen)

    grouped, grouped_rows = padding_and_rows(group_by_length=True)
    shuffled, shuffled_rows = padding_and_rows()
    assert grouped_rows == shuffled_rows  # the same 8 rows either way
    assert grouped < shuffled

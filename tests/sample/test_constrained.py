"""API-constrained decoding: which literals are constrained, that a constrained answer cannot invent an id
and leaves free text alone, and the sample stage's switch."""

from __future__ import annotations

import pytest
import torch

from rlaif_code.core.artifacts import read_jsonl, read_stage_record
from rlaif_code.core.config import ConfigError
from rlaif_code.data.parse import parse_output
from rlaif_code.data.prompts import build_prompt
from rlaif_code.sample import stage as sample
from rlaif_code.sample.constrained import ApiValues, Scan, api_constraint, call_key
from rlaif_code.sample.generate import generate_batch
from rlaif_code.sample.stage import SampleConfig
from tiny import make_data_dir, tiny_causal_lm, write_custom_hub

CALLS = ["torch.hub.load(repo_or_dir='pytorch/vision', model='wide_resnet50_2', pretrained=True)",
         "torch.hub.load(repo_or_dir='pytorch/vision', model='resnet18', pretrained=True)",
         "AutoModel.from_pretrained('acme/widget-detector')",
         "pipeline('summarization', model='acme/summarizer')",
         "this is not python ("]


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here runs on one torch thread (see tests/conftest.py)."""


def _scan(text: str, table: ApiValues) -> tuple[Scan, bool]:
    scan = Scan()
    return scan, scan.feed(text, table)


def test_the_table_holds_each_function_s_string_values_and_keywords():
    table = ApiValues(CALLS)
    assert set(table.values) == {"hub.load", "*.from_pretrained", "pipeline"}  # the broken call is skipped
    assert table.values["hub.load"].sorted == ("pytorch/vision", "resnet18", "wide_resnet50_2")
    assert table.keywords["hub.load"] == {"repo_or_dir", "model"}
    assert set(table.values["pipeline"].sorted) == {"summarization", "acme/summarizer"}
    assert call_key("torch.hub.load") == "hub.load" and call_key("torch.load") == "torch.load"
    assert call_key("AutoTokenizer.from_pretrained") == "*.from_pretrained"  # any class: the id is the model's


@pytest.mark.parametrize("text, constrained", [
    ("<<<api_call>>>: torch.hub.load('pytorch/vision', 'wide", True),  # positional: any of the function's values
    ("<<<api_call>>>: torch.hub.load(repo_or_dir='pytorch/vision', model='wide", True),
    ("<<<code>>>: tok = AutoTokenizer.from_pretrained('acme/", True),  # a tokenizer loads its model's id
    ("<<<code>>>: m = torch.hub.load('pytorch/vision', 'resnet18', force_reload='", False),  # no such keyword
    ("<<<code>>>: w = torch.load('", False),  # torch.load is not torch.hub.load
    ("<<<code>>>: m = torch.hub.load(path.join('", False),  # inside an inner call that is no API's
    ("<<<code>>>: m = torch.hub.load(f'", False),  # an f-string is written by the code, not looked up
    ("<<<explanation>>>: torch.hub.load('", False),  # prose: apostrophes are not literals
])
def test_which_literals_are_constrained(text, constrained):
    scan, valid = _scan(text, ApiValues(CALLS))
    assert valid
    assert (scan.literal is not None and scan.literal.values is not None) == constrained


def test_a_literal_off_every_value_is_reported_and_freed():
    table = ApiValues(CALLS)
    scan, valid = _scan("<<<api_call>>>: torch.hub.load('pytorch/vision', 'wide_resnet50'", table)
    assert not valid  # 'wide_resnet50' is no value: the scan says so, then leaves the literal free
    scan, valid = _scan("<<<api_call>>>: torch.hub.load('pytorch/vision', 'wide_resnet5", table)
    assert valid and scan.literal is not None and scan.literal.values is not None
    scan, valid = _scan("<<<api_call>>>: torch.hub.load('pytorch/vision', 'wide_resnet50_2', pretrained=True)\n"
                        "<<<api_provider>>>: PyTorch", table)
    assert valid and scan.field == "api_provider" and scan.calls == ()


def test_a_call_s_later_literals_take_only_values_passed_beside_the_ones_written():
    table = ApiValues(CALLS + ["pipeline('translation_en_to_fr', model='acme/translator')"])
    scan, valid = _scan("<<<api_call>>>: pipeline('summarization', model='", table)
    # A real model of another task would match no database call (Gorilla counts it a hallucination).
    assert valid and set(scan.literal.values.sorted) == {"summarization", "acme/summarizer"}
    scan, valid = _scan("<<<api_call>>>: pipeline(model='acme/translator', task='", table)
    assert valid and scan.literal.values is None  # free: `task=` is no keyword the database passes a string to
    scan, valid = _scan("<<<api_call>>>: pipeline('acme/translator', '", table)
    assert valid and set(scan.literal.values.sorted) == {"translation_en_to_fr", "acme/translator"}
    scan, valid = _scan("<<<code>>>: m = torch.hub.load('pytorch/vision', 'resnet18')\n"
                        "p = pipeline('", table)  # a new call starts from all of its function's values
    assert valid and "acme/translator" in scan.literal.values.members


def _preferring(scripts: list[list[int]], eos: int):
    """Logits that prefer each row's script by 10 over deterministic noise (the tiny model is random)."""
    def hook(rows, steps, logits, answers):
        noise = torch.Generator().manual_seed(1)
        preferred = torch.rand(logits.shape, generator=noise)
        for slot, (row, step) in enumerate(zip(rows.tolist(), steps.tolist())):
            script = scripts[row]
            preferred[slot, script[step] if step < len(script) else eos] += 10.0
        return preferred
    return hook


def test_a_constrained_answer_cannot_invent_an_id_and_keeps_free_text():
    """Row 0 would write 'wide_resnet50' (torchvision's hubconf has only wide_resnet50_2); row 1 writes only
    database values and free literals. Constrained, row 0's id becomes a database value and row 1 is as it was."""
    model, tok = tiny_causal_lm()
    encode = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    invented = (" <<<domain>>>: Classification\n<<<api_call>>>: torch.hub.load('pytorch/vision', 'wide_resnet50',"
                " pretrained=True)\n<<<api_provider>>>: PyTorch")
    real = (" <<<domain>>>: Classification\n<<<api_call>>>: torch.hub.load('pytorch/vision', 'resnet18',"
            " pretrained=True)\n<<<api_provider>>>: PyTorch\n<<<explanation>>>: it's the 'small' one\n"
            "<<<code>>>: import torch\nw = torch.load('weights.pt')\n"
            "m = torch.hub.load('pytorch/vision', 'resnet18', force_reload='no')")
    scripts = [encode(invented), encode(real)]
    prefer = _preferring(scripts, tok.eos_token_id)
    prompts = [build_prompt("Classify images"), build_prompt("Classify small images")]
    kwargs = dict(max_new_tokens=max(map(len, scripts)) + 8, temperature=0.0)
    free = generate_batch(model, tok, prompts, adjust_logits=prefer, **kwargs)
    assert free[0].text == invented and free[1].text == real

    constraint = api_constraint(CALLS, tok)
    constrained = generate_batch(model, tok, prompts, adjust_logits=lambda r, s, logits, a: constraint(
        r, s, prefer(r, s, logits, a), a), **kwargs)
    assert constrained[1].text == real
    call = parse_output(constrained[0].text).fields["api_call"]
    assert call.startswith("torch.hub.load('pytorch/vision', 'wide_resnet50_2'"), constrained[0].text
    assert constraint.overruled >= 1  # the closing quote after 'wide_resnet50' was the likeliest token
    assert constraint.literals >= 6  # both rows' api_call literals and row 1's code literals of hub.load


def test_sample_stage_constrains_on_the_run_s_api_database(tiny_dir, gorilla_data, tmp_path):
    api_db, _ = write_custom_hub(tmp_path / "hub")
    data_dir = make_data_dir(tmp_path / "data", gorilla_data, max_train=2, max_eval=2)
    base = dict(model=str(tiny_dir), data_dir=str(data_dir), split="eval", num_samples=1, max_new_tokens=8,
                temperature=0.0, device="cpu")
    with pytest.raises(ConfigError, match="constrain_api"):  # `rlaif run` would fill hub in; alone it is needed
        sample.run(SampleConfig(**base, out_dir=str(tmp_path / "x"), constrain_api=True))
    metrics = sample.run(SampleConfig(**base, out_dir=str(tmp_path / "on"), constrain_api=True, hub="custom",
                                      api_db=str(api_db)))
    assert metrics["api_constraint"]["functions"] >= 3  # from_pretrained, hub.load, Forecaster of the Acme hub
    assert read_stage_record(tmp_path / "on")["config"]["constrain_api"] is True
    assert len(read_jsonl(tmp_path / "on" / "samples.jsonl")) == 2
    assert "api_constraint" not in sample.run(SampleConfig(**base, out_dir=str(tmp_path / "off")))

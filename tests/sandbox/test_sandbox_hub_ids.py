"""The hub ids hermetic mode knows, read from Gorilla's API database."""

from __future__ import annotations

from pathlib import Path


def test_known_hub_ids_from_the_api_database(gorilla_data: Path) -> None:
    from rlaif_code.data.source import DataSource
    from rlaif_code.sandbox.hub_ids import known_hub_ids

    known = known_hub_ids(DataSource.resolve(gorilla_data))
    assert {"YituTech/conv-bert-base", "dmis-lab/biobert-v1.1"} <= set(known["hf"])
    assert "Sahajtomar/German_Zeroshot" in known["hf"]  # named only inside its api_name call
    assert "resnet18" in known["th"]["pytorch/vision"] and "slow_r50" in known["th"]["facebookresearch/pytorchvideo"]
    assert "https://tfhub.dev/google/universal-sentence-encoder/4" in known["tf"]


def test_a_users_api_database_is_what_hermetic_runs_know(fake_env: Path, tmp_path: Path) -> None:
    """With `api_db`, a snippet gets a stand-in for the user's ids and the library's not-found error for
    any other, APIBench's included (the fake libraries of conftest.py stand in for the real ones)."""
    from rlaif_code.sandbox.verdicts import ExecSettings, executability
    from tiny import write_custom_hub

    api_db, _ = write_custom_hub(tmp_path / "hub")
    settings = ExecSettings(tier="run", mode="hermetic", workers=2, env=str(fake_env.parents[1]), timeout=30,
                            data=None, api_db=str(api_db))
    codes = ["from transformers import BertModel\nmodel = BertModel.from_pretrained('acme/widget-detector')\n"
             "print(model(1))",
             "import torch\nnet = torch.hub.load('acme/zoo', 'ears', pretrained=True)\nnet.eval()",
             "from transformers import BertModel\nBertModel.from_pretrained('YituTech/conv-bert-base')",
             "import torch\ntorch.hub.load('acme/zoo', 'eyes')"]
    verdicts, _summary = executability(codes, settings)
    assert [bool(v.run) for v in verdicts] == [True, True, False, False]

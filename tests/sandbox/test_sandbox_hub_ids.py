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

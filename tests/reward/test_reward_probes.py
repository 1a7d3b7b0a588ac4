"""The reference answers' broken variants: each kind is what it says, and training rotates the kinds."""

from __future__ import annotations

import random
from collections import Counter

from rlaif_code.data.parse import parse_output
from rlaif_code.reward.probes import KINDS, Reference, negative, probe_accuracies, probe_sets, training_examples


def ref(group: str, domain: str, model: str) -> Reference:
    call = f"torch.hub.load('pytorch/vision', '{model}', pretrained=True)"
    return Reference(group, f"###Instruction: task {group}\n###Output:", {
        "domain": domain, "api_call": call, "provider": "PyTorch", "explanation": f"Load {model}.",
        "code": f"import torch\nmodel = {call}"}, domain)


REFS = [ref("a", "Classification", "resnet18"), ref("b", "Classification", "vgg11"),
        ref("c", "Semantic Segmentation", "deeplabv3_resnet50")]


def fields_of(text: str) -> dict[str, str]:
    return parse_output(text.split("###Output:", 1)[1]).fields


def test_each_negative_kind_breaks_the_reference_the_way_it_says() -> None:
    rng = random.Random(0)
    truncated = fields_of(negative(REFS[0], "truncated", REFS, rng))
    assert truncated["api_call"] == REFS[0].fields["api_call"] and not truncated["code"] and not truncated["provider"]
    no_code = fields_of(negative(REFS[0], "no_code", REFS, rng))
    assert no_code["explanation"] and not no_code["code"]
    assert "vgg11" in fields_of(negative(REFS[0], "swapped_same_domain", REFS, rng))["api_call"]
    other = fields_of(negative(REFS[0], "swapped_other_domain", REFS, rng))
    assert "deeplabv3" in other["api_call"] and other["domain"] == "Semantic Segmentation"
    invented = fields_of(negative(REFS[0], "invented_name", REFS, rng))
    name = invented["api_call"].split("'")[3]
    assert name.startswith("resnet18_") and name in invented["code"] and "'resnet18'" not in invented["code"]
    # no other API of segmentation's domain: that kind has no negative for c
    assert negative(REFS[2], "swapped_same_domain", REFS, rng) is None


def test_training_rotates_the_kinds_and_probes_cover_the_heldout_prompts_only() -> None:
    many = [ref(str(i), "Classification" if i % 2 else "Object Detection", f"net{i}") for i in range(40)]
    rows = training_examples(many, {r.group for r in many[:30]}, negatives_per_prompt=2, seed=0)
    assert {group for group, _, _ in rows} == {r.group for r in many[:30]}
    assert Counter(label for _, _, label in rows) == {1: 30, 0: 60}
    pairs = probe_sets(many, {r.group for r in many[30:]}, seed=0)
    assert set(pairs) == set(KINDS) and all(len(p) == 10 for p in pairs.values())
    # a scorer that only rewards having code beats the truncated and no-code probes, not the swaps
    accuracies = probe_accuracies(pairs, lambda texts: [float("<<<code>>>: import" in t) for t in texts])
    assert accuracies["truncated"] == accuracies["no_code"] == 1.0
    assert accuracies["swapped_same_domain"] == accuracies["invented_name"] == 0.0

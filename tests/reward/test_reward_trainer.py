"""The reward loss (BCE on every text, plus the pairwise term) and the collator that feeds it pairs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rlaif_code.reward.trainer import pair_collator, reward_loss
from tiny import tiny_tokenizer


def test_without_pairs_the_loss_is_the_pointwise_bce() -> None:
    logits, labels = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1.0, 0.0, 0.0])
    empty = torch.zeros(0)
    loss = reward_loss(logits, labels, empty, torch.zeros(0, dtype=torch.long), pos_weight=2.0, pairwise_weight=1.0)
    assert loss.item() == pytest.approx(
        F.binary_cross_entropy_with_logits(logits, labels, pos_weight=torch.tensor(2.0)).item())


def test_the_rejected_texts_count_as_negatives_and_the_pair_term_wants_a_margin() -> None:
    logits, labels = torch.tensor([1.0, 0.0], requires_grad=True), torch.tensor([1.0, 0.0])
    rejected = torch.tensor([1.0], requires_grad=True)  # the rejected text of item 0 ties with it
    pair_rows = torch.tensor([0])
    pointwise = reward_loss(logits, labels, rejected, pair_rows, pos_weight=None, pairwise_weight=0.0)
    assert pointwise.item() == pytest.approx(F.binary_cross_entropy_with_logits(
        torch.tensor([1.0, 0.0, 1.0]), torch.tensor([1.0, 0.0, 0.0])).item())
    paired = reward_loss(logits, labels, rejected, pair_rows, pos_weight=None, pairwise_weight=2.0)
    assert paired.item() == pytest.approx(pointwise.item() + 2.0 * -F.logsigmoid(torch.tensor(0.0)).item())
    paired.backward()
    # the pair term pushes the item up and its rejected text down; item 1 (no pair) only feels its BCE
    assert logits.grad[0] < 0 < rejected.grad[0]
    assert logits.grad[1].item() == pytest.approx(torch.sigmoid(torch.tensor(0.0)).item() / 3)


def test_the_collator_pads_the_rejected_texts_of_the_items_that_have_one() -> None:
    tokenizer = tiny_tokenizer()
    collate = pair_collator(tokenizer)
    batch = collate([{"input_ids": [5, 6, 7], "labels": 1.0, "rejected_input_ids": [8]},
                     {"input_ids": [5], "labels": 0.0, "rejected_input_ids": []},
                     {"input_ids": [9, 9], "labels": 1.0, "rejected_input_ids": [4, 4, 4, 4]}])
    assert batch["input_ids"].shape == (3, 3) and batch["labels"].tolist() == [1.0, 0.0, 1.0]
    assert batch["pair_rows"].tolist() == [0, 2]
    assert batch["rejected_input_ids"].shape == (2, 4)
    assert batch["rejected_attention_mask"].sum(dim=1).tolist() == [1, 4]
    pointwise = collate([{"input_ids": [5], "labels": 0.0, "rejected_input_ids": []}])
    assert "rejected_input_ids" not in pointwise and pointwise["pair_rows"].numel() == 0

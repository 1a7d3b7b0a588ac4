"""transformers' `Trainer` with the reward stage's loss, collator and sampler.

A training item is one text with its 0/1 label and, optionally, a `rejected_input_ids` text of
the same prompt that must score lower (a reference answer and one of its broken variants). The
loss is binary cross-entropy over every text in the batch, plus `pairwise_weight` times the
Bradley-Terry loss -log sigmoid(r_item - r_rejected) over the items that carry a rejected text.
"""

from __future__ import annotations

from typing import Any


def reward_loss(logits: Any, labels: Any, rejected_logits: Any, pair_rows: Any, *,
                pos_weight: float | None, pairwise_weight: float) -> Any:
    """BCE over all texts, plus the weighted pairwise term.

    logits, labels: (B,); rejected_logits: (P,), the scores of the rejected texts of the items
    `pair_rows` (P,) names; P may be 0.
    """
    import torch
    import torch.nn.functional as F

    all_logits = torch.cat([logits, rejected_logits])  # (B + P,)
    all_labels = torch.cat([labels, torch.zeros_like(rejected_logits)])  # the rejected texts are negatives
    weight = None if pos_weight is None else torch.tensor(pos_weight, device=logits.device)
    loss = F.binary_cross_entropy_with_logits(all_logits, all_labels, pos_weight=weight)
    if pairwise_weight and rejected_logits.numel():
        margins = logits[pair_rows] - rejected_logits  # (P,)
        loss = loss + pairwise_weight * -F.logsigmoid(margins).mean()
    return loss


def pair_collator(tokenizer: Any) -> Any:
    """Pads the items' texts, and separately the rejected texts of the items that have one."""
    def collate(features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        batch = tokenizer.pad([{"input_ids": f["input_ids"]} for f in features], return_tensors="pt")
        batch["labels"] = torch.tensor([float(f["labels"]) for f in features])
        pair_rows = [i for i, f in enumerate(features) if f.get("rejected_input_ids")]
        batch["pair_rows"] = torch.tensor(pair_rows, dtype=torch.long)
        if pair_rows:
            rejected = tokenizer.pad([{"input_ids": features[i]["rejected_input_ids"]} for i in pair_rows],
                                     return_tensors="pt")
            batch["rejected_input_ids"] = rejected["input_ids"]
            batch["rejected_attention_mask"] = rejected["attention_mask"]
        return batch
    return collate


def binary_reward_trainer_class() -> type:
    """The class, built on first use: importing transformers is left to the stages that train."""
    import torch
    from transformers import Trainer

    class BinaryRewardTrainer(Trainer):
        """`Trainer` with `reward_loss` on the scalar head and optional class-balanced sampling."""

        def __init__(self, *args: Any, pos_weight: float | None = None, pairwise_weight: float = 0.0,
                     sample_weights: list[float] | None = None, sampler_seed: int = 0, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.pos_weight = pos_weight
            self.pairwise_weight = pairwise_weight
            self.sample_weights = sample_weights
            self.sampler_seed = sampler_seed

        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            labels = inputs.pop("labels").float()
            pair_rows = inputs.pop("pair_rows", None)
            rejected_ids = inputs.pop("rejected_input_ids", None)
            rejected_mask = inputs.pop("rejected_attention_mask", None)
            outputs = model(**inputs)
            logits = outputs.logits[:, 0].float()
            if rejected_ids is None:
                rejected_logits = logits.new_zeros(0)
                pair_rows = torch.zeros(0, dtype=torch.long, device=logits.device)
            else:
                rejected_logits = model(input_ids=rejected_ids, attention_mask=rejected_mask).logits[:, 0].float()
            loss = reward_loss(logits, labels, rejected_logits, pair_rows, pos_weight=self.pos_weight,
                               pairwise_weight=self.pairwise_weight)
            return (loss, outputs) if return_outputs else loss

        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            if self.sample_weights is None:
                return super()._get_train_sampler(train_dataset)
            generator = torch.Generator().manual_seed(self.sampler_seed)
            return torch.utils.data.WeightedRandomSampler(self.sample_weights, len(self.sample_weights),
                                                          replacement=True, generator=generator)

    return BinaryRewardTrainer

"""transformers' `Trainer` with the reward stage's loss and sampler."""

from __future__ import annotations

from typing import Any


def binary_reward_trainer_class() -> type:
    """The class, built on first use: importing transformers is left to the stages that train."""
    import torch
    import torch.nn.functional as F
    from transformers import Trainer

    class BinaryRewardTrainer(Trainer):
        """`Trainer` with BCE-with-logits on the scalar head and optional class-balanced sampling."""

        def __init__(self, *args: Any, pos_weight: float | None = None,
                     sample_weights: list[float] | None = None, sampler_seed: int = 0, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.pos_weight = pos_weight
            self.sample_weights = sample_weights
            self.sampler_seed = sampler_seed

        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            labels = inputs.pop("labels").float()
            outputs = model(**inputs)
            logits = outputs.logits[:, 0].float()
            pos_weight = None
            if self.pos_weight is not None:
                pos_weight = torch.tensor(self.pos_weight, device=logits.device)
            loss = F.binary_cross_entropy_with_logits(logits, labels, pos_weight=pos_weight)
            return (loss, outputs) if return_outputs else loss

        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            if self.sample_weights is None:
                return super()._get_train_sampler(train_dataset)
            generator = torch.Generator().manual_seed(self.sampler_seed)
            return torch.utils.data.WeightedRandomSampler(self.sample_weights, len(self.sample_weights),
                                                          replacement=True, generator=generator)

    return BinaryRewardTrainer

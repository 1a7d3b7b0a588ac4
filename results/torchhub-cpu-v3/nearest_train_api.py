"""How learnable the exact API is from the instruction alone: answer each eval item with the api_call
of its BM25-nearest training (+ dev) instruction, and count exact matches of the reference call.

    .venv/bin/python results/torchhub-cpu-v3/nearest_train_api.py ~/rlaif-runs/th/data > nearest_train_api.txt
"""

import sys
from pathlib import Path

from rlaif_code.core.artifacts import read_jsonl
from rlaif_code.data.prompts import BM25Index


def main(data_dir: Path) -> None:
    pool = read_jsonl(data_dir / "train.jsonl") + read_jsonl(data_dir / "dev.jsonl")
    items = read_jsonl(data_dir / "eval.jsonl")
    index = BM25Index([e["instruction"] for e in pool])  # the data stage's own BM25 and tokenizer
    for k in (1, 5):
        hits = 0
        for item in items:
            nearest = index.top_k_indices(item["instruction"], k)
            hits += item["reference_api"]["api_call"] in {pool[i]["reference_api"]["api_call"] for i in nearest}
        print(f"reference call among the {k} nearest training instructions' calls: "
              f"{hits}/{len(items)} = {100 * hits / len(items):.2f}%")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

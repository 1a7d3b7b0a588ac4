"""How learnable the exact API is from the instruction alone: answer each eval item with the api_call
of its BM25-nearest training (+ dev) instruction, and count exact matches of the reference call.

    .venv/bin/python results/torchhub-cpu-v3/nearest_train_api.py ~/rlaif-runs/th/data > nearest_train_api.txt
"""

import json
import re
import sys
from pathlib import Path

import numpy as np
from rank_bm25 import BM25Okapi


def tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def main(data_dir: Path) -> None:
    def read(name: str) -> list[dict]:
        return [json.loads(line) for line in (data_dir / name).read_text().splitlines()]

    pool, items = read("train.jsonl") + read("dev.jsonl"), read("eval.jsonl")
    index = BM25Okapi([tokens(e["instruction"]) for e in pool])
    for k in (1, 5):
        hits = 0
        for item in items:
            nearest = np.argsort(-index.get_scores(tokens(item["instruction"])))[:k]
            hits += item["reference_api"]["api_call"] in {pool[i]["reference_api"]["api_call"] for i in nearest}
        print(f"reference call among the {k} nearest training instructions' calls: "
              f"{hits}/{len(items)} = {100 * hits / len(items):.2f}%")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

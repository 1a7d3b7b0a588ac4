"""How torchhub-cpu-v5's reward model (shared by v6) ranks held-out answers that call the reference API.
Run from the repo root with .venv/bin/python: python results/torchhub-cpu-v6/rm_sibling_ranking.py ~/rlaif-runs/th5
The reward stage now reports the within-prompt figure itself (heldout_exact_api_within_prompt); this
model was trained before that. Output (2 EPYC cores, ~2 min): 225 held-out answers, 16 call the
reference API (10 prompts); pooled ROC-AUC 0.272; an exact answer outscores a sibling in 4 of 16 pairs;
mean logit 0.07 (exact) against 0.79 (the rest); 14 of the 16 are labelled accepted."""
import json, sys, collections
from rlaif_code.reward.labels import load_feedback, drop_duplicates, split_heldout
from rlaif_code.reward.model import score_texts
from transformers import AutoTokenizer, AutoModelForSequenceClassification
from sklearn.metrics import roc_auc_score
run = sys.argv[1]
rows, _ = drop_duplicates(load_feedback(f"{run}/feedback/feedback.jsonl"))
tr, ho = split_heldout(rows, 0.1, 0)
tok = AutoTokenizer.from_pretrained(f"{run}/reward"); m = AutoModelForSequenceClassification.from_pretrained(f"{run}/reward")
s = score_texts(m, tok, [r.text for r in ho], 16, 384)
fb = {}
for line in open(f"{run}/feedback/feedback.jsonl"):
    d = json.loads(line); fb[(str(d["example_id"]), (d["prompt"]+d["text"]).strip())] = d
out = []
for r, sc in zip(ho, s):
    d = fb[(r.group, r.text.strip())]
    out.append(dict(group=r.group, score=sc, label=r.label, exact=r.exact, fscore=d["score"], n=len(d["text"])))
json.dump(out, open("/tmp/diag/ho_scores.json", "w"))
ex = [o for o in out if o["exact"]]
print("n", len(out), "exact", len(ex), "exact groups", len({o["group"] for o in ex}))
print("auc exact", roc_auc_score([bool(o["exact"]) for o in out], [o["score"] for o in out]))
# within prompt
g = collections.defaultdict(list)
for o in out: g[o["group"]].append(o)
wins = ties = tot = 0
for grp in g.values():
    for a in grp:
        for b in grp:
            if a["exact"] and not b["exact"]:
                tot += 1; wins += a["score"] > b["score"]
print("within-prompt exact>nonexact", wins, "/", tot)
import statistics
print("mean score exact", statistics.mean(o["score"] for o in ex), "non", statistics.mean(o["score"] for o in out if not o["exact"]))
print("mean len exact", statistics.mean(o["n"] for o in ex), "non", statistics.mean(o["n"] for o in out if not o["exact"]))
print("label of exact", collections.Counter(o["label"] for o in ex), "fscore", collections.Counter(round(o["fscore"],3) for o in ex))

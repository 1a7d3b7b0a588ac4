"""Label variants from one feedback.jsonl's per-question answers (no checks rerun)."""
import json, sys, itertools
from collections import defaultdict
sys.path.insert(0, '/work/main/src')
from rlaif_code.feedback.labelling import assign_labels, label_summary

rows = [json.loads(l) for l in open(sys.argv[1])]
Q = list(rows[0]['answers'])
def yes(r, q):
    a = r['answers'].get(q, {}).get('answer')
    return None if a not in ('yes', 'no') else float(a == 'yes')
def variant(weights, mode, thr):
    out = []
    for r in rows:
        num = den = 0.0; n = 0
        for q, w in weights.items():
            y = yes(r, q)
            if y is None or w == 0: continue
            num += w * y; den += w; n += 1
        out.append({'example_id': r['example_id'], 'text': r['text'], 'score': num / den if den else 0.0, 'n_answered': n})
    assign_labels(out, mode, thr)
    s = label_summary(out)
    acc = [o['label'] == 'accepted' for o in out]
    ex = [yes(r, 'calls_needed_api') == 1.0 for r in rows]
    a_ex = sum(a for a, e in zip(acc, ex) if e) / max(1, sum(ex))
    a_nex = sum(a for a, e in zip(acc, ex) if not e) / max(1, len(ex) - sum(ex))
    return sum(acc) / len(acc), s['contrast_rate'], a_ex, a_nex, sum(a and e for a, e in zip(acc, ex)) / max(1, sum(acc))
base = {'answer_complete': 4, 'api_fits_domain': 4, 'code_executes': 4, 'calls_needed_api': 2, 'api_arguments_match': 1,
        'api_exists': 2, 'correct_imports': 1, 'no_syntax_errors': 1, 'no_undefined_names': 1}
print('yes rates', {q: round(sum(yes(r, q) or 0 for r in rows) / len(rows), 3) for q in Q})
print('variant: accepted, contrast, acc|exact, acc|not exact, exact share of accepted')
V = {'default': (base, 'relative', 0.85)}
for fit in (0, 1, 2, 3, 4):
    for ex in (2, 3, 4):
        for thr in (0.85, 0.9):
            w = dict(base, api_fits_task=fit, calls_needed_api=ex)
            V[f'fit{fit} exact{ex} rel{thr}'] = (w, 'relative', thr)
for name, (w, m, t) in V.items():
    print(name, ['%.3f' % x for x in variant(w, m, t)])

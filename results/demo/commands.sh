#!/bin/bash
# results/demo: `make demo` (configs/demo.yaml) on the 2-core CPU machine, after the generation
# rewrite (one decoder, 128 answers in flight, a seed per answer). Run twice, one after the other,
# into two run directories outside the checkout; every artifact (data, samples, labels, the three
# models' weights) and every report table came out identical, only wall times differ. Run a is
# committed here.
export RLAIF_DATA=../shared/gorilla
make exec-env
.venv/bin/rlaif run --config configs/demo.yaml --set run_dir=$HOME/rlaif-runs/demo-a
.venv/bin/rlaif run --config configs/demo.yaml --set run_dir=$HOME/rlaif-runs/demo-b
diff <(grep '^|' ~/rlaif-runs/demo-a/report/report.md) <(grep '^|' ~/rlaif-runs/demo-b/report/report.md)

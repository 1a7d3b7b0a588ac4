#!/bin/bash
# results/demo: `make demo` (configs/demo.yaml) on the 2-core CPU machine, nothing else running.
# The first `make demo` stopped at the reward stage: under the rubric of that commit every one of
# the 96 sampled answers was rejected (no answer matched the reference API exactly). After the
# rubric change (an invented API fails a weight-3 check; the exact match weighs 1) a second
# `make demo` skipped data, sft and sample (done) and ran feedback onwards; the stage times below
# come from the manifest, which keeps each stage's own time.
make demo

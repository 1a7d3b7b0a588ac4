#!/bin/bash
# Full configs/torchhub-cpu.yaml on the GPU box, in steps that fit the 64 MiB transfer limit:
#   1: wheels + first third of the GGUF; 2: second third + data; 3: last third, then the run; 4: resume.
set -o pipefail
step=$1
mkdir -p /tmp/m /tmp/gpu
case $step in
1) python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && cp .gm1/gguf.part00 /tmp/m/ && ls -la /tmp/m; exit ;;
2) cp .gm2/gguf.part01 /tmp/m/ && cp -r .gpu/gorilla /tmp/gpu/ && ls /tmp/m /tmp/gpu; exit ;;
3) cp .gm3/gguf.part02 /tmp/m/ && cat /tmp/m/gguf.part00 /tmp/m/gguf.part01 /tmp/m/gguf.part02 > /tmp/m/SmolLM2-135M-Instruct.Q4_1.gguf && echo "$(cat .gm3/sha256)  /tmp/m/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c || exit 1 ;;
esac
export PYTHONPATH=$PWD/src:/tmp/site RLAIF_DATA=/tmp/gpu/gorilla PYTHONUNBUFFERED=1 RLAIF_CACHE=/tmp/rc HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
timeout ${LIMIT:-520} python3 -m rlaif_code.cli run --config configs/torchhub-cpu.yaml --run_dir runs/torchhub-gpu \
  --sft.model /tmp/m/SmolLM2-135M-Instruct.Q4_1.gguf --sample.batch_size 128 --evaluate.sample.batch_size 96 \
  --evaluate.score.exec false 2>&1 | grep -v "it/s\]\|s/it\]\|examples/s\]" | tail -50
rc=$?
tar czf $OUT/run.tgz --exclude='*.safetensors' --exclude='checkpoints' --exclude='*.pt' --exclude='*.bin' runs/torchhub-gpu
ls -la $OUT
exit $rc

#!/usr/bin/env bash
# One prepared run of the cross-session batching on a CUDA machine (issue 21): the batched
# pipeline and the server, each at several stream counts, JSON and plots into $OUT (default
# ./gpu-out). Run from the repository root of an installed checkout:
#     bash scripts/gpu-batching.sh            # about 8 minutes with the defaults
# SECONDS_PER_RUN and STREAMS change the size; CPU-only machines run it too (DEVICE=cpu),
# with CONFIG naming a file that turns batching on, which is how CI keeps it working
# (tests/test_gpu_script.py).
set -euo pipefail
OUT=${OUT:-gpu-out}
DEVICE=${DEVICE:-cuda}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-30}
STREAMS=${STREAMS:-1,4,16,32}
SESSIONS=${SESSIONS:-1,4,16}
CONFIG=${CONFIG:-}  # a config file for both (batching is on by default with cuda only)
mkdir -p "$OUT"
python3 - <<'PY' > "$OUT/machine.txt"
import platform, torch
print(platform.platform(), "torch", torch.__version__)
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PY
affectstream bench pipeline --device "$DEVICE" --streams "$STREAMS" ${CONFIG:+--config "$CONFIG"} \
    --seconds "$SECONDS_PER_RUN" --json "$OUT/pipeline.json" --plot "$OUT/pipeline.png" \
    | tee "$OUT/pipeline.txt"
affectstream bench serve --device "$DEVICE" --sessions "$SESSIONS" ${CONFIG:+--config "$CONFIG"} \
    --seconds "$SECONDS_PER_RUN" --json "$OUT/serve.json" --plot "$OUT/serve.png" \
    | tee "$OUT/serve.txt"
echo "wrote $OUT"

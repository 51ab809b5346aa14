#!/bin/bash
# The one short GPU check (run through the device tool on a lent H200; see README "Performance").
# Carries: .whl (diffusers, open_clip_torch, lpips, ftfy, wcwidth, imagehash, pywavelets,
# importlib_metadata and this package's wheel, all for Python 3.12) and fixtures/models (the built demo).
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
O=${OUT:-bench/out}
mkdir -p "$O"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch,diffusers,transformers,peft,pytest;print('torch',torch.__version__,'cuda',torch.version.cuda,'diffusers',diffusers.__version__,'transformers',transformers.__version__,'peft',peft.__version__,'pytest',pytest.__version__)"
} 2>&1 | tee "$O/env.txt"
echo "== 1. SD 1.5-sized pipeline at 512 px: plugin vs plain diffusers, scoring on GPU vs CPU"
timeout 230 python3 bench/gpu.py --out "$O" --repeat 2 2>&1 | tail -45
echo "== 2. the demo gate on CUDA: float16 vs float32"
timeout 110 python3 bench/demo_devices.py --out "$O" 2>&1 | tail -40
echo "== 3. the suite on CUDA (tests that rebuild the demo models for another torch are left out)"
timeout 150 python3 -m pytest tests -n 8 -q -p no:cacheprovider --timeout 100 -o addopts="-p pytester" \
  --ignore tests/test_demo.py --ignore tests/test_trained_models.py --ignore tests/test_img2img_items.py \
  > "$O/suite.log" 2>&1
echo "suite exit $?"; grep -E "passed|failed|error" "$O/suite.log" | tail -3
grep -E "^(FAILED|ERROR)" "$O/suite.log" | head -30

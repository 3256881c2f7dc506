#!/usr/bin/env bash
# Pack the Unsloth/TRL wheels and the embedded tokenizer small enough to travel in ONE device call
# beside .device/vllm (64 MiB in all), so that a call needs no earlier call's /tmp/site: a machine
# goes cold 30 s after a call, and two calls in a row cannot be relied on to find it warm.
#
#   bash bench/pack_device_bundle.sh      # after build_wheels.sh, build_vllm_parts.sh, autolearn_cache
#   run(carry=[".device/vllm", ".device/bundle"]):
#     . bench/gpu_machine_setup.sh vllm bundle && python3 bench/gpu_grpo.py ...
#
# What it drops, and why each should be safe (on the H200, 2026-12-02, Unsloth BF16 + vLLM trained and
# the GPU tests passed with this bundle, the FP8 ones among them; Unsloth FP8 + vLLM did not reach its
# first step within its time limit, so that path is unconfirmed without torchao's extensions):
# wheels vLLM's part already holds; hf_transfer (offline); gguf (the tokenizer travels converted);
# tyro, shtab, docstring_parser (TRL's CLI only); unsloth_cli; torchao's _models and its two
# extensions (Python 3.10's mxfp8, cutlass 90a: not used by the FP8 path); bitsandbytes' CUDA
# library (4-bit only; bitsandbytes raises only when a native call is made); RECORD files, tests.
set -euo pipefail
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
vllm_names=$(ls .device/vllm-build/wheels | sed "s/-[0-9].*//" | tr '\n' ' ')
for wheel in .device/wheels/*.whl; do
    name=$(basename "$wheel" | sed 's/-[0-9].*//')
    case " hf_transfer gguf tyro shtab docstring_parser $vllm_names " in *" $name "*) continue ;; esac
    unzip -q -o "$wheel" -d "$site"
done
rm -rf "$site"/unsloth_cli "$site"/torchao/_models "$site"/torchao/_C_*.so \
    "$site"/bitsandbytes/libbitsandbytes_cuda*.so "$site"/test "$site"/*/tests
find "$site" -name RECORD -delete
mkdir -p .device/bundle
tar -C "$site" -cf - . | xz -9e -T2 >.device/bundle/site.tar.xz
tar -C .device/autolearn_cache -cf - . | xz -9 >.device/bundle/cache.tar.xz
du -c .device/vllm .device/bundle | tail -1

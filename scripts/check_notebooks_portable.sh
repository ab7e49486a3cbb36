#!/usr/bin/env bash
# Do the notebooks' committed outputs hold on any x86 CPU and thread count?
#
#   scripts/check_notebooks_portable.sh              # every variant below
#   scripts/check_notebooks_portable.sh avx2:1       # some of them (capability:threads)
#   NOTEBOOKS="notebooks/01_crn.ipynb" scripts/check_notebooks_portable.sh
#
# Runs nbval (as `make test` does) over every notebook once per variant: a CPU
# capability times a thread count. A capability stands in for an older CPU by
# capping every library that picks its kernels from the CPU it runs on:
#
#   ATEN_CPU_CAPABILITY    torch's own vectorised kernels (default = no SIMD, avx2, avx512)
#   ONEDNN_MAX_CPU_ISA     oneDNN's convolutions (torch's CPU conv path)
#   MKL_ENABLE_INSTRUCTIONS  MKL's BLAS (matrix products)
#   NPY_DISABLE_CPU_FEATURES NumPy's SIMD loops (X86_V4 = AVX-512, X86_V3 = AVX2/FMA)
#
# The thread count goes through LABKIT_THREADS, which labkit.setup() obeys.
# Variants run two at a time when both use one thread (the machine has two
# cores), one at a time otherwise. Logs: _build/portability/<variant>.log.
# Exit status 0 only if every variant passes.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-.venv/bin/python}
VARIANTS=("$@")
[ ${#VARIANTS[@]} -gt 0 ] || VARIANTS=(default:1 avx2:1 default:2 avx2:2)
NOTEBOOKS=${NOTEBOOKS:-notebooks}
LOGS=_build/portability
mkdir -p "$LOGS"
export PATH="$PWD/.venv/bin:$PATH" PYDEVD_DISABLE_FILE_VALIDATION=1

run_variant() {   # run_variant CAPABILITY THREADS
    local capability=$1 threads=$2 log="$LOGS/$1-$2threads.log" start=$SECONDS
    local -a caps=(ATEN_CPU_CAPABILITY="$capability" LABKIT_THREADS="$threads")
    case $capability in
        default) caps+=(ONEDNN_MAX_CPU_ISA=SSE41 MKL_ENABLE_INSTRUCTIONS=SSE4_2
                        "NPY_DISABLE_CPU_FEATURES=X86_V3 X86_V4 AVX512_ICL AVX512_SPR") ;;
        avx2)    caps+=(ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
                        "NPY_DISABLE_CPU_FEATURES=X86_V4 AVX512_ICL AVX512_SPR") ;;
        avx512)  ;;
        *) echo "unknown capability '$capability' (expected default, avx2 or avx512)" >&2; return 2 ;;
    esac
    env "${caps[@]}" "$PYTHON" -m pytest -p no:cacheprovider -q --nbval --nbval-current-env \
        --nbval-sanitize-with tests/nbval_sanitize.cfg $NOTEBOOKS >"$log" 2>&1
    local status=$?
    printf '%-8s %s thread(s): %s in %d s (%s)\n' "$capability" "$threads" \
        "$([ $status -eq 0 ] && echo passed || echo FAILED)" $((SECONDS - start)) "$(tail -n 1 "$log")"
    return $status
}

failed=0
start=$SECONDS
single=() other=()
for variant in "${VARIANTS[@]}"; do
    [[ $variant == *:1 ]] && single+=("$variant") || other+=("$variant")
done
# one-thread variants in pairs, side by side
for ((i = 0; i < ${#single[@]}; i += 2)); do
    pids=()
    for variant in "${single[@]:i:2}"; do
        run_variant "${variant%%:*}" "${variant##*:}" & pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
done
for variant in "${other[@]}"; do
    run_variant "${variant%%:*}" "${variant##*:}" || failed=1
done
echo "portability check: $([ $failed -eq 0 ] && echo 'all variants passed' || echo 'SOME VARIANTS FAILED') in $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s (logs in $LOGS/)"
exit $failed

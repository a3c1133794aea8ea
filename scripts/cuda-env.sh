# Source this from the project's root to build with `--features cuda` on a machine with no
# GPU and no CUDA toolkit:   source scripts/cuda-env.sh && cargo build --release --features cuda
# It installs the CUDA 13.0 toolchain from PyPI wheels (once, into a cache directory), makes
# that tree look like a toolkit, generates a link-time stub of libcuda.so.1, and exports what
# candle-kernels (cudaforge) and cudarc read. The binary then runs on an H100/H200 (sm_90a)
# with a CUDA 13.0 driver; see the README, section CUDA.
# Knobs: XP_CUDA_CACHE (default ~/.cache/xp-cuda), CUDA_COMPUTE_CAP (default 90),
#        XP_GPU_LIBDIR (rpath baked into the binary: the GPU machine's CUDA 13 pip libraries).
_xp_cuda_setup() {
  local cache=${XP_CUDA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/xp-cuda}
  local pkgs=$cache/pkgs
  local gpu_libdir=${XP_GPU_LIBDIR:-/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib}
  # Pinned to 13.0.x: PTX from nvcc 13.1+ cannot be JIT-compiled by the 13.0 driver there, and
  # cudarc's build rejects nvcc versions it does not know.
  local wheels=(
    "nvidia-cuda-nvcc==13.0.88" "nvidia-cuda-crt==13.0.88" "nvidia-nvvm==13.0.88"
    "nvidia-cuda-runtime==13.0.96" "nvidia-cuda-cccl==13.0.85" "nvidia-cublas==13.0.0.19"
    "nvidia-curand==10.4.0.35" "nvidia-cuda-nvrtc==13.0.88"
  )
  if [ ! -f "$pkgs/.installed-13.0" ]; then
    echo "cuda-env: installing the CUDA 13.0 wheels into $pkgs" >&2
    rm -rf "$pkgs"
    python3 -m pip install --quiet --disable-pip-version-check --no-deps --no-compile \
      --target "$pkgs" "${wheels[@]}" || return 1
    touch "$pkgs/.installed-13.0"
  fi
  export CUDA_HOME=$pkgs/nvidia/cu13
  local lib=$CUDA_HOME/lib so
  [ -e "$CUDA_HOME/lib64" ] || ln -s lib "$CUDA_HOME/lib64"
  for so in libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13 libcudart.so.13; do
    [ -e "$lib/${so%.*}" ] || ln -s "$so" "$lib/${so%.*}"
  done
  "$CUDA_HOME/bin/nvcc" --version | grep -q 'release 13.0' || { echo "cuda-env: nvcc is not 13.0" >&2; return 1; }
  # candle-core links cudarc with `dynamic-linking`: the binary needs libcuda.so at link time.
  # No wheel ships the driver, so build a stub exporting every cu* symbol cudarc declares.
  cargo fetch --quiet 2>/dev/null
  local ver sys
  ver=$(cargo pkgid cudarc 2>/dev/null | sed 's/.*[@#]//')
  sys=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-"$ver"/src/driver/sys/mod.rs 2>/dev/null | head -n 1)
  [ -n "$sys" ] || { echo "cuda-env: run this from a project whose Cargo.lock has cudarc (enable the cuda feature first)" >&2; return 1; }
  mkdir -p "$lib/stubs"
  if [ ! -f "$lib/stubs/libcuda.so" ] || [ "$sys" -nt "$lib/stubs/libcuda.so" ]; then
    {
      echo 'static const char m[] = "CUDA driver stub (no real libcuda.so.1 loaded)";'
      echo 'int cuGetErrorString(int e, const char **s) { if (s) *s = m; return 0; }'
      echo 'int cuGetErrorName(int e, const char **s) { if (s) *s = "CUDA_ERROR_STUB_LIBRARY"; return 0; }'
      grep -oE '^\s+fn cu[A-Za-z0-9_]+\(' "$sys" | sed -E 's/^\s+fn (cu[A-Za-z0-9_]+)\(/\1/' \
        | sort -u | grep -vx 'cuGetErrorString\|cuGetErrorName' \
        | sed -E 's/.*/int &(void) { return 34; }/'
    } >"$lib/stubs/libcuda_stub.c"
    gcc -shared -fPIC -O1 -Wl,-soname,libcuda.so.1 -o "$lib/stubs/libcuda.so" "$lib/stubs/libcuda_stub.c" || return 1
    ln -sf libcuda.so "$lib/stubs/libcuda.so.1"
  fi
  export PATH=$CUDA_HOME/bin:$PATH
  export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
  export CUDARC_CUDA_VERSION=13000
  case " ${RUSTFLAGS:-} " in
    *"$gpu_libdir"*) ;;
    *) export RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-Wl,--disable-new-dtags,-rpath,$gpu_libdir" ;;
  esac
  # To run a cuda build here (it will report that no device exists): LD_LIBRARY_PATH=$lib/stubs:$lib
  export XP_CUDA_STUB_LIBS=$lib/stubs:$lib
  echo "cuda-env: CUDA_HOME=$CUDA_HOME CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP" >&2
}
_xp_cuda_setup

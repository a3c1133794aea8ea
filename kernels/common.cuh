// Shared helpers of xp's kernels: block-wide reductions for one block per row.
#pragma once

#define XP_WARP 32

__device__ __forceinline__ float xp_warp_sum(float x) {
    for (int o = XP_WARP / 2; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

__device__ __forceinline__ float xp_warp_max(float x) {
    for (int o = XP_WARP / 2; o > 0; o /= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}

// The sum of `x` over the block, returned to every thread. `shared` holds one float per warp.
__device__ __forceinline__ float xp_block_sum(float x, float* shared) {
    const int lane = threadIdx.x % XP_WARP, warp = threadIdx.x / XP_WARP;
    const int warps = (blockDim.x + XP_WARP - 1) / XP_WARP;
    x = xp_warp_sum(x);
    __syncthreads();
    if (lane == 0) shared[warp] = x;
    __syncthreads();
    x = lane < warps ? shared[lane] : 0.0f;
    return xp_warp_sum(x);
}

// The maximum of `x` over the block, returned to every thread.
__device__ __forceinline__ float xp_block_max(float x, float* shared) {
    const int lane = threadIdx.x % XP_WARP, warp = threadIdx.x / XP_WARP;
    const int warps = (blockDim.x + XP_WARP - 1) / XP_WARP;
    x = xp_warp_max(x);
    __syncthreads();
    if (lane == 0) shared[warp] = x;
    __syncthreads();
    x = lane < warps ? shared[lane] : -INFINITY;
    return xp_warp_max(x);
}

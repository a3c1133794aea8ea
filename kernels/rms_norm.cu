// RMSNorm over the last dimension, one block per row: y = x · r · w with r = 1 / sqrt(mean(x²) +
// eps), as HF Llama. The backward writes dx = r · (g − x̂ · mean(g ⊙ x̂)), g = dy ⊙ w, x̂ = x · r,
// per row, and dweight = Σ_rows dy ⊙ x̂ in a second kernel that sums a (rows, d) scratch over
// rows column by column, in row order: no atomics, so results do not depend on scheduling.
#include "common.cuh"

extern "C" __global__ void xp_rms_norm_fwd_f32(
    const float* __restrict__ x,
    const float* __restrict__ weight,
    float* __restrict__ y,
    const int d,
    const float eps) {
    __shared__ float shared[XP_WARP];
    const long long row = blockIdx.x;
    const float* xr = x + row * d;
    float* yr = y + row * d;
    float sum_sq = 0.0f;
    for (int j = threadIdx.x; j < d; j += blockDim.x) sum_sq += xr[j] * xr[j];
    sum_sq = xp_block_sum(sum_sq, shared);
    const float inv = 1.0f / sqrtf(sum_sq / (float)d + eps);
    for (int j = threadIdx.x; j < d; j += blockDim.x) yr[j] = xr[j] * inv * weight[j];
}

// dx into out[row], dy ⊙ x̂ into partial[row].
extern "C" __global__ void xp_rms_norm_bwd_f32(
    const float* __restrict__ x,
    const float* __restrict__ weight,
    const float* __restrict__ dy,
    float* __restrict__ dx,
    float* __restrict__ partial,
    const int d,
    const float eps) {
    __shared__ float shared[XP_WARP];
    const long long row = blockIdx.x;
    const float* xr = x + row * d;
    const float* dyr = dy + row * d;
    float sum_sq = 0.0f;
    for (int j = threadIdx.x; j < d; j += blockDim.x) sum_sq += xr[j] * xr[j];
    sum_sq = xp_block_sum(sum_sq, shared);
    const float inv = 1.0f / sqrtf(sum_sq / (float)d + eps);
    float dot = 0.0f;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        const float x_hat = xr[j] * inv;
        dot += dyr[j] * weight[j] * x_hat;
        partial[row * d + j] = dyr[j] * x_hat;
    }
    const float mean = xp_block_sum(dot, shared) / (float)d;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        const float x_hat = xr[j] * inv;
        dx[row * d + j] = inv * (dyr[j] * weight[j] - x_hat * mean);
    }
}

// dweight[j] = Σ_r partial[r, j], one thread per column.
extern "C" __global__ void xp_sum_rows_f32(
    const float* __restrict__ partial,
    float* __restrict__ out,
    const long long rows,
    const int d) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= d) return;
    float sum = 0.0f;
    for (long long r = 0; r < rows; ++r) sum += partial[r * d + j];
    out[j] = sum;
}

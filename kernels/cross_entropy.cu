// Fused softmax cross-entropy over logits (rows, classes) and int64 targets (rows), one block
// per row. Forward: loss[r] = logsumexp(x[r]) - x[r, t] (0 where t is the ignore index -100, NaN
// where t is outside the classes). Backward: dx[r, j] = (softmax(x[r])_j - [j = t]) · dloss[r],
// with logsumexp recovered as loss + x[r, t], so it is one pass over the row with no reduction.
#include "common.cuh"

#define XP_IGNORE_INDEX (-100LL)

extern "C" __global__ void xp_cross_entropy_fwd_f32(
    const float* __restrict__ logits,
    const long long* __restrict__ targets,
    float* __restrict__ loss,
    const int classes) {
    __shared__ float shared[XP_WARP];
    const long long row = blockIdx.x;
    const float* x = logits + row * classes;
    float max = -INFINITY;
    for (int j = threadIdx.x; j < classes; j += blockDim.x) max = fmaxf(max, x[j]);
    max = xp_block_max(max, shared);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < classes; j += blockDim.x) sum += expf(x[j] - max);
    sum = xp_block_sum(sum, shared);
    if (threadIdx.x == 0) {
        const long long t = targets[row];
        if (t == XP_IGNORE_INDEX) {
            loss[row] = 0.0f;
        } else if (t < 0 || t >= classes) {
            loss[row] = NAN;
        } else {
            loss[row] = (max + logf(sum)) - x[t];
        }
    }
}

extern "C" __global__ void xp_cross_entropy_bwd_f32(
    const float* __restrict__ logits,
    const long long* __restrict__ targets,
    const float* __restrict__ loss,
    const float* __restrict__ dloss,
    float* __restrict__ dlogits,
    const int classes) {
    const long long row = blockIdx.x;
    const float* x = logits + row * classes;
    float* dx = dlogits + row * classes;
    const long long t = targets[row];
    if (t < 0 || t >= classes) {
        // Ignored rows have no gradient; invalid targets gave a NaN loss already.
        const float fill = t == XP_IGNORE_INDEX ? 0.0f : NAN;
        for (int j = threadIdx.x; j < classes; j += blockDim.x) dx[j] = fill;
        return;
    }
    const float lse = loss[row] + x[t];
    const float scale = dloss[row];
    for (int j = threadIdx.x; j < classes; j += blockDim.x) {
        const float p = expf(x[j] - lse);
        dx[j] = (p - (j == t ? 1.0f : 0.0f)) * scale;
    }
}

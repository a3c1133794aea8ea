// Fused softmax cross-entropy over logits (rows, classes) and int64 targets (rows), one block
// per row. Forward: loss[r] = logsumexp(x[r]) - x[r, t] (0 where t is the ignore index -100, NaN
// where t is outside the classes). Backward: dx[r, j] = (softmax(x[r])_j - [j = t]) · dloss[r],
// with logsumexp - x[r, t] = loss, so it is one pass over the row with no reduction.
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
    // Each thread's share of a large vocabulary in double: a float running sum rounds the many
    // tiny terms away (as the CPU kernel, ops/loss.rs); the tree over threads adds like sizes.
    double partial = 0.0;
    for (int j = threadIdx.x; j < classes; j += blockDim.x) partial += (double)expf(x[j] - max);
    const float sum = xp_block_sum((float)partial, shared);
    if (threadIdx.x == 0) {
        const long long t = targets[row];
        if (t == XP_IGNORE_INDEX) {
            loss[row] = 0.0f;
        } else if (t < 0 || t >= classes) {
            loss[row] = NAN;
        } else {
            // (max - x[t]) first: max + log(sum) - x[t] would round the log-sum-exp itself.
            loss[row] = (max - x[t]) + logf(sum);
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
    const float xt = x[t];
    const float l = loss[row];
    const float scale = dloss[row];
    for (int j = threadIdx.x; j < classes; j += blockDim.x) {
        // exp(x - lse) with lse - x[t] = loss: no rounding of lse itself.
        const float p = expf((x[j] - xt) - l);
        dx[j] = (p - (j == t ? 1.0f : 0.0f)) * scale;
    }
}

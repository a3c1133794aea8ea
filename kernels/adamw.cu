// AdamW over one flattened buffer of many parameters: state (3, n) holds the parameters, exp_avg
// and exp_avg_sq one after the other, grad (n) the gradients. One launch updates every parameter
// of a group that shares its hyperparameters. The arithmetic is src/optim.rs's CPU rule (torch's
// `_single_tensor_adam` with decoupled decay) operation for operation, every rounding explicit
// (the `__f*_rn` intrinsics are never contracted), so both give the same bits.

extern "C" __global__ void xp_adamw_f32(
    float* __restrict__ state,
    const float* __restrict__ grad,
    const unsigned long long n,
    const float one_minus_beta1,
    const float beta2,
    const float one_minus_beta2,
    const float eps,
    const float bias_correction2_sqrt,
    const float neg_step_size,
    const float shrink) {
    float* __restrict__ param = state;
    float* __restrict__ exp_avg = state + n;
    float* __restrict__ exp_avg_sq = state + 2 * n;
    const unsigned long long stride = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += stride) {
        const float g = grad[i];
        // shrink is 1 where no decay applies: p * 1 is p.
        float p = __fmul_rn(param[i], shrink);
        // m.lerp_(g, 1 - beta1), ATen's lerp_vec.
        const float m0 = exp_avg[i];
        const float diff = __fsub_rn(g, m0);
        const float m = fabsf(one_minus_beta1) < 0.5f
                            ? __fmaf_rn(one_minus_beta1, diff, m0)
                            : __fmaf_rn(__fsub_rn(one_minus_beta1, 1.0f), diff, g);
        // v.mul_(beta2).addcmul_(g, g, value=1 - beta2).
        const float v = __fmaf_rn(__fmul_rn(one_minus_beta2, g), g, __fmul_rn(exp_avg_sq[i], beta2));
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), bias_correction2_sqrt), eps);
        // p.addcdiv_(m, denom, value=-step_size).
        param[i] = __fadd_rn(p, __fdiv_rn(__fmul_rn(neg_step_size, m), denom));
    }
}

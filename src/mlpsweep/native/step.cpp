// One minibatch step of a batch of sigmoid MLPs: forward, BCE, backward and Adam, member by
// member, on the tensors of the canonical layout (`mlpsweep.layout`).
//
// Why by hand: at the map's sizes a step is a few dozen small ATen kernels, and their
// dispatch cost more than the arithmetic (issue "The engine"). Here a step is two calls.
//
// Why every member's numbers are its own, at any vector width: a member is computed by its
// own loops over its own slice of each tensor, so no partner changes the order of any sum.
// Every float operation is IEEE (no -ffast-math, no contraction into fused multiply-adds: see
// the flags in `__init__.py`), and the only transcendental in training, exp, is a polynomial
// below, so the same source gives the same bits with SSE2, AVX2 or AVX-512: vectors of 16
// floats are GCC's generic vectors, one element's arithmetic whatever registers hold it. Each
// sum runs over its terms in one fixed order (points ascending, units ascending); how the
// loops are blocked only changes which sums run side by side.

#include <cmath>
#include <cstdint>
#include <cstring>

namespace {

constexpr int LANES = 16;  // one vector: a hidden layer's canonical width is a multiple of it
typedef float v16 __attribute__((vector_size(64)));
typedef int32_t i16 __attribute__((vector_size(64)));

inline v16 load(const float* p) {
    v16 v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

inline void store(float* p, v16 v) { std::memcpy(p, &v, sizeof v); }

inline v16 splat(float x) { return v16{} + x; }

// exp(t) for every element: Cody-Waite reduction and Cephes' degree-6 polynomial (1-2 ulp).
// Above 88 it is +inf and below -87 it is 0, so sigmoid is exactly 0 at the padded units'
// bias of -inf (and below -88: the true value is under 1e-38) and exactly 1 above 87.
inline v16 exp16(v16 t) {
    const v16 log2e = splat(1.44269504088896341f), magic = splat(12582912.0f);
    v16 big = splat(88.0f), small = splat(-87.0f);
    v16 clamped = t;
    i16 over = clamped > big, under = clamped < small;
    // keep the reduction in range (the selects below give the clamped results)
    clamped = (v16)(((i16)clamped & ~(over | under)) | ((i16)splat(0.0f) & (over | under)));
    v16 k = (clamped * log2e + magic) - magic;  // round to nearest
    v16 r = clamped - k * splat(0.693359375f);
    r = r - k * splat(-2.12194440e-4f);
    v16 p = splat(1.9875691500e-4f);
    p = p * r + splat(1.3981999507e-3f);
    p = p * r + splat(8.3334519073e-3f);
    p = p * r + splat(4.1665795894e-2f);
    p = p * r + splat(1.6666665459e-1f);
    p = p * r + splat(5.0000001201e-1f);
    v16 y = p * (r * r) + r + splat(1.0f);
    i16 exponent = (__builtin_convertvector(k, i16) + 127) << 23;
    y = y * (v16)exponent;
    y = (v16)(((i16)y & ~over) | ((i16)splat(INFINITY) & over));
    y = (v16)((i16)y & ~under);
    // NaN in, NaN out: t != t is all ones there
    i16 nan = t != t;
    y = (v16)(((i16)y & ~nan) | ((i16)t & nan));
    return y;
}

inline v16 sigmoid16(v16 z) { return splat(1.0f) / (splat(1.0f) + exp16(-z)); }

// sigmoid in place over n floats (n a multiple of LANES)
void sigmoid_rows(float* z, int n) {
    for (int i = 0; i < n; i += LANES) store(z + i, sigmoid16(load(z + i)));
}

// sigmoid of n floats, n any: the last partial vector goes through a padded copy, so every
// element is computed by the same vector code wherever it sits
void sigmoid_any(const float* z, float* out, int n) {
    int i = 0;
    for (; i + LANES <= n; i += LANES) store(out + i, sigmoid16(load(z + i)));
    if (i < n) {
        float tail[LANES] = {};
        std::memcpy(tail, z + i, sizeof(float) * (n - i));
        store(tail, sigmoid16(load(tail)));
        std::memcpy(out + i, tail, sizeof(float) * (n - i));
    }
}

// C (rows x cols, row stride ldc) += A (rows x inner, row stride lda) @ B (inner x cols, row
// stride ldb), cols a multiple of LANES. Each element: C, then + a*b for inner ascending.
template <int R, int J>
inline void gemm_block(int inner, const float* a, int lda, const float* b, int ldb, float* c,
                       int ldc) {
    v16 acc[R][J];
    for (int r = 0; r < R; ++r)
        for (int j = 0; j < J; ++j) acc[r][j] = load(c + r * ldc + j * LANES);
    for (int k = 0; k < inner; ++k) {
        v16 bk[J];
        for (int j = 0; j < J; ++j) bk[j] = load(b + k * ldb + j * LANES);
        for (int r = 0; r < R; ++r) {
            v16 ar = splat(a[r * lda + k]);
            for (int j = 0; j < J; ++j) acc[r][j] += ar * bk[j];
        }
    }
    for (int r = 0; r < R; ++r)
        for (int j = 0; j < J; ++j) store(c + r * ldc + j * LANES, acc[r][j]);
}

#if defined(__AVX512F__)
constexpr int ROWS = 4;  // 4 x 4 accumulators fill 16 of the 32 zmm registers
#else
constexpr int ROWS = 2;  // with 16 ymm (or xmm) registers: fewer rows, no spills
#endif

template <int R>
void gemm_rows(int inner, int cols, const float* a, int lda, const float* b, int ldb, float* c,
               int ldc) {
    int j = 0;
    for (; j + 4 * LANES <= cols; j += 4 * LANES)
        gemm_block<R, 4>(inner, a, lda, b + j, ldb, c + j, ldc);
    switch ((cols - j) / LANES) {
        case 3: gemm_block<R, 3>(inner, a, lda, b + j, ldb, c + j, ldc); break;
        case 2: gemm_block<R, 2>(inner, a, lda, b + j, ldb, c + j, ldc); break;
        case 1: gemm_block<R, 1>(inner, a, lda, b + j, ldb, c + j, ldc); break;
        default: break;
    }
}

void gemm_acc(int rows, int inner, int cols, const float* a, int lda, const float* b, int ldb,
              float* c, int ldc) {
    int r = 0;
    for (; r + ROWS <= rows; r += ROWS)
        gemm_rows<ROWS>(inner, cols, a + r * lda, lda, b, ldb, c + r * ldc, ldc);
    for (; r < rows; ++r) gemm_rows<1>(inner, cols, a + r * lda, lda, b, ldb, c + r * ldc, ldc);
}

// out (cols x rows) = in (rows x cols) transposed
void transpose(int rows, int cols, const float* in, float* out) {
    for (int r = 0; r < rows; ++r)
        for (int c = 0; c < cols; ++c) out[c * rows + r] = in[r * cols + c];
}

// out (n x width) = rows broadcast
void fill_rows(int n, int width, const float* row, float* out) {
    for (int i = 0; i < n; ++i) std::memcpy(out + i * width, row, width * sizeof(float));
}

// sum over the n rows of x (n x width), rows ascending, into out (width)
void column_sums(int n, int width, const float* x, float* out) {
    for (int j = 0; j < width; j += LANES) {
        v16 acc = splat(0.0f);
        for (int i = 0; i < n; ++i) acc += load(x + i * width + j);
        store(out + j, acc);
    }
}

// g *= h * (1 - h), as torch's sigmoid_backward: grad * (1 - y) * y
void sigmoid_backward(int n, float* g, const float* h) {
    for (int i = 0; i < n; i += LANES) {
        v16 y = load(h + i);
        store(g + i, load(g + i) * (splat(1.0f) - y) * y);
    }
}

float clamped_log(float x) { return std::fmax(std::log(x), -100.0f); }

}  // namespace

extern "C" {

// The layout of one group: `hidden_layers` layers of `width` units (a multiple of 16), K
// members. params and grads: the weights of every layer, then the biases (`step.parameters`
// order): w0 (K,1,W), w1..w_{L-1} (K,W,W), w_out (K,W,1), b0..b_{L-1} (K,1,W), b_out (K,1,16)
// with column 0 real. x and y: the minibatch's n points. scratch: `mlp_scratch_floats`.
//
// Writes every member's gradient of its mean BCE, its BCE summed over the points
// (loss_sums, K) and its probabilities (probs, K x n). Returns the number of members whose
// probabilities are not finite: the caller then moves no weight.
long mlp_scratch_floats(int hidden_layers, int width, int n) {
    return (long)(hidden_layers + 3) * n * width + (long)width * width + 2L * n + LANES;
}

int mlp_gradients(int members, int hidden_layers, int width, int n, const float* x,
                  const float* y, float* const* params, float* const* grads, float* loss_sums,
                  float* probs, float* scratch) {
    const int L = hidden_layers, W = width, out_slots = LANES;
    float* acts = scratch;                       // L x n x W: each hidden layer's output
    float* g = acts + (long)L * n * W;           // n x W: gradient at a layer's pre-activation
    float* below = g + (long)n * W;              // n x W: gradient at the layer below's output
    float* hT = below + (long)n * W;             // W x n: an activation transposed
    float* wT = hT + (long)n * W;                // W x W: a weight transposed
    float* z = wT + (long)W * W;                 // n: the output pre-activation
    float* go = z + n;                           // n: its gradient
    int bad = 0;
    const float inv_n = 1.0f / (float)n;
    for (int m = 0; m < members; ++m) {
        const float* w0 = params[0] + (long)m * W;
        const float* b0 = params[L + 1] + (long)m * W;
        const float* wo = params[L] + (long)m * W;
        const float bo = params[2 * L + 1][(long)m * out_slots];
        // forward: the input layer is bias + x * w (torch.addcmul's order)
        for (int i = 0; i < n; ++i) {
            v16 xi = splat(x[i]);
            for (int j = 0; j < W; j += LANES)
                store(acts + i * W + j, load(b0 + j) + xi * load(w0 + j));
        }
        sigmoid_rows(acts, n * W);
        for (int l = 1; l < L; ++l) {
            const float* w = params[l] + (long)m * W * W;
            const float* b = params[L + 1 + l] + (long)m * W;
            float* h = acts + (long)l * n * W;
            fill_rows(n, W, b, h);
            gemm_acc(n, W, W, h - (long)n * W, W, w, W, h, W);
            sigmoid_rows(h, n * W);
        }
        // the output unit: per point, 16 partial sums over the units, then those in order
        const float* last = acts + (long)(L - 1) * n * W;
        float* p = probs + (long)m * n;
        float loss = 0.0f;
        for (int i = 0; i < n; ++i) {
            v16 acc = splat(0.0f);
            for (int j = 0; j < W; j += LANES) acc += load(last + i * W + j) * load(wo + j);
            float s = acc[0];
            for (int lane = 1; lane < LANES; ++lane) s += acc[lane];
            z[i] = s + bo;
        }
        sigmoid_any(z, p, n);
        bool finite = true;
        for (int i = 0; i < n; ++i) finite = finite && !std::isnan(p[i]);
        if (!finite) {
            ++bad;
            loss_sums[m] = NAN;
            continue;
        }
        // BCE and its gradient at the output's pre-activation, as torch's BCE and its
        // backward compute them: log clamped at -100, the gradient's denominator at 1e-12
        for (int i = 0; i < n; ++i) {
            float pi = p[i], yi = y[i];
            loss += -(yi * clamped_log(pi) + (1.0f - yi) * clamped_log(1.0f - pi));
            float grad_p = (pi - yi) / std::fmax((1.0f - pi) * pi, 1e-12f) * inv_n;
            go[i] = grad_p * (1.0f - pi) * pi;
        }
        loss_sums[m] = loss;
        // backward: the output unit
        float* gwo = grads[L] + (long)m * W;
        float* gbo = grads[2 * L + 1] + (long)m * out_slots;
        float bias_grad = 0.0f;
        for (int i = 0; i < n; ++i) bias_grad += go[i];
        gbo[0] = bias_grad;
        for (int s = 1; s < out_slots; ++s) gbo[s] = 0.0f;
        for (int j = 0; j < W; j += LANES) {
            v16 acc = splat(0.0f);
            for (int i = 0; i < n; ++i) acc += load(last + i * W + j) * splat(go[i]);
            store(gwo + j, acc);
        }
        for (int i = 0; i < n; ++i)
            for (int j = 0; j < W; j += LANES)
                store(g + i * W + j, splat(go[i]) * load(wo + j));
        sigmoid_backward(n * W, g, last);
        // backward: hidden layers L-1 .. 1
        for (int l = L - 1; l >= 1; --l) {
            const float* w = params[l] + (long)m * W * W;
            const float* h_below = acts + (long)(l - 1) * n * W;
            float* gw = grads[l] + (long)m * W * W;
            column_sums(n, W, g, grads[L + 1 + l] + (long)m * W);
            transpose(n, W, h_below, hT);
            std::memset(gw, 0, sizeof(float) * W * W);
            gemm_acc(W, n, W, hT, n, g, W, gw, W);
            transpose(W, W, w, wT);
            std::memset(below, 0, sizeof(float) * n * W);
            gemm_acc(n, W, W, g, W, wT, W, below, W);
            sigmoid_backward(n * W, below, h_below);
            std::memcpy(g, below, sizeof(float) * n * W);
        }
        // the input layer: x (one feature) times the gradient, summed over the points
        column_sums(n, W, g, grads[L + 1] + (long)m * W);
        float* gw0 = grads[0] + (long)m * W;
        for (int j = 0; j < W; j += LANES) {
            v16 acc = splat(0.0f);
            for (int i = 0; i < n; ++i) acc += splat(x[i]) * load(g + i * W + j);
            store(gw0 + j, acc);
        }
    }
    return bad;
}

// Adam over `count` tensors (sizes[i] floats each), torch's update (Adam, not AdamW): each
// step tensor is incremented, then m = lerp(m, g, 1 - beta1), v = beta2 v + (1 - beta2) g^2,
// p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps).
void adam_update(int count, float* const* params, float* const* grads, float* const* exp_avgs,
                 float* const* exp_avg_sqs, float* const* steps, const long* sizes, double lr,
                 double beta1, double beta2, double eps, double weight_decay) {
    for (int t = 0; t < count; ++t) {
        float step = *steps[t] + 1.0f;
        *steps[t] = step;
        double bias_correction1 = 1.0 - std::pow(beta1, (double)step);
        double bias_correction2 = 1.0 - std::pow(beta2, (double)step);
        const float step_size = (float)(lr / bias_correction1);
        const float bc2_sqrt = (float)std::sqrt(bias_correction2);
        const float b1 = (float)beta1, b2 = (float)beta2, e = (float)eps;
        // 1 - beta in double, then float, as torch's fused kernel (1 - 0.999f is 1e-5 off)
        const float wd = (float)weight_decay;
        const float one_minus_b1 = (float)(1.0 - beta1), one_minus_b2 = (float)(1.0 - beta2);
        float* p = params[t];
        const float* gr = grads[t];
        float* m = exp_avgs[t];
        float* v = exp_avg_sqs[t];
        const long size = sizes[t];
        for (long i = 0; i < size; ++i) {
            float grad = gr[i];
            // decay, but not of a dead unit's bias of -inf (its decay would be -inf, its
            // update NaN, and the dead unit a live NaN)
            if (wd != 0.0f && p[i] != -INFINITY) grad += wd * p[i];
            float mi = m[i] + one_minus_b1 * (grad - m[i]);
            float vi = b2 * v[i] + one_minus_b2 * grad * grad;
            m[i] = mi;
            v[i] = vi;
            p[i] -= step_size * mi / (std::sqrt(vi) / bc2_sqrt + e);
        }
    }
}

}  // extern "C"

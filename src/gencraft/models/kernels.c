/* Element-wise kernels for CPU training that ATen runs slowly (see kernels.py).
 *
 * tanh-approximated GELU (GPT-2's activation), forward and backward, float32 and bfloat16:
 *
 *   gelu(x) = 0.5 x (1 + tanh(u)),  u = K0 (x + K1 x^3)
 *           = x * sigmoid(2u)                       (since 0.5 (1 + tanh(u)) = sigmoid(2u))
 *   gelu'(x) = s + x s (1 - s) 2 K0 (1 + 3 K1 x^2), s = sigmoid(2u)
 *
 * One exp a value instead of ATen's tanh, written branch-free so the compiler vectorizes each loop
 * (-O3 -march=native: 16 floats an instruction on AVX-512). exp: 2^n * p(r), x = n ln2 + r,
 * |r| <= ln2/2, p a degree-6 polynomial (relative error ~2e-7); arguments clamped to [-87, 88] so
 * 2^n stays a normal float. bfloat16 is widened to float32 (a shift), computed in float32 and
 * rounded to nearest even, as ATen's bf16 GELU does. Far into the left tail (x near -5) this is
 * closer to the exact value than ATen's 1 + tanh(u), which cancels there.
 */
#include <stdint.h>
#include <string.h>

#define K0 0.7978845608028654f /* sqrt(2/pi) */
#define K1 0.044715f

static inline float gc_exp(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float n = (x * 1.4426950408889634f + 12582912.0f) - 12582912.0f;  /* round to nearest: 1.5 * 2^23 */
    float r = x - n * 0.693145751953125f;          /* ln2, split in two for an exact product */
    r = r - n * 1.428606765330187e-06f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits;
    memcpy(&bits, &p, 4);
    bits += (int32_t)n << 23;
    memcpy(&p, &bits, 4);
    return p;
}

static inline float gc_sigmoid2u(float x) {   /* sigmoid(2u) for u = K0 (x + K1 x^3) */
    float z = -2.0f * K0 * x * (1.0f + K1 * x * x);
    return 1.0f / (1.0f + gc_exp(z));
}

/* Below -20 gelu and its slope are under 1e-30: exactly 0 there, so -inf gives 0 (its limit) rather
 * than -inf * 0; above 20, x and 1, so +inf's slope is 1. Selects, not branches: loops still vectorize. */
static inline float gc_gelu1(float x) {
    float y = x * gc_sigmoid2u(x);
    return x < -20.0f ? 0.0f : y;
}

static inline float gc_gelu_grad1(float x, float g) {
    float s = gc_sigmoid2u(x);
    float d = s + x * s * (1.0f - s) * 2.0f * K0 * (1.0f + 3.0f * K1 * x * x);
    d = x < -20.0f ? 0.0f : (x > 20.0f ? 1.0f : d);
    return g * d;
}

static inline float bf16_to_f32(uint16_t v) {
    uint32_t b = (uint32_t)v << 16;
    float f;
    memcpy(&f, &b, 4);
    return f;
}

static inline uint16_t f32_to_bf16(float f) {   /* round to nearest even (no NaN payloads here) */
    uint32_t b;
    memcpy(&b, &f, 4);
    b += 0x7FFFu + ((b >> 16) & 1u);
    return (uint16_t)(b >> 16);
}

void gc_gelu_f32(const float *restrict x, float *restrict y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = gc_gelu1(x[i]);
}

void gc_gelu_bwd_f32(const float *restrict x, const float *restrict g, float *restrict dx, int64_t n) {
    for (int64_t i = 0; i < n; i++) dx[i] = gc_gelu_grad1(x[i], g[i]);
}

void gc_gelu_bf16(const uint16_t *restrict x, uint16_t *restrict y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = f32_to_bf16(gc_gelu1(bf16_to_f32(x[i])));
}

void gc_gelu_bwd_bf16(const uint16_t *restrict x, const uint16_t *restrict g, uint16_t *restrict dx, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        dx[i] = f32_to_bf16(gc_gelu_grad1(bf16_to_f32(x[i]), bf16_to_f32(g[i])));
}

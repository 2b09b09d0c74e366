/* Numbers on 16 float lanes, shared by gencraft's C files (gpt_decode.c, kernels.c): GCC's vector
 * extensions, which compile to AVX-512, AVX2 or SSE as the CPU has (-O3 -march=native): bfloat16
 * conversions, loads, a horizontal sum, clamping, exp, and the tanh GELU with its slope.
 *
 * cbuild.build digests every header beside a source with the source, so a change here rebuilds both.
 */
#ifndef GENCRAFT_SIMD_H
#define GENCRAFT_SIMD_H

#include <stdint.h>
#include <string.h>

typedef float f32x16 __attribute__((vector_size(64), aligned(4)));
typedef uint16_t u16x16 __attribute__((vector_size(32), aligned(2)));
typedef uint32_t u32x16 __attribute__((vector_size(64)));

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t f32_to_bf16(float f) { /* round to nearest even, as torch does */
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* NaN stays NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline f32x16 load16(const float *p) { return *(const f32x16 *)p; }

static inline f32x16 load16_bf16(const uint16_t *p) {
    u32x16 u = __builtin_convertvector(*(const u16x16 *)p, u32x16) << 16;
    f32x16 f;
    memcpy(&f, &u, 64);
    return f;
}

typedef float f32x8 __attribute__((vector_size(32)));
typedef float f32x4 __attribute__((vector_size(16)));
typedef int32_t i32x16 __attribute__((vector_size(64)));

static inline float hsum(f32x16 v) { /* a tree, not 16 dependent adds */
    f32x8 a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
              __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    f32x4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
    return (b[0] + b[2]) + (b[1] + b[3]);
}

static inline f32x16 clamp16(f32x16 x, float lo, float hi) {
    const f32x16 zero = {0}; /* not x * 0: that is NaN where x is infinite */
    f32x16 l = zero + lo, h = zero + hi;
    i32x16 xi, li, hi_;
    memcpy(&xi, &x, 64), memcpy(&li, &l, 64), memcpy(&hi_, &h, 64);
    i32x16 below = x < l, above = x > h; /* all-ones lanes where true */
    xi = (xi & ~below) | (li & below);
    xi = (xi & ~above) | (hi_ & above);
    memcpy(&x, &xi, 64);
    return x;
}

static inline f32x16 exp16(f32x16 x) {
    /* e^x = 2^n e^r, n = round(x / ln 2), |r| <= ln(2) / 2, e^r by its Taylor polynomial to r^7
       (relative error ~2e-7); x is clamped to where the result is a normal float */
    x = clamp16(x, -87.0f, 88.0f);
    const float shifter = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    f32x16 t = x * 1.44269504088896341f + shifter;
    f32x16 n = t - shifter;
    f32x16 r = x - n * 0.693145751953125f - n * 1.428606765330187e-06f;
    const f32x16 zero = {0};
    f32x16 p = zero + 1.0f / 5040;
    p = p * r + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    i32x16 e = (__builtin_convertvector(n, i32x16) + 127) << 23;
    f32x16 scale;
    memcpy(&scale, &e, 64);
    return p * scale;
}

/* tanh-approximated GELU, 0.5 x (1 + tanh(u)) = x sigmoid(2u) = x / (1 + e^(-2u)), u = K0 (x + K1 x^3).
   Below x = -20 it and its slope are under 1e-30: exactly 0 there (so -inf gives its limit 0, not
   -inf); above 20 the slope is 1 (so +inf's is not inf * 0). Selects, not branches. */
#define GELU_K0 0.7978845608028654f /* sqrt(2 / pi) */
#define GELU_K1 0.044715f

static inline f32x16 select16(i32x16 mask, f32x16 a, f32x16 b) { /* mask lanes all-ones: a, else b */
    i32x16 ai, bi;
    memcpy(&ai, &a, 64), memcpy(&bi, &b, 64);
    ai = (ai & mask) | (bi & ~mask);
    memcpy(&a, &ai, 64);
    return a;
}

static inline f32x16 sigmoid2u16(f32x16 x) { /* sigmoid(2u) */
    return 1.0f / (1.0f + exp16(-2.0f * GELU_K0 * x * (1.0f + GELU_K1 * x * x)));
}

static inline f32x16 gelu16(f32x16 x) {
    const f32x16 zero = {0};
    return select16(x < -20.0f, zero, x * sigmoid2u16(x));
}

static inline f32x16 gelu_slope16(f32x16 x) { /* d gelu / dx = s + x s (1 - s) 2 K0 (1 + 3 K1 x^2) */
    f32x16 s = sigmoid2u16(x);
    f32x16 d = s + x * s * (1.0f - s) * (2.0f * GELU_K0) * (1.0f + 3.0f * GELU_K1 * x * x);
    const f32x16 zero = {0};
    d = select16(x > 20.0f, zero + 1.0f, d);
    return select16(x < -20.0f, zero, d);
}

#endif

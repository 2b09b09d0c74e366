/* Element-wise kernels for CPU training that ATen runs slowly (see kernels.py).
 *
 * The tanh-approximated GELU (GPT-2's activation), forward and backward, float32 and bfloat16, on
 * simd.h's gelu16 / gelu_slope16 (the decode step's GELU): x sigmoid(2u) with one vectorized exp a
 * value instead of ATen's tanh. bfloat16 is widened to float32, computed in float32 and rounded to
 * nearest even, as ATen's bf16 GELU does. Far into the left tail (x near -5) this is closer to the
 * exact value than ATen's 1 + tanh(u), which cancels there.
 *
 * Each loop runs 16 values at a time; the last few go through the same vector code from a padded
 * copy, so every value is computed the same way wherever it sits.
 */
#include <stdint.h>
#include <string.h>

#include "simd.h"

static inline void store16_bf16(uint16_t *p, f32x16 v) { /* round to nearest even */
    u32x16 u;
    memcpy(&u, &v, 64);
    u += 0x7fffu + ((u >> 16) & 1u);
    u16x16 h = __builtin_convertvector(u >> 16, u16x16);
    memcpy(p, &h, 32);
}

/* n values of src (elements of `size` bytes) into a zero-padded block of 16, for a loop's tail */
static inline void pad16(void *dst, const void *src, int64_t n, size_t size) {
    memset(dst, 0, 16 * size);
    memcpy(dst, src, (size_t)n * size);
}

void gc_gelu_f32(const float *restrict x, float *restrict y, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        f32x16 v = gelu16(load16(x + i));
        memcpy(y + i, &v, 64);
    }
    if (i < n) {
        float t[16];
        pad16(t, x + i, n - i, 4);
        f32x16 v = gelu16(load16(t));
        memcpy(y + i, &v, (size_t)(n - i) * 4);
    }
}

void gc_gelu_bwd_f32(const float *restrict x, const float *restrict g, float *restrict dx, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        f32x16 v = load16(g + i) * gelu_slope16(load16(x + i));
        memcpy(dx + i, &v, 64);
    }
    if (i < n) {
        float tx[16], tg[16];
        pad16(tx, x + i, n - i, 4);
        pad16(tg, g + i, n - i, 4);
        f32x16 v = load16(tg) * gelu_slope16(load16(tx));
        memcpy(dx + i, &v, (size_t)(n - i) * 4);
    }
}

void gc_gelu_bf16(const uint16_t *restrict x, uint16_t *restrict y, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) store16_bf16(y + i, gelu16(load16_bf16(x + i)));
    if (i < n) {
        uint16_t t[16], o[16];
        pad16(t, x + i, n - i, 2);
        store16_bf16(o, gelu16(load16_bf16(t)));
        memcpy(y + i, o, (size_t)(n - i) * 2);
    }
}

void gc_gelu_bwd_bf16(const uint16_t *restrict x, const uint16_t *restrict g, uint16_t *restrict dx, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) store16_bf16(dx + i, load16_bf16(g + i) * gelu_slope16(load16_bf16(x + i)));
    if (i < n) {
        uint16_t tx[16], tg[16], o[16];
        pad16(tx, x + i, n - i, 2);
        pad16(tg, g + i, n - i, 2);
        store16_bf16(o, load16_bf16(tg) * gelu_slope16(load16_bf16(tx)));
        memcpy(dx + i, o, (size_t)(n - i) * 2);
    }
}

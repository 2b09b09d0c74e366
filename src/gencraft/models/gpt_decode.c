/* One GPT decode step for one sequence, in C: gencraft's batch-1 CPU hot path.
 *
 * Batch-1 decoding reads every weight once per token, so a step is bound by how fast the CPU
 * streams the weights from memory. In PyTorch the step is ~50 small ops around the matmuls, each
 * a few microseconds of dispatch (a large share of a small model's step), and no BLAS
 * matrix-vector product streams at the machine's full read bandwidth (docs/performance.md). This file does the whole
 * step (embedding, every block, final norm, output layer) as a few passes over the weights, split
 * over the cores by a small thread pool of its own, and reads the model's tensors in place (the
 * caller passes their addresses; nothing is copied or re-packed).
 *
 * The model is gencraft's GPT (models/gpt.py): pre-norm blocks, LayerNorm, fused q/k/v
 * projection, tanh-approximated GELU, learned positions. Weights are float32, bfloat16 or 8-bit
 * (q8, below) and ``[out, in]`` row-major (nn.Linear's layout); the KV cache is ``[n_layer, 1,
 * n_head, max_len, head_dim]`` in float32 or bfloat16; activations stay in float32 throughout.
 *
 * Built on first use by models/native.py with the system C compiler (-O3 -march=native); the
 * inner loops use GCC's vector extensions, which compile to AVX-512, AVX2 or SSE as the CPU has.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "simd.h"

/* tanh-approximated GELU over y[0..n) in place (simd.h's gelu16). Every
   element goes through the vector code (the tail padded), so a value does not depend on where a
   thread's chunk happened to start: the result is the same on any number of threads. */
static void gelu_tanh(float *y, int n) {
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        f32x16 g = gelu16(load16(y + i));
        memcpy(y + i, &g, 64);
    }
    if (i < n) {
        float tail[16] = {0};
        memcpy(tail, y + i, sizeof(float) * (size_t)(n - i));
        f32x16 g = gelu16(load16(tail));
        memcpy(y + i, &g, sizeof(float) * (size_t)(n - i));
    }
}

static inline f32x16 load16_w(const void *w, int bf16, long i) { /* 16 weights from w[i] as float32 */
    return bf16 ? load16_bf16((const uint16_t *)w + i) : load16((const float *)w + i);
}

static inline float weight_at(const void *w, int bf16, long i) {
    return bf16 ? bf16_to_f32(((const uint16_t *)w)[i]) : ((const float *)w)[i];
}

/* One weight row (or cached key) at a time, with x: the products read each thread's rows as one
   sequential stream. Reading several rows side by side (4 or 8 streams, ld apart) was the earlier
   kernel, and read at half the rate of one stream (docs/performance.md); four accumulators keep
   the multiply-adds off one dependency chain. */
static inline float row_dot(const void *row, int bf16, const float *x, int n) {
    f32x16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    int i = 0;
    for (; i + 64 <= n; i += 64) {
        a0 += load16_w(row, bf16, i) * load16(x + i);
        a1 += load16_w(row, bf16, i + 16) * load16(x + i + 16);
        a2 += load16_w(row, bf16, i + 32) * load16(x + i + 32);
        a3 += load16_w(row, bf16, i + 48) * load16(x + i + 48);
    }
    for (; i + 16 <= n; i += 16) a0 += load16_w(row, bf16, i) * load16(x + i);
    float s = hsum((a0 + a1) + (a2 + a3));
    for (; i < n; i++) s += weight_at(row, bf16, i) * x[i];
    return s;
}

#if defined(__AVX512BF16__) && defined(__AVX512F__)
#include <immintrin.h>
/* With AVX512-BF16 (vdpbf16ps: 32 products of bfloat16 pairs summed into 16 float32 lanes in one
   instruction) the input goes to bfloat16 too, as the PyTorch bf16 path's activations are, and a
   step is bound by memory again: the widening kernel (below, for CPUs without it) needs ~4
   instructions per 32 weights and was compute-bound (docs/performance.md). */
#define HAVE_DPBF16 1
static inline __m512 dp32(__m512 a, const uint16_t *w, const uint16_t *x) {
    return _mm512_dpbf16_ps(a, (__m512bh)_mm512_loadu_si512((const void *)w),
                            (__m512bh)_mm512_loadu_si512((const void *)x));
}

/* one bfloat16 row with xb (x rounded to bfloat16), n a multiple of 32 */
static float row_dot_bf16_dp(const uint16_t *w, const uint16_t *xb, int n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int i = 0;
    for (; i + 128 <= n; i += 128) {
        a0 = dp32(a0, w + i, xb + i), a1 = dp32(a1, w + i + 32, xb + i + 32);
        a2 = dp32(a2, w + i + 64, xb + i + 64), a3 = dp32(a3, w + i + 96, xb + i + 96);
    }
    for (; i < n; i += 32) a0 = dp32(a0, w + i, xb + i);
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}
#else
#define HAVE_DPBF16 0
/* One bfloat16 row, n a multiple of 32, against x2: x reordered by pairs (x2 = pair_order(x)). A
   32-bit word holds two weights; ``u << 16`` is the even one as a float32, ``u & 0xffff0000`` the
   odd one, which saves widening every 16 weights (faster: docs/performance.md). */
typedef int32_t i32x16u __attribute__((vector_size(64), aligned(4)));

static inline f32x16 pairs32(f32x16 a, const uint16_t *w, const float *x2) {
    i32x16u u = *(const i32x16u *)w;
    i32x16u lo = u << 16, hi = u & (int32_t)0xffff0000;
    f32x16 fl, fh;
    memcpy(&fl, &lo, 64), memcpy(&fh, &hi, 64);
    return a + fl * load16(x2) + fh * load16(x2 + 16);
}

static float row_dot_bf16_pairs(const uint16_t *w, const float *x2, int n) {
    f32x16 a0 = {0}, a1 = {0};
    int i = 0;
    for (; i + 64 <= n; i += 64) a0 = pairs32(a0, w + i, x2 + i), a1 = pairs32(a1, w + i + 32, x2 + i + 32);
    for (; i < n; i += 32) a0 = pairs32(a0, w + i, x2 + i);
    return hsum(a0 + a1);
}

/* x2[32b + i] = x[32b + 2i], x2[32b + 16 + i] = x[32b + 2i + 1]: the order row_dot_bf16_pairs reads */
static void pair_order(const float *x, int n, float *x2) {
    for (int b = 0; b < n; b += 32)
        for (int i = 0; i < 16; i++) x2[b + i] = x[b + 2 * i], x2[b + 16 + i] = x[b + 2 * i + 1];
}

#endif

/* ---------------------------------------------------------------- 8-bit weights
 *
 * A q8 matrix is one buffer: the weights as unsigned bytes, w + 128 for w in [-127, 127] (row r at
 * r * cols), then, at the next 64-byte boundary, one float32 scale per row (weight = (byte - 128) *
 * scale). The input is quantized per block of 64 values to signed bytes with a float scale each
 * (q8_input), and a row is a sum over blocks of scale_b * (sum of byte products): with AVX512-VNNI
 * one vpdpbusd does 64 of those products (unsigned weight bytes x signed input bytes), so a row of
 * 768 weights is 12 instructions of products, and a step reads a quarter of the float32 bytes.
 * The +128 offset of the weights comes back as 128 * sum over blocks of scale_b * sum(q_b), the
 * same for every row (``corr``). cols must be a multiple of 64.
 */
#define QB 64

static inline const float *q8_scales(const void *w, long rows, long cols) {
    return (const float *)((const char *)w + ((rows * cols + 63) & ~63L));
}

/* xq[cols] signed bytes, xs[cols / QB] their scales; returns corr */
static float q8_input(const float *x, int cols, int8_t *xq, float *xs) {
    float corr = 0.0f;
    for (int b = 0; b < cols / QB; b++) {
        const float *v = x + b * QB;
        float m = 0.0f;
        for (int i = 0; i < QB; i++) m = fabsf(v[i]) > m ? fabsf(v[i]) : m;
        float sc = m / 127.0f, inv = m > 0.0f ? 127.0f / m : 0.0f;
        int sum = 0;
        for (int i = 0; i < QB; i++) {
            int q = (int)lrintf(v[i] * inv);
            xq[b * QB + i] = (int8_t)(q > 127 ? 127 : q < -127 ? -127 : q);
            sum += xq[b * QB + i];
        }
        xs[b] = sc;
        corr += 128.0f * sc * (float)sum;
    }
    return corr;
}

#if defined(__AVX512VNNI__) && defined(__AVX512F__)
#include <immintrin.h>
#define HAVE_VNNI 1
static float row_dot_q8(const uint8_t *w, const int8_t *xq, const float *xs, int n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0;
    const __m512i z = _mm512_setzero_si512();
    int b = 0, nb = n / QB;
    for (; b + 2 <= nb; b += 2) { /* two independent chains */
        __m512i d0 = _mm512_dpbusd_epi32(z, _mm512_loadu_si512(w + b * QB), _mm512_loadu_si512(xq + b * QB));
        __m512i d1 = _mm512_dpbusd_epi32(z, _mm512_loadu_si512(w + b * QB + QB), _mm512_loadu_si512(xq + b * QB + QB));
        a0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d0), _mm512_set1_ps(xs[b]), a0);
        a1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d1), _mm512_set1_ps(xs[b + 1]), a1);
    }
    for (; b < nb; b++) {
        __m512i d0 = _mm512_dpbusd_epi32(z, _mm512_loadu_si512(w + b * QB), _mm512_loadu_si512(xq + b * QB));
        a0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d0), _mm512_set1_ps(xs[b]), a0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}
#else
#define HAVE_VNNI 0
static float row_dot_q8(const uint8_t *w, const int8_t *xq, const float *xs, int n) {
    float s = 0.0f;
    for (int b = 0; b < n / QB; b++) {
        int32_t d = 0;
        for (int i = 0; i < QB; i++) d += (int32_t)w[b * QB + i] * (int32_t)xq[b * QB + i];
        s += xs[b] * (float)d;
    }
    return s;
}
#endif

static void layer_norm(const float *x, const float *w, const float *b, float eps, int n, float *out) {
    float mean = 0.0f, var = 0.0f;
    for (int i = 0; i < n; i++) mean += x[i];
    mean /= (float)n;
    for (int i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
    float r = 1.0f / sqrtf(var / (float)n + eps);
    for (int i = 0; i < n; i++) out[i] = (x[i] - mean) * r * (w ? w[i] : 1.0f) + (b ? b[i] : 0.0f);
}

/* ---------------------------------------------------------------- thread pool
 *
 * The caller's thread is worker 0; up to MAX_THREADS - 1 more are started on first use. A job is
 * a function run by every thread of the job with its thread index; the work inside it is handed
 * out in chunks from an atomic counter, so a thread that is late (descheduled) takes fewer chunks.
 * Between jobs the workers spin for SPIN_NS, then sleep on a condition variable: a decode step's
 * jobs follow each other within microseconds, and waking a sleeping thread costs far more.
 */
#define MAX_THREADS 16
#define SPIN_NS 300000L /* 0.3 ms: longer than the gap between two decode steps */

typedef void (*job_fn)(void *arg, int tid);

static struct {
    int started;                 /* workers running */
    pthread_t th[MAX_THREADS];
    _Atomic unsigned long gen;   /* bumped for every job */
    _Atomic int done;            /* workers done with the current job */
    _Atomic int sleepers;
    job_fn fn;
    void *arg;
    int nth;                     /* threads taking part in the current job */
    unsigned long start_gen[MAX_THREADS];
    pthread_mutex_t mu;
    pthread_cond_t cv;
} pool = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static void *worker(void *p) {
    int tid = (int)(intptr_t)p;
    unsigned long seen = pool.start_gen[tid]; /* the job count when it was created, not when it first ran */
    for (;;) {
        long t0 = now_ns();
        unsigned long g;
        int n = 0;
        while ((g = atomic_load_explicit(&pool.gen, memory_order_acquire)) == seen) {
            __builtin_ia32_pause();
            if (++n % 256 == 0 && now_ns() - t0 > SPIN_NS) {
                pthread_mutex_lock(&pool.mu);
                atomic_fetch_add(&pool.sleepers, 1);
                while ((g = atomic_load(&pool.gen)) == seen) pthread_cond_wait(&pool.cv, &pool.mu);
                atomic_fetch_sub(&pool.sleepers, 1);
                pthread_mutex_unlock(&pool.mu);
                break;
            }
        }
        seen = g;
        if (tid < pool.nth) {
            pool.fn(pool.arg, tid);
            atomic_fetch_add_explicit(&pool.done, 1, memory_order_release);
        }
    }
    return NULL;
}

static pthread_mutex_t step_mu = PTHREAD_MUTEX_INITIALIZER; /* one step at a time uses the pool */

/* fork() while another thread is in a step: the child gets neither the workers nor a usable lock */
static void before_fork(void) { pthread_mutex_lock(&step_mu); }
static void after_fork_parent(void) { pthread_mutex_unlock(&step_mu); }
static int async_pending; /* a job left running on worker 1 after a step (prefetch_next): a child has none */
static void after_fork_child(void) {
    pool.started = 0;
    async_pending = 0;
    atomic_store(&pool.sleepers, 0);
    pthread_mutex_init(&pool.mu, NULL);
    pthread_cond_init(&pool.cv, NULL);
    pthread_mutex_init(&step_mu, NULL);
}

static int pool_start(int want) {
    static int registered = 0;
    if (!registered) {
        pthread_atfork(before_fork, after_fork_parent, after_fork_child);
        registered = 1;
    }
    while (pool.started < want - 1 && pool.started < MAX_THREADS - 1) {
        pool.start_gen[pool.started + 1] = atomic_load(&pool.gen);
        if (pthread_create(&pool.th[pool.started], NULL, worker, (void *)(intptr_t)(pool.started + 1)) != 0) break;
        pthread_detach(pool.th[pool.started]);
        pool.started++;
    }
    return pool.started + 1;
}

/* One job may run on worker 1 after a step has returned (prefetch_next, below): the pool's next job
   stops it and waits for it first (async_pending is declared with the fork handlers). */
static _Atomic int async_stop;

static void finish_async(void) {
    if (!async_pending) return;
    atomic_store_explicit(&async_stop, 1, memory_order_relaxed);
    while (atomic_load_explicit(&pool.done, memory_order_acquire) < 1) __builtin_ia32_pause();
    async_pending = 0;
    atomic_store_explicit(&async_stop, 0, memory_order_relaxed);
}

static void post_job(job_fn fn, void *arg, int nth) { /* hand workers 1..nth-1 a job, waking sleepers */
    pool.fn = fn, pool.arg = arg, pool.nth = nth;
    atomic_store(&pool.done, 0);
    atomic_fetch_add_explicit(&pool.gen, 1, memory_order_seq_cst);
    if (atomic_load(&pool.sleepers) > 0) {
        pthread_mutex_lock(&pool.mu);
        pthread_cond_broadcast(&pool.cv);
        pthread_mutex_unlock(&pool.mu);
    }
}

static void start_async(job_fn fn, void *arg) { /* fn(arg, 1) on worker 1; the caller returns at once */
    post_job(fn, arg, 2);
    async_pending = 1;
}

static void run_job(job_fn fn, void *arg, int nth) {
    if (nth <= 1) {
        fn(arg, 0);
        return;
    }
    finish_async();
    post_job(fn, arg, nth);
    fn(arg, 0);
    while (atomic_load_explicit(&pool.done, memory_order_acquire) < nth - 1) __builtin_ia32_pause();
}

/* ---------------------------------------------------------------- jobs */

enum { EPI_NONE, EPI_GELU, EPI_ADD }; /* what happens to each output: y = act(W x + b) or y += W x + b */
enum { W_F32, W_BF16, W_Q8 };         /* weight types */

typedef struct {
    const void *w;
    const float *b;
    int bf16, rows, cols, epilogue, min_chunk, nth, share; /* bf16: the weight type, W_F32/W_BF16/W_Q8 */
    _Atomic int claimed[MAX_THREADS]; /* shares taken */
    const float *x, *x2; /* x2: x for the bfloat16 row kernel (cols % 32 == 0), else NULL */
    const int8_t *xq; const float *xs, *scales; float corr; /* q8: the quantized input, the row scales */
    float *y;
    _Atomic int next;
} matvec_job;

static inline void store_row(matvec_job *j, int r, float s) { /* y = s + b or y += s + b */
    float v = s + (j->b ? j->b[r] : 0.0f);
    if (j->epilogue == EPI_ADD) j->y[r] += v;
    else j->y[r] = v;
}

static void matvec_rows(matvec_job *j, int r0, int r1) {
    long ld = j->cols, esz = j->bf16 == W_Q8 ? 1 : j->bf16 ? 2 : 4;
    const char *w = j->w;
    if (j->bf16 == W_Q8) {
        for (int r = r0; r < r1; r++)
            store_row(j, r, (row_dot_q8((const uint8_t *)w + r * ld, j->xq, j->xs, j->cols) - j->corr) * j->scales[r]);
        if (j->epilogue == EPI_GELU) gelu_tanh(j->y + r0, r1 - r0);
        return;
    }
    for (int r = r0; r < r1; r++) {
        const void *row = w + r * ld * esz;
        float s;
        if (j->x2)
#if HAVE_DPBF16
            s = row_dot_bf16_dp(row, (const uint16_t *)j->x2, j->cols);
#else
            s = row_dot_bf16_pairs(row, j->x2, j->cols);
#endif
        else
            s = row_dot(row, j->bf16, j->x, j->cols);
        store_row(j, r, s);
    }
    if (j->epilogue == EPI_GELU) gelu_tanh(j->y + r0, r1 - r0);
}

/* Each thread first takes a fixed share (7/8 of the rows split evenly: one long stream each, which
   the hardware prefetcher follows best; a share whose thread is late goes to whoever is free), then
   the rest in guided chunks: each takes half its thread's share of what is left (whole groups of 8
   rows, at least min_chunk), so the threads finish together even when one started late. */
static void matvec_task(void *arg, int tid) {
    matvec_job *j = arg;
    /* its own share first, then any share whose thread has not started it (descheduled, say) */
    for (int k = 0; j->share && k < j->nth; k++) {
        int s = (tid + k) % j->nth;
        if (!atomic_exchange(&j->claimed[s], 1)) matvec_rows(j, s * j->share, (s + 1) * j->share);
    }
    int r0 = atomic_load(&j->next), c;
    for (;;) {
        do {
            int left = j->rows - r0;
            if (left <= 0) return;
            c = (left / (2 * j->nth)) & ~7;
            c = c < j->min_chunk ? j->min_chunk : c;
        } while (!atomic_compare_exchange_weak(&j->next, &r0, r0 + c));
        matvec_rows(j, r0, r0 + c < j->rows ? r0 + c : j->rows);
        r0 = atomic_load(&j->next);
    }
}

/* y = W x + b (or y += W x + b, or y = gelu(W x + b)); xbuf: room for cols floats */
static void matvec(const void *w, const float *b, int bf16, int rows, int cols, const float *x, float *y,
                   int epilogue, int nth, float *xbuf) {
    matvec_job j = {.w = w, .b = b, .bf16 = bf16, .rows = rows, .cols = cols, .epilogue = epilogue,
                    .x = x, .y = y, .nth = nth};
    if (bf16 == W_Q8) { /* xbuf: the input as bytes, then their block scales */
        int8_t *xq = (int8_t *)xbuf;
        float *xs = (float *)((char *)xbuf + ((cols + 63) & ~63));
        j.corr = q8_input(x, cols, xq, xs);
        j.xq = xq, j.xs = xs, j.scales = q8_scales(w, rows, cols);
    } else if (bf16 && cols % 32 == 0) { /* the bfloat16 row kernel's input: bfloat16 (HAVE_DPBF16) or pair order */
#if HAVE_DPBF16
        for (int i = 0; i < cols; i += 32) /* two float32 vectors to one of bfloat16, rounded to nearest even */
            _mm512_storeu_si512((void *)((uint16_t *)xbuf + i),
                                (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i)));
#else
        pair_order(x, cols, xbuf);
#endif
        j.x2 = xbuf;
    }
    /* at least ~16 KB of weights a chunk: fewer atomics than the work is worth below that */
    int min_rows = (int)(16384 / ((long)cols * (bf16 == W_Q8 ? 1 : bf16 ? 2 : 4)));
    j.min_chunk = min_rows < 8 ? 8 : (min_rows + 7) & ~7;
    j.share = nth > 1 ? (int)((long)rows * 7 / (8 * nth)) & ~7 : 0;
    atomic_init(&j.next, j.share * nth);
    run_job(matvec_task, &j, nth);
}

typedef struct {
    const float *qkv;  /* this position's q, k, v: [3, C] */
    void *k, *v;       /* this layer's cache: [n_head, max_len, hd] */
    int cache_bf16, n_head, hd, max_len, pos;
    float *scores;     /* [n_head, max_len] */
    float *out;        /* [C] */
    _Atomic int next;
} attn_job;

/* o += p * row (a cached value, float32 or bfloat16) */
static inline void row_axpy(float p, const void *row, int bf16, float *o, int n) {
    int d = 0;
    for (; d + 16 <= n; d += 16) {
        f32x16 acc = load16(o + d) + p * load16_w(row, bf16, d);
        memcpy(o + d, &acc, 64);
    }
    for (; d < n; d++) o[d] += p * weight_at(row, bf16, d);
}

/* s[0..n) = exp(s - m) in place (the tail padded, as in gelu_tanh); returns their sum */
static float softmax_exp(float *s, int n, float m) {
    f32x16 acc = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        f32x16 e = exp16(load16(s + i) - m);
        memcpy(s + i, &e, 64);
        acc += e;
    }
    float sum = hsum(acc);
    if (i < n) {
        float tail[16];
        for (int k = 0; k < 16; k++) tail[k] = i + k < n ? s[i + k] : m - 100.0f;
        f32x16 e = exp16(load16(tail) - m);
        memcpy(s + i, &e, sizeof(float) * (size_t)(n - i));
        for (int k = 0; k < n - i; k++) sum += e[k];
    }
    return sum;
}

/* One head's query q over cache positions lo..pos (K, V: that head's rows, [max_len, hd], float32 or
 * bfloat16), after writing this position's key kn and value vn at pos: o = softmax(q.K / sqrt(hd)) V,
 * s: room for the scores. The weights streamed since the last step have evicted the cache, so each
 * value row is fetched while its key is scored, and the keys ATTN_AHEAD rows ahead: the value pass
 * then reads from cache; its sums stay in registers, 64 at a time (the same sums as row_axpy's).
 * 124M bf16 at positions 96-160: 0.42 -> 0.30 ms of a step on two threads (docs/performance.md). */
#define ATTN_AHEAD 8
static void attend(const float *q, const float *kn, const float *vn, char *K, char *V, int lo, int pos, int bf,
                   int hd, float *s, float *o) {
    long row = (long)hd * (bf ? 2 : 4);
    if (bf) {
        for (int d = 0; d < hd; d++) ((uint16_t *)(K + pos * row))[d] = f32_to_bf16(kn[d]);
        for (int d = 0; d < hd; d++) ((uint16_t *)(V + pos * row))[d] = f32_to_bf16(vn[d]);
    } else {
        memcpy(K + pos * row, kn, row);
        memcpy(V + pos * row, vn, row);
    }
    K += lo * row, V += lo * row;
    int T = pos + 1 - lo;
    float scale = 1.0f / sqrtf((float)hd), m = -INFINITY;
    for (int t = 0; t < T; t++) {
        for (long l = 0; l < row; l += 64) {
            __builtin_prefetch(K + (t + ATTN_AHEAD) * row + l, 0, 3); /* past the end: a no-op read hint */
            __builtin_prefetch(V + t * row + l, 0, 3);
        }
        s[t] = row_dot(K + t * row, bf, q, hd) * scale;
        m = s[t] > m ? s[t] : m;
    }
    float sum = softmax_exp(s, T, m);
    if (hd % 64 == 0) {
        for (int d = 0; d < hd; d += 64) {
            f32x16 o0 = {0}, o1 = {0}, o2 = {0}, o3 = {0};
            for (int t = 0; t < T; t++) {
                const char *vr = V + t * row;
                float p = s[t];
                o0 = o0 + p * load16_w(vr, bf, d), o1 = o1 + p * load16_w(vr, bf, d + 16);
                o2 = o2 + p * load16_w(vr, bf, d + 32), o3 = o3 + p * load16_w(vr, bf, d + 48);
            }
            memcpy(o + d, &o0, 64), memcpy(o + d + 16, &o1, 64), memcpy(o + d + 32, &o2, 64), memcpy(o + d + 48, &o3, 64);
        }
    } else {
        memset(o, 0, sizeof(float) * (size_t)hd);
        for (int t = 0; t < T; t++) row_axpy(s[t], V + t * row, bf, o, hd);
    }
    for (int d = 0; d < hd; d++) o[d] /= sum;
}

/* One query per head over the cache (after writing this position's key and value into it). */
static void attn_task(void *arg, int tid) {
    (void)tid;
    attn_job *j = arg;
    int C = j->n_head * j->hd, hd = j->hd, bf = j->cache_bf16;
    long row = (long)hd * (bf ? 2 : 4);
    for (;;) {
        int h = atomic_fetch_add(&j->next, 1);
        if (h >= j->n_head) break;
        char *K = (char *)j->k + (long)h * j->max_len * row, *V = (char *)j->v + (long)h * j->max_len * row;
        const float *q = j->qkv + h * hd, *kn = j->qkv + C + h * hd, *vn = j->qkv + 2 * C + h * hd;
        attend(q, kn, vn, K, V, 0, j->pos, bf, hd, j->scores + (long)h * j->max_len, j->out + h * hd);
    }
}

/* ---------------------------------------------------------------- the step
 *
 * dims: n_layer, n_head, n_embd, vocab, max_len (cache positions), weight type (W_F32, W_BF16, or
 *       W_Q8: the matrices and the tied wte/lm_head in q8, wpe float32), cache_bf16, n_positions (rows of wpe)
 * ptrs: wte, wpe, ln_f.w, ln_f.b, lm_head, k cache, v cache, scratch, then per layer 12:
 *       ln_1.w, ln_1.b, c_attn.w, c_attn.b, attn.c_proj.w, attn.c_proj.b,
 *       ln_2.w, ln_2.b, c_fc.w, c_fc.b, mlp.c_proj.w, mlp.c_proj.b
 * LayerNorm parameters and biases are float32 (NULL where absent); scratch holds
 * 2*C + 3*C + C + 4*C + 4*C + n_head*max_len floats. Returns the threads used (0 on bad arguments).
 */
#define HEAD_PTRS 8
#define LAYER_PTRS 12

static int decode(const int64_t *dims, const int64_t *ptrs, float eps, int token, int pos, int threads,
                  float *logits) {
    int L = (int)dims[0], H = (int)dims[1], C = (int)dims[2], V = (int)dims[3], max_len = (int)dims[4];
    int wbf = (int)dims[5], cbf = (int)dims[6], hd = C / H;
    if (L <= 0 || H <= 0 || C % H || token < 0 || token >= V || pos < 0 || pos >= max_len || pos >= dims[7]) return 0;
    if (wbf == W_Q8 && C % QB) return 0;
    int nth = threads < 1 ? 1 : pool_start(threads);
    if (nth > threads) nth = threads;
#define P(i) ((void *)(intptr_t)ptrs[i])
    const void *wte = P(0), *wpe = P(1), *head = P(4);
    const float *lnf_w = P(2), *lnf_b = P(3);
    char *kc = P(5), *vc = P(6);
    float *x = P(7), *h = x + C, *qkv = h + C, *att = qkv + 3 * C, *ff = att + C, *xbuf = ff + 4 * C;
    float *scores = xbuf + 4 * C;
    long esz = cbf ? 2 : 4, layer_cache = (long)H * max_len * hd * esz;

    for (int i = 0; i < C; i++) { /* q8: the token's row of the (tied) q8 table, float32 positions */
        float e = wbf == W_Q8 ? ((float)((const uint8_t *)wte)[(long)token * C + i] - 128.0f) * q8_scales(wte, V, C)[token]
                  : wbf ? bf16_to_f32(((const uint16_t *)wte)[(long)token * C + i]) : ((const float *)wte)[(long)token * C + i];
        float p = wbf == W_BF16 ? bf16_to_f32(((const uint16_t *)wpe)[(long)pos * C + i]) : ((const float *)wpe)[(long)pos * C + i];
        x[i] = e + p;
    }
    for (int l = 0; l < L; l++) {
        const int64_t *lp = ptrs + HEAD_PTRS + (long)l * LAYER_PTRS;
#define LP(i) ((void *)(intptr_t)lp[i])
        layer_norm(x, LP(0), LP(1), eps, C, h);
        matvec(LP(2), LP(3), wbf, 3 * C, C, h, qkv, EPI_NONE, nth, xbuf);
        attn_job aj = {.qkv = qkv, .k = kc + l * layer_cache, .v = vc + l * layer_cache, .cache_bf16 = cbf,
                       .n_head = H, .hd = hd, .max_len = max_len, .pos = pos, .scores = scores, .out = att};
        atomic_init(&aj.next, 0);
        /* a short context is not worth waking the other threads for */
        run_job(attn_task, &aj, (long)(pos + 1) * C * esz * 2 >= 65536 ? nth : 1);
        matvec(LP(4), LP(5), wbf, C, C, att, x, EPI_ADD, nth, xbuf);
        layer_norm(x, LP(6), LP(7), eps, C, h);
        matvec(LP(8), LP(9), wbf, 4 * C, C, h, ff, EPI_GELU, nth, xbuf);
        matvec(LP(10), LP(11), wbf, C, 4 * C, ff, x, EPI_ADD, nth, xbuf);
#undef LP
    }
    layer_norm(x, lnf_w, lnf_b, eps, C, h);
    matvec(head, NULL, wbf, V, C, h, logits, EPI_NONE, nth, xbuf);
#undef P
    return nth;
}

/* While the caller chooses the next token (~0.2 ms of Python at 124M), the memory bus is idle: worker 1
   reads the first layer's matrices (one byte a cache line) so the next step finds them in the L3 cache,
   until that step starts and stops it. */
typedef struct {
    const char *p[4];
    long n[4];
} prefetch_arg;
static prefetch_arg prefetch;
static volatile unsigned prefetch_sink;

static void prefetch_task(void *arg, int tid) {
    if (tid != 1) return;
    const prefetch_arg *a = arg;
    unsigned acc = 0;
    for (int k = 0; k < 4; k++)
        for (long off = 0; off < a->n[k]; off += 64) {
            acc += *(const volatile unsigned char *)(a->p[k] + off);
            if ((off & 4095) == 0 && atomic_load_explicit(&async_stop, memory_order_relaxed)) goto out;
        }
out:
    prefetch_sink = acc;
}

static int prefetch_on(void) {
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("GENCRAFT_PREFETCH");
        on = !(e && e[0] == '0');
    }
    return on;
}

static void prefetch_next(const int64_t *dims, const int64_t *ptrs) {
    if (!prefetch_on() || pool_start(2) < 2) return;
    long C = dims[2], esz = dims[5] == W_Q8 ? 1 : dims[5] ? 2 : 4;
    const int64_t *lp = ptrs + HEAD_PTRS;
    const int idx[4] = {2, 4, 8, 10};
    const long rows[4] = {3 * C, C, 4 * C, C}, cols[4] = {C, C, C, 4 * C};
    for (int k = 0; k < 4; k++) prefetch.p[k] = (const char *)(intptr_t)lp[idx[k]], prefetch.n[k] = rows[k] * cols[k] * esz;
    start_async(prefetch_task, &prefetch);
}

int gc_gpt_decode(const int64_t *dims, const int64_t *ptrs, float eps, int token, int pos, int threads,
                  float *logits) {
    pthread_mutex_lock(&step_mu);
    finish_async();
    int n = decode(dims, ptrs, eps, token, pos, threads, logits);
    if (n) prefetch_next(dims, ptrs);
    pthread_mutex_unlock(&step_mu);
    return n;
}

/* 1 when bfloat16 products round their input to bfloat16 too (AVX512-BF16), else 0 */
int gc_bf16_input(void) { return HAVE_DPBF16; }

/* 1 when q8 products use AVX512-VNNI (one instruction per 64 weights), else 0 */
int gc_q8_vnni(void) { return HAVE_VNNI; }

/* y = W x for one matrix (type W_F32, W_BF16 or W_Q8): the step's product on its own (tests, and
   the bandwidth it reaches) */
int gc_matvec(const void *w, int bf16, int rows, int cols, const float *x, float *y, int threads) {
    if (bf16 == W_Q8 && cols % QB) return 0;
    float *xbuf = malloc(sizeof(float) * (size_t)(cols + 32));
    if (!xbuf) return 0;
    pthread_mutex_lock(&step_mu);
    int nth = threads < 1 ? 1 : pool_start(threads);
    if (nth > threads) nth = threads;
    matvec(w, NULL, bf16, rows, cols, x, y, EPI_NONE, nth, xbuf);
    pthread_mutex_unlock(&step_mu);
    free(xbuf);
    return nth;
}

/* ---------------------------------------------------------------- several rows in one step
 *
 * A batch of B sequences (continuous batching's running batch) advanced one position each, in one
 * call: every weight row is read once per step and multiplied with every row's activation (the
 * single-row step read the weights B times, the PyTorch path pays ~50 ops' dispatch a step and the
 * GIL between them), and every row attends over its own positions only. The cache is the batch's
 * ``[n_layer, B, n_head, max_len, head_dim]``: rows share the write position ``length``, and row b's
 * real positions start at ``lo[b]`` (its left padding before that is never read; ``pos[b]``: the
 * position embedding of its new token).
 */

#define TX 4 /* activation rows a weight row is read for at once (row_k) */

typedef struct {
    const void *w;
    const float *b;
    int bf16, rows, cols, epilogue, nx, chunk; /* nx: activation rows; y is [nx, rows] */
    const void *wp;                            /* the weights packed (below), or NULL */
    const float *x;                            /* [nx, cols] */
    float *y;
    _Atomic int next;
} matmul_job;

/* GCC reloads a vector for every product it is used in (folding the load into the multiply-add),
   which doubles a tile's loads; an empty asm that "changes" the values keeps them in registers */
#if defined(__AVX512F__)
#define IN_REGS4(a, b, c, d) __asm__("" : "+v"(a), "+v"(b), "+v"(c), "+v"(d))
#else
#define IN_REGS4(a, b, c, d) ((void)0)
#endif

/* One weight row with NB activation rows, each pair summed exactly as row_dot sums it (four
   accumulators over blocks of 64, then blocks of 16, then one at a time): the weight row is read as
   one stream, and every row's result equals the single-row step's bit for bit (float32). */
static inline __attribute__((always_inline)) void row_k(const matmul_job *j, int r, int b0, const int NB,
                                                        const int BF) {
    const long esz = BF ? 2 : 4;
    const int n = j->cols;
    const void *wr = (const char *)j->w + (long)r * n * esz;
    const float *xr[TX];
    for (int c = 0; c < NB; c++) xr[c] = j->x + (long)(b0 + c) * n;
    f32x16 a0[TX], a1[TX], a2[TX], a3[TX];
    for (int c = 0; c < NB; c++) a0[c] = a1[c] = a2[c] = a3[c] = (f32x16){0};
    int i = 0;
    for (; i + 64 <= n; i += 64) {
        f32x16 w0 = load16_w(wr, BF, i), w1 = load16_w(wr, BF, i + 16), w2 = load16_w(wr, BF, i + 32),
               w3 = load16_w(wr, BF, i + 48);
        if (NB > 1) IN_REGS4(w0, w1, w2, w3);
        for (int c = 0; c < NB; c++) {
            a0[c] += w0 * load16(xr[c] + i);
            a1[c] += w1 * load16(xr[c] + i + 16);
            a2[c] += w2 * load16(xr[c] + i + 32);
            a3[c] += w3 * load16(xr[c] + i + 48);
        }
    }
    for (; i + 16 <= n; i += 16) {
        f32x16 w0 = load16_w(wr, BF, i);
        for (int c = 0; c < NB; c++) a0[c] += w0 * load16(xr[c] + i);
    }
    for (int c = 0; c < NB; c++) {
        float s = hsum((a0[c] + a1[c]) + (a2[c] + a3[c]));
        for (int k = i; k < n; k++) s += weight_at(wr, BF, k) * xr[c][k];
        float *y = j->y + (long)(b0 + c) * j->rows + r;
        float v = s + (j->b ? j->b[r] : 0.0f);
        if (j->epilogue == EPI_ADD) *y += v;
        else *y = v;
    }
}

static void matmul_row(const matmul_job *j, int r, int b0, int nb) {
    if (j->bf16) {
        switch (nb) {
        case 1: row_k(j, r, b0, 1, 1); break;
        case 2: row_k(j, r, b0, 2, 1); break;
        case 3: row_k(j, r, b0, 3, 1); break;
        default: row_k(j, r, b0, 4, 1); break;
        }
    } else {
        switch (nb) {
        case 1: row_k(j, r, b0, 1, 0); break;
        case 2: row_k(j, r, b0, 2, 0); break;
        case 3: row_k(j, r, b0, 3, 0); break;
        default: row_k(j, r, b0, 4, 0); break;
        }
    }
}

static void matmul_task(void *arg, int tid) {
    (void)tid;
    matmul_job *j = arg;
    for (;;) {
        int r0 = atomic_fetch_add(&j->next, j->chunk);
        if (r0 >= j->rows) return;
        int r1 = r0 + j->chunk < j->rows ? r0 + j->chunk : j->rows;
        for (int r = r0; r < r1; r++)
            for (int b = 0; b < j->nx; b += TX) matmul_row(j, r, b, j->nx - b < TX ? j->nx - b : TX);
        if (j->epilogue == EPI_GELU)
            for (int b = 0; b < j->nx; b++) gelu_tanh(j->y + (long)b * j->rows + r0, r1 - r0);
    }
}

/* Packed weights, for batches of PACK_ROWS rows and more: W [rows, cols] stored as blocks of PB output
   rows, column-major inside a block (``Wp[blk][k][0..PB)``, the rows padded with zeros to a whole
   block; models/native.py packs them once). Then a product is outer products: for each column k,
   the block's PB weights (four vectors, one stream) times each activation row's x[k] (a broadcast),
   into PB x PX accumulators that are stored as they are -- no horizontal sums, a quarter of a load per
   multiply-add. The sums run over k in order (one accumulator per output): they differ from row_dot's
   in the last bits. */
#define PB 64
#define PX 6

static inline __attribute__((always_inline)) void packed_k(const matmul_job *j, int blk, int b0, const int NB,
                                                           const int BF) {
    const int K = j->cols;
    const long esz = BF ? 2 : 4;
    const char *wp = (const char *)j->wp + (long)blk * K * PB * esz;
    const float *xr[PX];
    for (int c = 0; c < NB; c++) xr[c] = j->x + (long)(b0 + c) * K;
    f32x16 acc[4][PX];
    for (int i = 0; i < 4; i++)
        for (int c = 0; c < NB; c++) acc[i][c] = (f32x16){0};
    for (int k = 0; k < K; k++) {
        const char *wk = wp + (long)k * PB * esz;
        f32x16 w0 = load16_w(wk, BF, 0), w1 = load16_w(wk, BF, 16), w2 = load16_w(wk, BF, 32), w3 = load16_w(wk, BF, 48);
        IN_REGS4(w0, w1, w2, w3);
        for (int c = 0; c < NB; c++) {
            float xs = xr[c][k];
            acc[0][c] += w0 * xs, acc[1][c] += w1 * xs, acc[2][c] += w2 * xs, acc[3][c] += w3 * xs;
        }
    }
    for (int c = 0; c < NB; c++)
        for (int i = 0; i < 4; i++) {
            int r = blk * PB + i * 16, n = j->rows - r < 16 ? j->rows - r : 16;
            if (n <= 0) break;
            float v[16], *y = j->y + (long)(b0 + c) * j->rows + r;
            memcpy(v, &acc[i][c], 64);
            for (int d = 0; d < n; d++) {
                float t = v[d] + (j->b ? j->b[r + d] : 0.0f);
                if (j->epilogue == EPI_ADD) y[d] += t;
                else y[d] = t;
            }
        }
}

static void packed_block(const matmul_job *j, int blk, int b0, int nb) {
#define PK(NB) (j->bf16 ? packed_k(j, blk, b0, NB, 1) : packed_k(j, blk, b0, NB, 0))
    switch (nb) {
    case 1: PK(1); break;
    case 2: PK(2); break;
    case 3: PK(3); break;
    case 4: PK(4); break;
    case 5: PK(5); break;
    default: PK(6); break;
    }
#undef PK
}

static void packed_task(void *arg, int tid) {
    (void)tid;
    matmul_job *j = arg;
    int blocks = (j->rows + PB - 1) / PB;
    for (;;) {
        int blk = atomic_fetch_add(&j->next, 1);
        if (blk >= blocks) return;
        for (int b = 0; b < j->nx; b += PX) packed_block(j, blk, b, j->nx - b < PX ? j->nx - b : PX);
        if (j->epilogue == EPI_GELU) {
            int r0 = blk * PB, n = j->rows - r0 < PB ? j->rows - r0 : PB;
            for (int b = 0; b < j->nx; b++) gelu_tanh(j->y + (long)b * j->rows + r0, n);
        }
    }
}

/* Y = X W^T + b for nx rows of X (or Y += ..., or gelu(...)); Y is [nx, rows] */
static void matmul(const void *w, const void *wp, const float *b, int bf16, int rows, int cols, int nx,
                   const float *x, float *y, int epilogue, int nth) {
    matmul_job j = {.w = w, .wp = wp, .b = b, .bf16 = bf16, .rows = rows, .cols = cols, .epilogue = epilogue,
                    .nx = nx, .x = x, .y = y};
    if (wp) { /* one block of PB rows at a time */
        atomic_init(&j.next, 0);
        run_job(packed_task, &j, nth);
        return;
    }
    /* chunks of about 8 per thread, at least ~16 KB of weights each */
    int per = rows / (8 * (nth > 0 ? nth : 1));
    int min_rows = (int)(16384 / ((long)cols * (bf16 ? 2 : 4)));
    j.chunk = per < min_rows ? min_rows : per;
    atomic_init(&j.next, 0);
    run_job(matmul_task, &j, nth);
}

typedef struct {
    const float *qkv;  /* [nx, 3C] */
    char *k, *v;       /* this layer's cache: [B, n_head, max_len, hd] */
    const int *lo;     /* [nx] each row's first real position */
    int cache_bf16, n_head, hd, max_len, length, nx;
    float *scores;     /* [nx * n_head, max_len] */
    float *out;        /* [nx, C] */
    _Atomic int next;
} attn_rows_job;

/* One query per (row, head) over that row's positions lo[b]..length (after writing its new key and
   value at length): the single-row step's attention, per row. */
static void attn_rows_task(void *arg, int tid) {
    (void)tid;
    attn_rows_job *j = arg;
    int C = j->n_head * j->hd, hd = j->hd, bf = j->cache_bf16, pos = j->length;
    long row = (long)hd * (bf ? 2 : 4);
    for (;;) {
        int task = atomic_fetch_add(&j->next, 1);
        if (task >= j->nx * j->n_head) break;
        int b = task / j->n_head, h = task % j->n_head, lo = j->lo[b];
        lo = lo < 0 ? 0 : lo > pos ? pos : lo;
        long base = ((long)b * j->n_head + h) * j->max_len * row;
        char *K = j->k + base, *V = j->v + base;
        const float *qkv = j->qkv + (long)b * 3 * C;
        const float *q = qkv + h * hd, *kn = qkv + C + h * hd, *vn = qkv + 2 * C + h * hd;
        attend(q, kn, vn, K, V, lo, pos, bf, hd, j->scores + (long)task * j->max_len, j->out + (long)b * C + h * hd);
    }
}

/* dims and ptrs as for decode (the weight type W_F32 or W_BF16), dims[8]: the cache's rows B; packed:
 * NULL, or the packed matrices (lm_head, then per layer c_attn, attn.c_proj, c_fc, mlp.c_proj);
 * nx rows advance (nx == B), tokens[b], pos[b] (position embedding row), lo[b] (first real cache
 * position) for each; length: the position every row writes. scratch (ptrs[7]) holds
 * nx * (10 * C + n_head * max_len) floats; logits is [nx, V]. Returns the threads used (0 on bad
 * arguments). */
static int decode_rows(const int64_t *dims, const int64_t *ptrs, const int64_t *packed, float eps, int nx,
                       const int *tokens, const int *pos, const int *lo, int length, int threads, float *logits) {
    int L = (int)dims[0], H = (int)dims[1], C = (int)dims[2], V = (int)dims[3], max_len = (int)dims[4];
    int wbf = (int)dims[5], cbf = (int)dims[6], B = (int)dims[8], hd = C / H;
    if (L <= 0 || H <= 0 || C % H || wbf == W_Q8 || nx != B || nx <= 0 || length < 0 || length >= max_len) return 0;
    for (int b = 0; b < nx; b++)
        if (tokens[b] < 0 || tokens[b] >= V || pos[b] < 0 || pos[b] >= dims[7]) return 0;
    int nth = threads < 1 ? 1 : pool_start(threads);
    if (nth > threads) nth = threads;
#define P(i) ((void *)(intptr_t)ptrs[i])
    const void *wte = P(0), *wpe = P(1), *head = P(4);
    const float *lnf_w = P(2), *lnf_b = P(3);
    char *kc = P(5), *vc = P(6);
    long N = nx;
    float *x = P(7), *h = x + N * C, *qkv = h + N * C, *att = qkv + N * 3 * C, *ff = att + N * C;
    float *scores = ff + N * 4 * C;
    long esz = cbf ? 2 : 4, layer_cache = (long)B * H * max_len * hd * esz;
#define PP(i) (packed ? (const void *)(intptr_t)packed[i] : NULL)

    for (int b = 0; b < nx; b++)
        for (int i = 0; i < C; i++) {
            long e = (long)tokens[b] * C + i, p = (long)pos[b] * C + i;
            x[(long)b * C + i] = (wbf ? bf16_to_f32(((const uint16_t *)wte)[e]) : ((const float *)wte)[e]) +
                                 (wbf ? bf16_to_f32(((const uint16_t *)wpe)[p]) : ((const float *)wpe)[p]);
        }
    for (int l = 0; l < L; l++) {
        const int64_t *lp = ptrs + HEAD_PTRS + (long)l * LAYER_PTRS;
#define LP(i) ((void *)(intptr_t)lp[i])
        for (int b = 0; b < nx; b++) layer_norm(x + (long)b * C, LP(0), LP(1), eps, C, h + (long)b * C);
        matmul(LP(2), PP(1 + 4 * l), LP(3), wbf, 3 * C, C, nx, h, qkv, EPI_NONE, nth);
        attn_rows_job aj = {.qkv = qkv, .k = kc + l * layer_cache, .v = vc + l * layer_cache, .lo = lo,
                            .cache_bf16 = cbf, .n_head = H, .hd = hd, .max_len = max_len, .length = length,
                            .nx = nx, .scores = scores, .out = att};
        atomic_init(&aj.next, 0);
        long span = 0;
        for (int b = 0; b < nx; b++) span += length + 1 - (lo[b] < 0 ? 0 : lo[b] > length ? length : lo[b]);
        run_job(attn_rows_task, &aj, span * C * esz * 2 >= 65536 ? nth : 1);
        matmul(LP(4), PP(2 + 4 * l), LP(5), wbf, C, C, nx, att, x, EPI_ADD, nth);
        for (int b = 0; b < nx; b++) layer_norm(x + (long)b * C, LP(6), LP(7), eps, C, h + (long)b * C);
        matmul(LP(8), PP(3 + 4 * l), LP(9), wbf, 4 * C, C, nx, h, ff, EPI_GELU, nth);
        matmul(LP(10), PP(4 + 4 * l), LP(11), wbf, C, 4 * C, nx, ff, x, EPI_ADD, nth);
#undef LP
    }
    for (int b = 0; b < nx; b++) layer_norm(x + (long)b * C, lnf_w, lnf_b, eps, C, h + (long)b * C);
    matmul(head, PP(0), NULL, wbf, V, C, nx, h, logits, EPI_NONE, nth);
#undef PP
#undef P
    return nth;
}

int gc_gpt_decode_rows(const int64_t *dims, const int64_t *ptrs, const int64_t *packed, float eps, int nx,
                       const int *tokens, const int *pos, const int *lo, int length, int threads, float *logits) {
    pthread_mutex_lock(&step_mu);
    int n = decode_rows(dims, ptrs, packed, eps, nx, tokens, pos, lo, length, threads, logits);
    pthread_mutex_unlock(&step_mu);
    return n;
}

/* Y = X W^T for nx rows of X (W float32 or bfloat16, [rows, cols]; wp: the same packed, or NULL): the
   multi-row step's product on its own (tests, and the rate it reaches) */
int gc_matmul(const void *w, const void *wp, int bf16, int rows, int cols, int nx, const float *x, float *y,
              int threads) {
    pthread_mutex_lock(&step_mu);
    int nth = threads < 1 ? 1 : pool_start(threads);
    if (nth > threads) nth = threads;
    matmul(w, wp, NULL, bf16, rows, cols, nx, x, y, EPI_NONE, nth);
    pthread_mutex_unlock(&step_mu);
    return nth;
}

/* One-permutation MinHash signatures of character shingles (gencraft.data.dedupe).
 *
 * For each document: every character k-gram is hashed exactly as dedupe.shingle_hashes does it
 * (a polynomial hash of the k code points with FNV-1a's 64-bit prime, finished with splitmix64,
 * top 32 bits kept); the top 7 bits of that value pick one of 128 bins and the low 25 bits are the
 * value; each bin keeps its smallest value. Empty bins (documents of fewer than a few hundred
 * shingles) borrow the value of the next non-empty bin to the right, circularly, plus their
 * distance times 2^25 ("rotation" densification, Shrivastava and Li 2014), so two documents agree
 * in a bin with probability equal to their Jaccard similarity. One pass over the text per
 * document: 128 independent permutations would cost 128 passes.
 *
 * dedupe.oph_numpy computes the same numbers without a compiler (tests check both agree).
 */
#include <stdint.h>
#include <string.h>

#define BINS 128
#define VBITS 25
#define EMPTY 0xFFFFFFFFu

static inline uint64_t splitmix(uint64_t h) {
    h ^= h >> 30;
    h *= 0xBF58476D1CE4E5B9ULL;
    h ^= h >> 27;
    h *= 0x94D049BB133111EBULL;
    h ^= h >> 31;
    return h;
}

/* cp: the code points of all documents back to back; off[d]..off[d+1] is document d's; ks[d] its
 * shingle size; sig: n * BINS values out. */
void gc_oph(const uint32_t *cp, const int64_t *off, const int32_t *ks, int64_t n, uint32_t *sig) {
    for (int64_t d = 0; d < n; d++) {
        const uint32_t *t = cp + off[d];
        int64_t len = off[d + 1] - off[d];
        int64_t k = ks[d];
        int64_t m = len - k + 1;
        if (m < 1) m = 1;
        if (k > len) k = len;
        uint32_t s[BINS];
        for (int i = 0; i < BINS; i++) s[i] = EMPTY;
        for (int64_t i = 0; i < m; i++) {
            uint64_t h = (uint64_t)k;
            for (int64_t j = 0; j < k; j++) h = h * 0x100000001B3ULL + t[i + j];
            uint32_t v = (uint32_t)(splitmix(h) >> 32);
            uint32_t b = v >> VBITS, x = v & ((1u << VBITS) - 1u);
            if (x < s[b]) s[b] = x;
        }
        uint32_t *out = sig + d * BINS;
        /* densify: walk twice around the circle from the right, remembering the last full bin */
        int next = -1;
        for (int i = 2 * BINS - 1; i >= 0; i--) {
            int b = i % BINS;
            if (s[b] != EMPTY) next = i;
            if (i < BINS) {
                out[b] = s[b] != EMPTY ? s[b] : (next < 0 ? EMPTY : s[next % BINS] + ((uint32_t)(next - i) << VBITS));
            }
        }
    }
}

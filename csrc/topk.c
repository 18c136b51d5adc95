/*
 * topk.c -- exact top-k bookkeeping shared by every ISA level (baseline code).
 */
#include <stdlib.h>

#include "ql_internal.h"

static inline int pair_less(int32_t ka, int64_t ia, int32_t kb, int64_t ib) {
    return ka < kb || (ka == kb && ia < ib);
}

/* Sort keys/ids together by (key, id): insertion sort for short runs,
 * otherwise an in-place heap sort (no allocation, deterministic). */
static void sift_down(int32_t *keys, int64_t *ids, size_t start, size_t end) {
    size_t root = start;
    for (;;) {
        size_t child = 2 * root + 1;
        if (child >= end) return;
        size_t best = root;
        if (pair_less(keys[best], ids[best], keys[child], ids[child])) best = child;
        if (child + 1 < end && pair_less(keys[best], ids[best], keys[child + 1], ids[child + 1]))
            best = child + 1;
        if (best == root) return;
        int32_t tk = keys[root]; keys[root] = keys[best]; keys[best] = tk;
        int64_t ti = ids[root]; ids[root] = ids[best]; ids[best] = ti;
        root = best;
    }
}

static void sort_pairs(int32_t *keys, int64_t *ids, size_t n) {
    if (n < 2) return;
    if (n <= 32) {
        for (size_t i = 1; i < n; i++) {
            int32_t k = keys[i];
            int64_t id = ids[i];
            size_t j = i;
            while (j > 0 && pair_less(k, id, keys[j - 1], ids[j - 1])) {
                keys[j] = keys[j - 1];
                ids[j] = ids[j - 1];
                j--;
            }
            keys[j] = k;
            ids[j] = id;
        }
        return;
    }
    for (size_t s = n / 2; s-- > 0;) sift_down(keys, ids, s, n);
    for (size_t end = n - 1; end > 0; end--) {
        int32_t tk = keys[0]; keys[0] = keys[end]; keys[end] = tk;
        int64_t ti = ids[0]; ids[0] = ids[end]; ids[end] = ti;
        sift_down(keys, ids, 0, end);
    }
}

/* Quickselect-free compaction: the buffer holds cap pairs; find the k-th
 * smallest by a partial heap selection of the k best (max-heap of size k). */
void ql_topk_compact(ql_topk_t *t) {
    size_t k = t->k, n = t->size;
    if (n <= k) return;
    int32_t *keys = t->keys;
    int64_t *ids = t->ids;
    /* Build a max-heap (by (key,id)) over the first k entries: the root is the
     * worst of the kept set. */
    for (size_t i = 0; i < k; i++) {
        size_t c = i;
        while (c > 0) {
            size_t p = (c - 1) / 2;
            if (!pair_less(keys[p], ids[p], keys[c], ids[c])) break;
            int32_t tk = keys[p]; keys[p] = keys[c]; keys[c] = tk;
            int64_t ti = ids[p]; ids[p] = ids[c]; ids[c] = ti;
            c = p;
        }
    }
    for (size_t i = k; i < n; i++) {
        if (pair_less(keys[i], ids[i], keys[0], ids[0])) {
            keys[0] = keys[i];
            ids[0] = ids[i];
            /* sift down in a max-heap of size k */
            size_t root = 0;
            for (;;) {
                size_t child = 2 * root + 1;
                if (child >= k) break;
                size_t best = root;
                if (pair_less(keys[best], ids[best], keys[child], ids[child])) best = child;
                if (child + 1 < k &&
                    pair_less(keys[best], ids[best], keys[child + 1], ids[child + 1]))
                    best = child + 1;
                if (best == root) break;
                int32_t tk = keys[root]; keys[root] = keys[best]; keys[best] = tk;
                int64_t ti = ids[root]; ids[root] = ids[best]; ids[best] = ti;
                root = best;
            }
        }
    }
    t->size = k;
    /* Later pairs have higher ids, so only a strictly smaller key can enter. */
    t->thr = keys[0];
}

size_t ql_topk_finish(ql_topk_t *t, int32_t *out_keys, int64_t *out_ids) {
    if (t->size > t->k) ql_topk_compact(t);
    sort_pairs(t->keys, t->ids, t->size);
    for (size_t i = 0; i < t->size; i++) {
        out_keys[i] = t->keys[i];
        out_ids[i] = t->ids[i];
    }
    return t->size;
}

ql_topk_t *ql_topk_alloc(size_t nq, size_t k) {
    if (k == 0 || nq == 0) return NULL;
    size_t cap = k < 64 ? k + 64 : 2 * k;
    if (cap / 2 < k || nq > SIZE_MAX / sizeof(ql_topk_t)) return NULL;
    if (cap > SIZE_MAX / nq / (sizeof(int32_t) + sizeof(int64_t))) return NULL;
    ql_topk_t *s = (ql_topk_t *)calloc(nq, sizeof(ql_topk_t));
    if (!s) return NULL;
    int64_t *ids = (int64_t *)malloc(nq * cap * sizeof(int64_t));
    int32_t *keys = (int32_t *)malloc(nq * cap * sizeof(int32_t));
    if (!ids || !keys) {
        free(ids);
        free(keys);
        free(s);
        return NULL;
    }
    for (size_t i = 0; i < nq; i++) {
        s[i].keys = keys + i * cap;
        s[i].ids = ids + i * cap;
        s[i].size = 0;
        s[i].cap = cap;
        s[i].k = k;
        s[i].thr = INT32_MAX;
    }
    return s;
}

void ql_topk_free(ql_topk_t *s) {
    if (!s) return;
    free(s[0].keys);
    free(s[0].ids);
    free(s);
}

# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""quantlib._core -- the one Cython binding over the C kernels (csrc/).

Takes pre-validated, C-contiguous typed memoryviews (``const`` so read-only
and memory-mapped arrays work), releases the GIL around every kernel call and
maps C status codes to exceptions.  No policy, no defaults: the Python
modules of the package validate and shape everything.
"""
from libc.stdint cimport uint8_t, int8_t, int32_t, int64_t, uint64_t

cdef extern from "quantlib.h" nogil:
    int QL_OK, QL_ENOMEM, QL_EINVAL, QL_EUNKNOWN_ISA, QL_EUNSUPPORTED, QL_ISA_COUNT
    unsigned QL_DOT_MAX_DIM_SIGNED, QL_DOT_MAX_DIM_UNSIGNED
    int ql_init()
    int ql_set_isa(const char *name)
    const char *ql_active_isa()
    const char *ql_isa_name(int level)
    int ql_isa_compiled(int level)
    int ql_isa_usable(int level)
    int ql_isa_lookup(const char *name)
    uint64_t ql_isa_required(int level)
    int ql_kernel_count()
    const char *ql_kernel_name(int slot)
    const char *ql_kernel_family(int slot)
    int ql_kernel_level(int slot)
    uint64_t ql_cpu_features()
    const char *ql_feature_name(int bit)
    void ql_pack_sign_f32(const float *x, size_t n, size_t d, uint8_t *out, uint8_t m)
    void ql_pack_sign_f64(const double *x, size_t n, size_t d, uint8_t *out, uint8_t m)
    size_t ql_quantize_f32(const float *x, size_t n, size_t d, const float *start,
                           const float *step, uint8_t *out, uint8_t m)
    size_t ql_quantize_f64(const double *x, size_t n, size_t d, const double *start,
                           const double *step, uint8_t *out, uint8_t m)
    size_t ql_minmax_f32(const float *x, size_t n, size_t d, float *mn, float *mx)
    size_t ql_minmax_f64(const double *x, size_t n, size_t d, double *mn, double *mx)
    int ql_hamming_matrix(const uint8_t *a, size_t na, const uint8_t *b, size_t nb,
                          size_t nbytes, int32_t *out, size_t ldo)
    int ql_hamming_topk(const uint8_t *q, size_t nq, const uint8_t *c, size_t nc,
                        size_t nbytes, size_t k, int64_t id_offset,
                        int32_t *out_dist, int64_t *out_ids)
    int ql_dot_matrix(const uint8_t *a, size_t na, const uint8_t *b, size_t nb, size_t d,
                      int is_signed, int32_t *out, size_t ldo)
    int ql_dot_topk(const uint8_t *q, size_t nq, const uint8_t *c, size_t nc, size_t d,
                    int is_signed, size_t k, int64_t id_offset,
                    int32_t *out_score, int64_t *out_ids)
    int ql_f32_topk(const float *q, size_t nq, const float *c, size_t nc, size_t d, size_t k,
                    int64_t id_offset, float *out_score, int64_t *out_ids, int *nonfinite)
    int ql_rescore_codes(const double *w, size_t nq, size_t d, const uint8_t *codes,
                         size_t ld, size_t n_rows, int is_signed, const int64_t *ids, size_t m,
                         double *out)
    int ql_rescore_bits(const double *q, size_t nq, size_t d, const uint8_t *codes,
                        size_t ld, size_t n_rows, uint8_t xor_mask, const int64_t *ids, size_t m,
                        double *out)

DOT_MAX_DIM_SIGNED = QL_DOT_MAX_DIM_SIGNED
DOT_MAX_DIM_UNSIGNED = QL_DOT_MAX_DIM_UNSIGNED

ql_init()


cdef int _check(int rc) except -1:
    if rc == QL_OK:
        return 0
    if rc == QL_ENOMEM:
        raise MemoryError("quantlib: kernel workspace allocation failed")
    if rc == QL_EINVAL:
        raise ValueError("quantlib: argument out of range for the kernel")
    raise RuntimeError(f"quantlib: kernel returned status {rc}")


cdef int _need(bint ok, str what) except -1:
    """O(1) buffer-shape guard: the kernels trust these sizes, so a mismatch
    from a caller would read or write out of bounds (found with ASan by
    passing a too-small output to hamming_topk)."""
    if not ok:
        raise ValueError(f"quantlib._core: {what}")
    return 0


# ---- dispatch -----------------------------------------------------------
def isa_names():
    """Names of every level known to the dispatcher, in table order."""
    return [ql_isa_name(i).decode() for i in range(QL_ISA_COUNT)]


def compiled_isas():
    return [ql_isa_name(i).decode() for i in range(QL_ISA_COUNT) if ql_isa_compiled(i)]


def usable_isas():
    return [ql_isa_name(i).decode() for i in range(QL_ISA_COUNT) if ql_isa_usable(i)]


def active_isa():
    return ql_active_isa().decode()


def resolve_isa(str name):
    """Canonical level name of a level name or alias (e.g. "avx512" ->
    "avx512_icl"); None if unknown."""
    cdef bytes b = name.encode()
    cdef int lv = ql_isa_lookup(b)
    return None if lv < 0 else ql_isa_name(lv).decode()


def isa_required_features(str name):
    """Feature names (as cpu_features() spells them) the level requires at run time."""
    cdef bytes b = name.encode()
    cdef int lv = ql_isa_lookup(b)
    if lv < 0:
        raise ValueError(f"unknown ISA level {name!r}; known: {isa_names()}")
    cdef uint64_t f = ql_isa_required(lv)
    out = []
    cdef int bit
    for bit in range(64):
        fname = ql_feature_name(bit)
        if fname != NULL and (f >> bit) & 1:
            out.append(fname.decode())
    return out


def kernel_levels():
    """{kernel slot: (family, level serving it in the active table)}; a level
    that leaves a family out is served by its fallback level."""
    cdef int i
    out = {}
    for i in range(ql_kernel_count()):
        out[ql_kernel_name(i).decode()] = (ql_kernel_family(i).decode(),
                                           ql_isa_name(ql_kernel_level(i)).decode())
    return out


def cpu_features():
    cdef uint64_t f = ql_cpu_features()
    out = []
    cdef int bit
    for bit in range(64):
        name = ql_feature_name(bit)
        if name != NULL and (f >> bit) & 1:
            out.append(name.decode())
    return out


def set_isa(str name):
    """Select a kernel level; raises ValueError for unknown or unusable ones."""
    cdef bytes b = name.encode()
    cdef int rc = ql_set_isa(b)
    if rc == QL_EUNKNOWN_ISA:
        raise ValueError(f"unknown ISA level {name!r}; known: {isa_names()} or 'best'")
    if rc == QL_EUNSUPPORTED:
        raise ValueError(
            f"ISA level {name!r} is not usable here: compiled {compiled_isas()}, "
            f"usable on this CPU/OS {usable_isas()}")
    _check(rc)
    return active_isa()


# ---- quantization -------------------------------------------------------
def pack_sign_f32(const float[:, ::1] x, uint8_t[:, ::1] out, int xor_mask):
    cdef size_t n = x.shape[0], d = x.shape[1]
    _need(out.shape[0] == x.shape[0] and out.shape[1] == <Py_ssize_t>((d + 7) // 8), "out must be (n, ceil(d/8))")
    if n == 0 or d == 0:
        return
    with nogil:
        ql_pack_sign_f32(&x[0, 0], n, d, &out[0, 0], <uint8_t>xor_mask)


def pack_sign_f64(const double[:, ::1] x, uint8_t[:, ::1] out, int xor_mask):
    cdef size_t n = x.shape[0], d = x.shape[1]
    _need(out.shape[0] == x.shape[0] and out.shape[1] == <Py_ssize_t>((d + 7) // 8), "out must be (n, ceil(d/8))")
    if n == 0 or d == 0:
        return
    with nogil:
        ql_pack_sign_f64(&x[0, 0], n, d, &out[0, 0], <uint8_t>xor_mask)


def quantize_f32(const float[:, ::1] x, const float[::1] start, const float[::1] step,
                 uint8_t[:, ::1] out, int xor_mask):
    """Returns the number of NaN inputs."""
    cdef size_t n = x.shape[0], d = x.shape[1], nans = 0
    _need(out.shape[0] == x.shape[0] and out.shape[1] == x.shape[1] and start.shape[0] == x.shape[1]
          and step.shape[0] == x.shape[1], "out must be (n, d) and start/step (d,)")
    if n == 0 or d == 0:
        return 0
    with nogil:
        nans = ql_quantize_f32(&x[0, 0], n, d, &start[0], &step[0], &out[0, 0], <uint8_t>xor_mask)
    return nans


def quantize_f64(const double[:, ::1] x, const double[::1] start, const double[::1] step,
                 uint8_t[:, ::1] out, int xor_mask):
    cdef size_t n = x.shape[0], d = x.shape[1], nans = 0
    _need(out.shape[0] == x.shape[0] and out.shape[1] == x.shape[1] and start.shape[0] == x.shape[1]
          and step.shape[0] == x.shape[1], "out must be (n, d) and start/step (d,)")
    if n == 0 or d == 0:
        return 0
    with nogil:
        nans = ql_quantize_f64(&x[0, 0], n, d, &start[0], &step[0], &out[0, 0], <uint8_t>xor_mask)
    return nans


def minmax_f32(const float[:, ::1] x, float[::1] mn, float[::1] mx):
    """Update mn/mx in place with the column min/max of x; returns the NaN count."""
    cdef size_t n = x.shape[0], d = x.shape[1], nans = 0
    _need(mn.shape[0] == x.shape[1] and mx.shape[0] == x.shape[1], "mn/mx must be (d,)")
    if n == 0 or d == 0:
        return 0
    with nogil:
        nans = ql_minmax_f32(&x[0, 0], n, d, &mn[0], &mx[0])
    return nans


def minmax_f64(const double[:, ::1] x, double[::1] mn, double[::1] mx):
    cdef size_t n = x.shape[0], d = x.shape[1], nans = 0
    _need(mn.shape[0] == x.shape[1] and mx.shape[0] == x.shape[1], "mn/mx must be (d,)")
    if n == 0 or d == 0:
        return 0
    with nogil:
        nans = ql_minmax_f64(&x[0, 0], n, d, &mn[0], &mx[0])
    return nans


# ---- Hamming ------------------------------------------------------------
def hamming_matrix(const uint8_t[:, ::1] a, const uint8_t[:, ::1] b, int32_t[:, ::1] out):
    cdef size_t na = a.shape[0], nb = b.shape[0], nbytes = a.shape[1]
    _need(b.shape[1] == a.shape[1], "a and b must have the same width")
    _need(out.shape[0] == a.shape[0] and out.shape[1] >= b.shape[0], "out must be (na, >= nb)")
    if na == 0 or nb == 0 or nbytes == 0:
        return
    cdef int rc = 0
    with nogil:
        rc = ql_hamming_matrix(&a[0, 0], na, &b[0, 0], nb, nbytes, &out[0, 0], <size_t>out.shape[1])
    _check(rc)


def hamming_topk(const uint8_t[:, ::1] q, const uint8_t[:, ::1] c, size_t k, int64_t id_offset,
                 int32_t[:, ::1] out_dist, int64_t[:, ::1] out_ids):
    cdef size_t nq = q.shape[0], nc = c.shape[0], nbytes = q.shape[1]
    cdef int rc = 0
    _need(c.shape[1] == q.shape[1], "q and c must have the same width")
    _need(out_dist.shape[0] == q.shape[0] and <size_t>out_dist.shape[1] == min(k, nc)
          and out_ids.shape[0] == q.shape[0] and out_ids.shape[1] == out_dist.shape[1],
          "out_dist / out_ids must be (nq, min(k, nc))")
    if nq == 0 or nc == 0 or k == 0:
        return
    with nogil:
        rc = ql_hamming_topk(&q[0, 0], nq, &c[0, 0], nc, nbytes, k, id_offset,
                             &out_dist[0, 0], &out_ids[0, 0])
    _check(rc)


# ---- integer dot products -----------------------------------------------
def dot_matrix(const uint8_t[:, ::1] a, const uint8_t[:, ::1] b, bint is_signed,
               int32_t[:, ::1] out):
    cdef size_t na = a.shape[0], nb = b.shape[0], d = a.shape[1]
    _need(b.shape[1] == a.shape[1], "a and b must have the same width")
    _need(out.shape[0] == a.shape[0] and out.shape[1] >= b.shape[0], "out must be (na, >= nb)")
    if na == 0 or nb == 0 or d == 0:
        return
    cdef int rc = 0
    with nogil:
        rc = ql_dot_matrix(&a[0, 0], na, &b[0, 0], nb, d, is_signed, &out[0, 0], <size_t>out.shape[1])
    _check(rc)


def dot_topk(const uint8_t[:, ::1] q, const uint8_t[:, ::1] c, bint is_signed, size_t k,
             int64_t id_offset, int32_t[:, ::1] out_score, int64_t[:, ::1] out_ids):
    cdef size_t nq = q.shape[0], nc = c.shape[0], d = q.shape[1]
    cdef int rc = 0
    _need(c.shape[1] == q.shape[1], "q and c must have the same width")
    _need(out_score.shape[0] == q.shape[0] and <size_t>out_score.shape[1] == min(k, nc)
          and out_ids.shape[0] == q.shape[0] and out_ids.shape[1] == out_score.shape[1],
          "out_score / out_ids must be (nq, min(k, nc))")
    if nq == 0 or nc == 0 or k == 0:
        return
    with nogil:
        rc = ql_dot_topk(&q[0, 0], nq, &c[0, 0], nc, d, is_signed, k, id_offset,
                         &out_score[0, 0], &out_ids[0, 0])
    _check(rc)


def f32_topk(const float[:, ::1] q, const float[:, ::1] c, size_t k, int64_t id_offset,
             float[:, ::1] out_score, int64_t[:, ::1] out_ids):
    """Fused float32 inner-product top-k (descending score, ties to the lower
    id; the summation contract of csrc/ql_internal.h).  Returns True if every
    score was finite, False if one was NaN or +-inf (outputs then void)."""
    cdef size_t nq = q.shape[0], nc = c.shape[0], d = q.shape[1]
    cdef int rc = 0, bad = 0
    _need(c.shape[1] == q.shape[1], "q and c must have the same width")
    _need(out_score.shape[0] == q.shape[0] and <size_t>out_score.shape[1] == min(k, nc)
          and out_ids.shape[0] == q.shape[0] and out_ids.shape[1] == out_score.shape[1],
          "out_score / out_ids must be (nq, min(k, nc))")
    _need(d > 0, "float32 rows must have at least one dimension")
    if nq == 0 or nc == 0 or k == 0:
        return True
    with nogil:
        rc = ql_f32_topk(&q[0, 0], nq, &c[0, 0], nc, d, k, id_offset,
                         &out_score[0, 0], &out_ids[0, 0], &bad)
    _check(rc)
    return bad == 0


# ---- rescoring ----------------------------------------------------------
cdef int _check_rescore(int rc, const int64_t[:, ::1] ids, Py_ssize_t n) except -1:
    """QL_EINVAL from the rescoring kernels: an id >= n (checked in C, O(nq * m)
    against O(nq * m * d) for the rescoring itself)."""
    cdef Py_ssize_t i, t
    cdef int64_t bad = -1
    if rc == QL_EINVAL:
        for i in range(ids.shape[0]):
            for t in range(ids.shape[1]):
                if ids[i, t] >= n and ids[i, t] > bad:
                    bad = ids[i, t]
        if bad >= 0:
            raise ValueError(f"quantlib._core: candidate id {bad} out of range for {n} code rows")
    return _check(rc)


def rescore_codes(const double[:, ::1] w, const uint8_t[:, ::1] codes, bint is_signed,
                  const int64_t[:, ::1] ids, double[:, ::1] out):
    """out[i, t] = w[i] . codes[ids[i, t]] (ids must be < len(codes); <0 -> -inf).
    With is_signed the codes are int8 and read as c + 128 (see quantlib.h)."""
    cdef size_t nq = w.shape[0], d = w.shape[1], m = ids.shape[1]
    cdef size_t ld = codes.shape[1], n_rows = codes.shape[0]
    cdef int rc = 0
    _need(ids.shape[0] == w.shape[0] and out.shape[0] == w.shape[0] and out.shape[1] == ids.shape[1],
          "ids and out must be (nq, m)")
    _need(codes.shape[1] >= w.shape[1], "codes must have at least d columns")
    if nq == 0 or m == 0:
        return
    cdef const uint8_t *cp = &codes[0, 0] if codes.shape[0] > 0 else NULL
    with nogil:
        rc = ql_rescore_codes(&w[0, 0], nq, d, cp, ld, n_rows, is_signed, &ids[0, 0], m, &out[0, 0])
    _check_rescore(rc, ids, codes.shape[0])


def rescore_bits(const double[:, ::1] q, const uint8_t[:, ::1] codes, int xor_mask,
                 const int64_t[:, ::1] ids, double[:, ::1] out):
    cdef size_t nq = q.shape[0], d = q.shape[1], m = ids.shape[1]
    cdef size_t ld = codes.shape[1], n_rows = codes.shape[0]
    cdef int rc = 0
    _need(ids.shape[0] == q.shape[0] and out.shape[0] == q.shape[0] and out.shape[1] == ids.shape[1],
          "ids and out must be (nq, m)")
    _need(codes.shape[1] * 8 >= q.shape[1], "codes must have at least ceil(d/8) bytes per row")
    if nq == 0 or m == 0:
        return
    cdef const uint8_t *cp = &codes[0, 0] if codes.shape[0] > 0 else NULL
    with nogil:
        rc = ql_rescore_bits(&q[0, 0], nq, d, cp, ld, n_rows, <uint8_t>xor_mask, &ids[0, 0], m,
                             &out[0, 0])
    _check_rescore(rc, ids, codes.shape[0])

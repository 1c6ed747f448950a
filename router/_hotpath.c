/* Compiled kernels for the fast featurizer and Router.route().
 *
 *   ChunkIndex.pool   = StaticEmbedder.sums: split on whitespace, look each chunk's row
 *                       up, sum the rows.
 *   scan_bytes        = text_features' symbol-class and answer-choice counts.
 *   FastPath.p_pass   = Router.route()'s whole scoring for a static-embedding bundle:
 *                       pool, text_features, JointSpace.apply_one, ClusterPredictor.p_pass.
 *
 * Why C: for one request the Python versions spend their time in interpreter and numpy
 * call overhead and in allocations, not in arithmetic. Here a chunk costs one hash over
 * its characters and one probe of an open-addressing table, with no string created
 * unless the chunk is new, and a request allocates only its result.
 *
 * Each is tested against the Python function it replaces (tests/unit/test_hotpath.py),
 * and Router.load compares FastPath with the Python path before using it. The module
 * is optional: when it is not built, router/ runs the Python versions. It uses only
 * the CPython API and the buffer protocol (no numpy headers).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define N_GROUPS 8     /* symbol groups scan_bytes can count (bits of a table byte) */
#define MAX_WIDTH 2048 /* floats in a pooled row, a joint vector or a logit vector */
#define MAX_FEATURES 64
#define MAX_TIERS 64
#define MAX_PROBE 32 /* slots a lookup may visit in the chunk table */
#define ROW_BATCH 16 /* chunk rows fetched ahead of their sum */

#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(p) __builtin_prefetch(p)
#else
#define PREFETCH(p) ((void)0)
#endif

/* The loops that carry the arithmetic get an AVX2/FMA copy, picked at load time on CPUs
 * that have it (GCC function multi-versioning); other builds use the default copy. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define VECTOR_CLONES
#endif

/* acc[0:n] += row[0:n] */
VECTOR_CLONES static void
add_row(float *restrict acc, const float *restrict row, Py_ssize_t n)
{
    for (Py_ssize_t j = 0; j < n; j++)
        acc[j] += row[j];
}

/* out[0:k] = x[0:d] @ w[d, k], row by row so the inner loop runs over contiguous memory. */
VECTOR_CLONES static void
vec_mat(const float *restrict x, const float *restrict w, float *restrict out, Py_ssize_t d,
        Py_ssize_t k)
{
    memset(out, 0, (size_t)k * sizeof(float));
    for (Py_ssize_t i = 0; i < d; i++) {
        const float xi = x[i], *wr = w + i * k;
        for (Py_ssize_t j = 0; j < k; j++)
            out[j] += xi * wr[j];
    }
}

/* A C-contiguous float32 buffer with `ndim` dimensions. */
static int
float_buffer(PyObject *obj, Py_buffer *view, int ndim, int writable, const char *name)
{
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0)
        return -1;
    const char *f = view->format ? view->format : "B";
    if (f[0] == '<' || f[0] == '=' || f[0] == '@')
        f++;
    if (strcmp(f, "f") != 0 || view->ndim != ndim) {
        PyErr_Format(PyExc_TypeError, "%s must be a %d-D float32 array", name, ndim);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* -------------------------------------------------------------------------------- */
/* ChunkIndex: whitespace chunk -> row of a matrix, or its token ids                   */

/* One cache line per slot. A chunk of at most INLINE_CHARS one-byte characters (most
 * words) is compared against the copy kept in the slot: reaching into the key object
 * instead costs a cache miss per chunk, about half of what pooling a prompt costs. */
#define INLINE_CHARS 32
#define INLINED 1 /* chars holds the key (one-byte kind, len <= INLINE_CHARS) */
#define HAS_IDS 2 /* the chunk has no row (Python's cache is full): value.ids */

typedef struct {
    uint64_t hash;
    PyObject *key; /* the chunk (str, owned); NULL = empty slot */
    union {
        Py_ssize_t row;
        PyObject *ids; /* tuple of token ids (owned) */
    } value;
    int32_t len; /* in code points */
    int32_t flags;
    unsigned char chars[INLINE_CHARS];
} Slot;

typedef struct {
    PyObject_HEAD
    Slot *slots;     /* cache-line aligned, inside slots_mem */
    void *slots_mem;
    Py_ssize_t cap;  /* a power of two, kept at least twice `used` */
    Py_ssize_t used;
    Py_ssize_t limit;
} ChunkIndex;

static PyTypeObject ChunkIndexType;

static int
alloc_slots(ChunkIndex *self, Py_ssize_t cap)
{
    void *mem = PyMem_Calloc((size_t)cap * sizeof(Slot) + 64, 1);
    if (mem == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->slots_mem = mem;
    self->slots = (Slot *)(((uintptr_t)mem + 63) & ~(uintptr_t)63);
    self->cap = cap;
    return 0;
}

static int
key_equals(const Slot *s, int kind, const void *data, Py_ssize_t start, Py_ssize_t len)
{
    if (s->len != len)
        return 0;
    if (s->flags & INLINED) {
        if (kind == PyUnicode_1BYTE_KIND)
            return memcmp(s->chars, (const char *)data + start, (size_t)len) == 0;
        for (Py_ssize_t i = 0; i < len; i++)
            if (s->chars[i] != PyUnicode_READ(kind, data, start + i))
                return 0;
        return 1;
    }
    int kk = PyUnicode_KIND(s->key);
    const void *kd = PyUnicode_DATA(s->key);
    if (kk == kind)
        return memcmp(kd, (const char *)data + start * kind, (size_t)(len * kind)) == 0;
    for (Py_ssize_t i = 0; i < len; i++)
        if (PyUnicode_READ(kk, kd, i) != PyUnicode_READ(kind, data, start + i))
            return 0;
    return 1;
}

/* The slot holding the chunk, or the empty slot where it would go; NULL after MAX_PROBE
 * slots. The hash is not keyed, so text built to collide could make long runs: the bound
 * sends such chunks to Python's dict (SipHash) instead, at the cost of a call. */
static Slot *
probe(ChunkIndex *self, uint64_t h, int kind, const void *data, Py_ssize_t start,
      Py_ssize_t len)
{
    size_t mask = (size_t)self->cap - 1;
    size_t i = (size_t)h & mask;
    for (int step = 0; step < MAX_PROBE; step++) {
        Slot *s = &self->slots[i];
        if (s->key == NULL || (s->hash == h && key_equals(s, kind, data, start, len)))
            return s;
        i = (i + 1) & mask;
    }
    return NULL;
}

static int
grow(ChunkIndex *self)
{
    Slot *old = self->slots;
    void *old_mem = self->slots_mem;
    Py_ssize_t old_cap = self->cap;
    if (alloc_slots(self, old_cap * 2) < 0)
        return -1;
    size_t mask = (size_t)self->cap - 1;
    for (Py_ssize_t j = 0; j < old_cap; j++) {
        if (old[j].key == NULL)
            continue;
        size_t i = (size_t)old[j].hash & mask;
        while (self->slots[i].key != NULL)
            i = (i + 1) & mask;
        self->slots[i] = old[j];
    }
    PyMem_Free(old_mem);
    return 0;
}

#define ROW_IS_IDS (-2)

/* Keep the chunk's row (ids == NULL) or token ids in the table, if there is room.
 * Steals the reference to chunk. */
static int
remember(ChunkIndex *self, PyObject *text, uint64_t h, Py_ssize_t start, PyObject *chunk,
         Py_ssize_t row, PyObject *ids)
{
    Py_ssize_t len = PyUnicode_GET_LENGTH(chunk);
    if (self->used >= self->limit || len > INT32_MAX) {
        Py_DECREF(chunk);
        return 0;
    }
    if ((self->used + 1) * 2 > self->cap && grow(self) < 0) {
        Py_DECREF(chunk);
        return -1;
    }
    Slot *s = probe(self, h, PyUnicode_KIND(text), PyUnicode_DATA(text), start, len);
    if (s == NULL || s->key != NULL) { /* a run too long, or another thread was first */
        Py_DECREF(chunk);
        return 0;
    }
    s->hash = h;
    s->key = chunk;
    s->len = (int32_t)len;
    s->flags = PyUnicode_KIND(chunk) == PyUnicode_1BYTE_KIND && len <= INLINE_CHARS ? INLINED : 0;
    if (s->flags & INLINED)
        memcpy(s->chars, PyUnicode_DATA(chunk), (size_t)len);
    if (ids != NULL) {
        Py_INCREF(ids);
        s->value.ids = ids;
        s->flags |= HAS_IDS;
    } else {
        s->value.row = row;
    }
    self->used++;
    return 0;
}

/* A chunk not in the table: ask Python, which tokenizes it and returns its row in the
 * matrix or, when its own cache is full, its token ids (*ids, a new reference, and
 * ROW_IS_IDS returned); then remember the answer if there is room. */
static Py_ssize_t
miss(ChunkIndex *self, PyObject *lookup, PyObject *text, uint64_t h, Py_ssize_t start,
     Py_ssize_t end, Py_ssize_t n_rows, PyObject **ids)
{
    PyObject *chunk = PyUnicode_Substring(text, start, end);
    if (chunk == NULL)
        return -1;
    PyObject *res = PyObject_CallOneArg(lookup, chunk);
    if (res == NULL) {
        Py_DECREF(chunk);
        return -1;
    }
    Py_ssize_t row = ROW_IS_IDS;
    if (PyTuple_Check(res)) {
        *ids = res;
    } else {
        row = PyLong_AsSsize_t(res);
        Py_DECREF(res);
        if (row == -1 && PyErr_Occurred()) {
            Py_DECREF(chunk);
            return -1;
        }
        if (row < 0 || row >= n_rows) {
            Py_DECREF(chunk);
            PyErr_Format(PyExc_IndexError, "chunk row %zd outside the %zd-row matrix", row,
                         n_rows);
            return -1;
        }
    }
    /* The call ran Python code, which may have used this index: remember probes again. */
    if (remember(self, text, h, start, chunk, row, *ids) < 0) {
        Py_CLEAR(*ids);
        return -1;
    }
    return row;
}

static void
flush(float *acc, const float **pending, int *n_pending, Py_ssize_t width)
{
    for (int j = 0; j < *n_pending; j++)
        add_row(acc, pending[j], width);
    *n_pending = 0;
}

/* acc += the chunk's row computed from its token ids: the token rows summed in order
 * into `row` first, as numpy computes the rows it caches, so the bits are the same. */
static int
add_token_rows(float *acc, PyObject *ids, const Py_buffer *tokens, float *row)
{
    Py_ssize_t width = tokens->shape[1], n = PyTuple_GET_SIZE(ids);
    memset(row, 0, (size_t)width * sizeof(float));
    for (Py_ssize_t k = 0; k < n; k++) {
        Py_ssize_t id = PyLong_AsSsize_t(PyTuple_GET_ITEM(ids, k));
        if (id == -1 && PyErr_Occurred())
            return -1;
        if (id < 0 || id >= tokens->shape[0]) {
            PyErr_Format(PyExc_IndexError, "token id %zd outside the %zd-row token table", id,
                         tokens->shape[0]);
            return -1;
        }
        const float *t = (const float *)tokens->buf + id * width;
        if (k == 0)
            memcpy(row, t, (size_t)width * sizeof(float));
        else
            add_row(row, t, width);
    }
    add_row(acc, row, width);
    return 0;
}

/* acc[0:width] = sum of the rows of text's whitespace chunks (str.split() semantics),
 * added in text order whether a row comes from the matrix or from token ids, so that
 * the result does not depend on what is cached. Returns the number of chunks, or -1
 * with an exception set. */
static Py_ssize_t
pool_into(ChunkIndex *self, PyObject *text, const Py_buffer *rows, const Py_buffer *tokens,
          float *acc, PyObject *lookup)
{
    float scratch[MAX_WIDTH];
    Py_ssize_t width = rows->shape[1], n_rows = rows->shape[0];
    memset(acc, 0, (size_t)width * sizeof(float));
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text), i = 0, chunks = 0;
    const float *pending[ROW_BATCH];
    int n_pending = 0;
    while (i < n) {
        while (i < n && Py_UNICODE_ISSPACE(PyUnicode_READ(kind, data, i)))
            i++;
        if (i >= n)
            break;
        Py_ssize_t start = i;
        uint64_t h = 1469598103934665603ULL; /* FNV-1a over code points */
        for (; i < n; i++) {
            Py_UCS4 c = PyUnicode_READ(kind, data, i);
            if (Py_UNICODE_ISSPACE(c))
                break;
            h = (h ^ c) * 1099511628211ULL;
        }
        Slot *s = probe(self, h, kind, data, start, i - start);
        PyObject *ids = NULL; /* owned when set */
        Py_ssize_t row;
        if (s == NULL || s->key == NULL) {
            row = miss(self, lookup, text, h, start, i, n_rows, &ids);
        } else if (s->flags & HAS_IDS) {
            ids = Py_NewRef(s->value.ids);
            row = ROW_IS_IDS;
        } else {
            row = s->value.row;
        }
        if (row == ROW_IS_IDS) {
            flush(acc, pending, &n_pending, width);
            int failed = add_token_rows(acc, ids, tokens, scratch);
            Py_DECREF(ids);
            if (failed)
                return -1;
            chunks++;
            continue;
        }
        if (row < 0)
            return -1;
        /* A prompt's rows lie scattered over the matrix: request each one's memory as
         * soon as its row is known and add them in batches, so that the fetches overlap. */
        const float *r = (const float *)rows->buf + row * width;
        for (Py_ssize_t off = 0; off < width; off += 64 / (Py_ssize_t)sizeof(float))
            PREFETCH(r + off);
        pending[n_pending++] = r;
        if (n_pending == ROW_BATCH)
            flush(acc, pending, &n_pending, width);
        chunks++;
    }
    flush(acc, pending, &n_pending, width);
    return chunks;
}

static PyObject *
ChunkIndex_pool(ChunkIndex *self, PyObject *args)
{
    PyObject *text, *rows_obj, *tokens_obj, *out_obj, *lookup;
    if (!PyArg_ParseTuple(args, "UOOOO:pool", &text, &rows_obj, &tokens_obj, &out_obj, &lookup))
        return NULL;
    Py_buffer rows, tokens, out;
    if (float_buffer(rows_obj, &rows, 2, 0, "rows") < 0)
        return NULL;
    if (float_buffer(tokens_obj, &tokens, 2, 0, "tokens") < 0) {
        PyBuffer_Release(&rows);
        return NULL;
    }
    if (float_buffer(out_obj, &out, 1, 1, "out") < 0) {
        PyBuffer_Release(&rows);
        PyBuffer_Release(&tokens);
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t width = rows.shape[1];
    if (out.shape[0] != width || tokens.shape[1] != width || width > MAX_WIDTH) {
        PyErr_Format(PyExc_ValueError,
                     "out must hold %zd floats (a row), tokens have rows of that width", width);
    } else {
        Py_ssize_t chunks = pool_into(self, text, &rows, &tokens, (float *)out.buf, lookup);
        if (chunks >= 0)
            result = PyLong_FromSsize_t(chunks);
    }
    PyBuffer_Release(&rows);
    PyBuffer_Release(&tokens);
    PyBuffer_Release(&out);
    return result;
}

static PyObject *
ChunkIndex_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"limit", NULL};
    Py_ssize_t limit;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "n:ChunkIndex", kwlist, &limit))
        return NULL;
    if (limit < 1) {
        PyErr_SetString(PyExc_ValueError, "limit must be >= 1");
        return NULL;
    }
    ChunkIndex *self = (ChunkIndex *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    if (alloc_slots(self, 1024) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    self->limit = limit;
    return (PyObject *)self;
}

static void
ChunkIndex_dealloc(ChunkIndex *self)
{
    if (self->slots != NULL) {
        for (Py_ssize_t j = 0; j < self->cap; j++) {
            Py_XDECREF(self->slots[j].key);
            if (self->slots[j].flags & HAS_IDS)
                Py_DECREF(self->slots[j].value.ids);
        }
        PyMem_Free(self->slots_mem);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_ssize_t
ChunkIndex_len(ChunkIndex *self)
{
    return self->used;
}

static PyMethodDef ChunkIndex_methods[] = {
    {"pool", (PyCFunction)ChunkIndex_pool, METH_VARARGS,
     "pool(text, rows, tokens, out, lookup) -> chunks\n\n"
     "Set out to the sum of rows[lookup(chunk)] over text's whitespace chunks\n"
     "(str.split() semantics); lookup is called only for chunks not seen before and\n"
     "returns a row index, or, when it keeps no row, the chunk's token ids (a tuple),\n"
     "whose rows of tokens are then summed."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods ChunkIndex_as_sequence = {
    .sq_length = (lenfunc)ChunkIndex_len,
};

static PyTypeObject ChunkIndexType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "router._hotpath.ChunkIndex",
    .tp_basicsize = sizeof(ChunkIndex),
    .tp_dealloc = (destructor)ChunkIndex_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "ChunkIndex(limit): remembers the rows (or token ids) of at most `limit`\n"
              "chunks (64 bytes per slot, at most 4 slots per chunk).",
    .tp_methods = ChunkIndex_methods,
    .tp_as_sequence = &ChunkIndex_as_sequence,
    .tp_new = ChunkIndex_new,
};

/* -------------------------------------------------------------------------------- */
/* scan_bytes                                                                         */

/* Non-overlapping occurrences of pat, as bytes.count. */
static Py_ssize_t
count_pattern(const char *hay, Py_ssize_t n, const char *pat, Py_ssize_t m)
{
    if (m == 0)
        return n + 1;
    Py_ssize_t count = 0;
    const char *p = hay, *end = hay + n;
    while (end - p >= m) {
        const char *hit = memchr(p, pat[0], (size_t)(end - p - m + 1));
        if (hit == NULL)
            break;
        if (memcmp(hit, pat, (size_t)m) == 0) {
            count++;
            p = hit + m;
        } else {
            p = hit + 1;
        }
    }
    return count;
}

/* counts[k] = bytes of raw whose table entry has bit k set; returns the pattern count. */
static Py_ssize_t
scan_into(const unsigned char *raw, Py_ssize_t n, const unsigned char *table,
          PyObject *patterns, Py_ssize_t counts[N_GROUPS])
{
    Py_ssize_t hist[256] = {0}, matches = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        hist[raw[i]]++;
    memset(counts, 0, N_GROUPS * sizeof(Py_ssize_t));
    for (int v = 0; v < 256; v++)
        if (table[v] && hist[v])
            for (int k = 0; k < N_GROUPS; k++)
                if (table[v] >> k & 1)
                    counts[k] += hist[v];
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(patterns); i++) {
        PyObject *pat = PyTuple_GET_ITEM(patterns, i);
        matches += count_pattern((const char *)raw, n, PyBytes_AS_STRING(pat),
                                 PyBytes_GET_SIZE(pat));
    }
    return matches;
}

static int
check_patterns(PyObject *patterns)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(patterns); i++)
        if (!PyBytes_Check(PyTuple_GET_ITEM(patterns, i))) {
            PyErr_SetString(PyExc_TypeError, "patterns must be a tuple of bytes");
            return -1;
        }
    return 0;
}

static PyObject *
scan_bytes(PyObject *mod, PyObject *args)
{
    Py_buffer raw, table;
    PyObject *patterns, *result = NULL;
    if (!PyArg_ParseTuple(args, "y*y*O!:scan_bytes", &raw, &table, &PyTuple_Type, &patterns))
        return NULL;
    if (table.len != 256) {
        PyErr_SetString(PyExc_ValueError, "table must have 256 bytes");
    } else if (check_patterns(patterns) == 0) {
        Py_ssize_t counts[N_GROUPS];
        Py_ssize_t matches = scan_into(raw.buf, raw.len, table.buf, patterns, counts);
        result = Py_BuildValue("(nnnnnnnnn)", counts[0], counts[1], counts[2], counts[3],
                               counts[4], counts[5], counts[6], counts[7], matches);
    }
    PyBuffer_Release(&raw);
    PyBuffer_Release(&table);
    return result;
}

/* -------------------------------------------------------------------------------- */
/* FastPath: a static-embedding bundle's P(pass) for one prompt                       */

/* The arrays a FastPath reads, held (as buffers) for its lifetime. */
enum { ROWS, TOKENS, EMPTY, CENTROIDS, RATES, CENTER, N_ARRAYS };
static const char *array_names[N_ARRAYS] = {"rows",      "tokens", "empty",
                                            "centroids", "rates",  "center"};
static const int array_ndims[N_ARRAYS] = {2, 2, 1, 2, 2, 1};

typedef struct {
    PyObject_HEAD
    ChunkIndex *index;
    Py_buffer arrays[N_ARRAYS];
    int n_held; /* arrays[0:n_held] are held */
    Py_ssize_t dims, keywords, symbols; /* static dims; keyword and symbol groups */
    Py_ssize_t sets, tiers;
    Py_ssize_t n_hand, hand_idx[MAX_FEATURES];
    double hand_scale[MAX_FEATURES], hand_shift[MAX_FEATURES], hand_limit;
    unsigned char group_bits[256];
    PyObject *patterns;
} FastPath;

static Py_ssize_t
n_features(const FastPath *self)
{
    /* log_chars, log_tokens, subword_share, keywords, symbol shares, choice_options */
    return 3 + self->keywords + self->symbols + 1;
}

/* text_features: f = the prompt's hand features; sums = its pooled row. */
static int
features_into(FastPath *self, PyObject *low, Py_buffer *raw, Py_ssize_t n_chars,
              PyObject *lookup, float *sums, double *f)
{
    Py_ssize_t width = self->arrays[ROWS].shape[1];
    Py_ssize_t chunks = pool_into(self->index, low, &self->arrays[ROWS], &self->arrays[TOKENS], sums, lookup);
    if (chunks < 0)
        return -1;
    if (chunks == 0 || !(sums[width - 1] > 0)) /* no token: read as the empty prompt */
        memcpy(sums, self->arrays[EMPTY].buf, (size_t)width * sizeof(float));
    Py_ssize_t counts[N_GROUPS];
    Py_ssize_t choices = scan_into(raw->buf, raw->len, self->group_bits, self->patterns, counts);
    /* Token statistics follow the static vector: keyword groups, subword pieces, tokens. */
    const float *stats = sums + self->dims;
    double n_tok = stats[self->keywords + 1], subwords = stats[self->keywords];
    double n_bytes = raw->len > 0 ? (double)raw->len : 1.0;
    Py_ssize_t j = 0;
    f[j++] = log1p((double)n_chars);
    f[j++] = log1p(n_tok);
    f[j++] = subwords / fmax(1.0, n_tok);
    for (Py_ssize_t k = 0; k < self->keywords; k++)
        f[j++] = log1p((double)stats[k]);
    for (Py_ssize_t k = 0; k < self->symbols; k++)
        f[j++] = (double)counts[k] / n_bytes;
    f[j++] = log1p((double)choices);
    return 0;
}

/* Parse (low, raw, n_chars, lookup), then features_into. */
static int
featurize_args(FastPath *self, PyObject *args, const char *format, float *sums, double *f)
{
    PyObject *low, *lookup;
    Py_buffer raw;
    Py_ssize_t n_chars;
    if (!PyArg_ParseTuple(args, format, &low, &raw, &n_chars, &lookup))
        return -1;
    int failed = features_into(self, low, &raw, n_chars, lookup, sums, f);
    PyBuffer_Release(&raw);
    return failed;
}

static PyObject *
list_of_doubles(const double *v, Py_ssize_t n)
{
    PyObject *result = PyList_New(n);
    for (Py_ssize_t j = 0; result != NULL && j < n; j++) {
        PyObject *x = PyFloat_FromDouble(v[j]);
        if (x == NULL)
            Py_CLEAR(result);
        else
            PyList_SET_ITEM(result, j, x);
    }
    return result;
}

static PyObject *
FastPath_p_pass(FastPath *self, PyObject *args)
{
    float sums[MAX_WIDTH], x[MAX_WIDTH], e[MAX_WIDTH], nd[MAX_WIDTH];
    double f[MAX_FEATURES];
    if (featurize_args(self, args, "Uy*nO:p_pass", sums, f) < 0)
        return NULL;
    /* JointSpace.apply_one without a dense part: [u, z] / sqrt(1 + |z|^2), where u is
     * emb / |emb|, or with a center (emb / |emb| - center) normalised again. */
    Py_ssize_t d = self->dims, nh = self->n_hand;
    double ee = 0.0, zz = 0.0, z[MAX_FEATURES];
    for (Py_ssize_t i = 0; i < d; i++)
        ee += (double)sums[i] * sums[i];
    double inv = 1.0 / fmax(sqrt(ee), 1e-12);
    if (self->arrays[CENTER].shape[0] > 0) {
        const float *mu = self->arrays[CENTER].buf;
        float scale = (float)inv;
        double uu = 0.0;
        for (Py_ssize_t i = 0; i < d; i++) {
            sums[i] = sums[i] * scale - mu[i];
            uu += (double)sums[i] * sums[i];
        }
        inv = 1.0 / fmax(sqrt(uu), 1e-12);
    }
    for (Py_ssize_t i = 0; i < nh; i++) {
        double v = f[self->hand_idx[i]] * self->hand_scale[i] + self->hand_shift[i];
        z[i] = fmin(self->hand_limit, fmax(-self->hand_limit, v));
        zz += z[i] * z[i];
    }
    double c = 1.0 / sqrt(1.0 + zz), s = c * inv;
    for (Py_ssize_t i = 0; i < d; i++)
        x[i] = (float)(sums[i] * s);
    for (Py_ssize_t i = 0; i < nh; i++)
        x[d + i] = (float)(z[i] * c);
    /* ClusterPredictor.p_pass: exp(x @ centroids) @ rates, then the mean of the sets'
     * ratios (rates already carry the 1 / sets). */
    Py_ssize_t k = self->arrays[CENTROIDS].shape[1], m = self->arrays[RATES].shape[1];
    vec_mat(x, self->arrays[CENTROIDS].buf, e, d + nh, k);
    for (Py_ssize_t j = 0; j < k; j++)
        e[j] = expf(e[j]);
    vec_mat(e, self->arrays[RATES].buf, nd, k, m);
    double p[MAX_TIERS];
    Py_ssize_t den = self->sets * self->tiers;
    for (Py_ssize_t t = 0; t < self->tiers; t++) {
        p[t] = 0.0;
        for (Py_ssize_t g = 0; g < self->sets; g++)
            p[t] += (double)nd[g * self->tiers + t] / nd[den + g];
    }
    return list_of_doubles(p, self->tiers);
}

static PyObject *
FastPath_features(FastPath *self, PyObject *args)
{
    float sums[MAX_WIDTH];
    double f[MAX_FEATURES];
    if (featurize_args(self, args, "Uy*nO:features", sums, f) < 0)
        return NULL;
    return list_of_doubles(f, n_features(self));
}

static int
read_doubles(PyObject *seq, double *out, Py_ssize_t n, const char *name)
{
    PyObject *fast = PySequence_Fast(seq, name);
    if (fast == NULL)
        return -1;
    int ok = PySequence_Fast_GET_SIZE(fast) == n;
    for (Py_ssize_t i = 0; ok && i < n; i++) {
        out[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(fast, i));
        ok = !(out[i] == -1.0 && PyErr_Occurred());
    }
    Py_DECREF(fast);
    if (!ok && !PyErr_Occurred())
        PyErr_Format(PyExc_ValueError, "%s must hold %zd numbers", name, n);
    return ok ? 0 : -1;
}

static PyObject *
FastPath_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"index",      "rows",       "tokens",     "empty",      "dims",
                             "keywords",   "symbols",    "hand_idx",   "hand_scale", "hand_shift",
                             "hand_limit", "group_bits", "patterns",   "centroids",  "rates",
                             "sets",       "center",     NULL};
    PyObject *index, *arrays[N_ARRAYS], *idx, *scale, *shift, *patterns;
    Py_buffer bits;
    Py_ssize_t dims, keywords, symbols, sets;
    double limit;
    if (!PyArg_ParseTupleAndKeywords(
            args, kwds, "O!OOOnnnOOOdy*O!OOnO:FastPath", kwlist, &ChunkIndexType, &index,
            &arrays[ROWS], &arrays[TOKENS], &arrays[EMPTY], &dims, &keywords, &symbols, &idx,
            &scale, &shift, &limit, &bits, &PyTuple_Type, &patterns, &arrays[CENTROIDS],
            &arrays[RATES], &sets, &arrays[CENTER]))
        return NULL;
    FastPath *self = (FastPath *)type->tp_alloc(type, 0);
    if (self == NULL) {
        PyBuffer_Release(&bits);
        return NULL;
    }
    int ok = bits.len == 256;
    if (ok)
        memcpy(self->group_bits, bits.buf, 256);
    PyBuffer_Release(&bits);
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "group_bits must have 256 bytes");
        goto fail;
    }
    if (check_patterns(patterns) < 0)
        goto fail;
    Py_INCREF(index);
    self->index = (ChunkIndex *)index;
    Py_INCREF(patterns);
    self->patterns = patterns;
    for (; self->n_held < N_ARRAYS; self->n_held++) {
        int a = self->n_held;
        if (float_buffer(arrays[a], &self->arrays[a], array_ndims[a], 0, array_names[a]) < 0)
            goto fail;
    }
    self->dims = dims;
    self->keywords = keywords;
    self->symbols = symbols;
    self->sets = sets;
    self->hand_limit = limit;
    self->n_hand = PySequence_Check(idx) ? PySequence_Size(idx) : -1;
    if (self->n_hand < 0 || self->n_hand > MAX_FEATURES) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "hand_idx must be a sequence of at most %d indices",
                     MAX_FEATURES);
        goto fail;
    }
    if (read_doubles(scale, self->hand_scale, self->n_hand, "hand_scale") < 0 ||
        read_doubles(shift, self->hand_shift, self->n_hand, "hand_shift") < 0)
        goto fail;
    for (Py_ssize_t i = 0; i < self->n_hand; i++) {
        PyObject *item = PySequence_GetItem(idx, i);
        self->hand_idx[i] = item != NULL ? PyLong_AsSsize_t(item) : -1;
        Py_XDECREF(item);
        if (PyErr_Occurred())
            goto fail;
        if (self->hand_idx[i] < 0 || self->hand_idx[i] >= n_features(self)) {
            PyErr_SetString(PyExc_ValueError, "hand_idx out of range");
            goto fail;
        }
    }
    const Py_buffer *b = self->arrays;
    Py_ssize_t width = b[ROWS].shape[1], k = b[CENTROIDS].shape[1], m = b[RATES].shape[1];
    if (dims < 1 || keywords < 0 || symbols < 0 || symbols > N_GROUPS || sets < 1 ||
        n_features(self) > MAX_FEATURES || width > MAX_WIDTH ||
        width != dims + keywords + 2 || b[TOKENS].shape[1] != width ||
        b[EMPTY].shape[0] != width || b[CENTROIDS].shape[0] != dims + self->n_hand ||
        dims + self->n_hand > MAX_WIDTH || k > MAX_WIDTH || b[RATES].shape[0] != k ||
        m > MAX_WIDTH || m % sets != 0 || m / sets < 2 || m / sets - 1 > MAX_TIERS ||
        (b[CENTER].shape[0] != 0 && b[CENTER].shape[0] != dims)) {
        PyErr_SetString(PyExc_ValueError,
                        "inconsistent shapes: rows and tokens (N, dims + keywords + 2), "
                        "empty (width,), centroids (dims + hands, K), "
                        "rates (K, sets * (tiers + 1)), center (0,) or (dims,)");
        goto fail;
    }
    self->tiers = m / sets - 1;
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

static void
FastPath_dealloc(FastPath *self)
{
    for (int a = 0; a < self->n_held; a++)
        PyBuffer_Release(&self->arrays[a]);
    Py_XDECREF(self->index);
    Py_XDECREF(self->patterns);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef FastPath_methods[] = {
    {"p_pass", (PyCFunction)FastPath_p_pass, METH_VARARGS,
     "p_pass(low, raw, n_chars, lookup) -> P(pass) per tier\n\n"
     "low: the windowed, lowercased prompt; raw: its first MAX_SCAN characters as UTF-8\n"
     "(surrogatepass); n_chars: the prompt's length; lookup: as ChunkIndex.pool."},
    {"features", (PyCFunction)FastPath_features, METH_VARARGS,
     "features(low, raw, n_chars, lookup) -> the hand features p_pass uses (all of them)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FastPathType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "router._hotpath.FastPath",
    .tp_basicsize = sizeof(FastPath),
    .tp_dealloc = (destructor)FastPath_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A static-embedding bundle's scoring, from prompt text to P(pass) per tier.",
    .tp_methods = FastPath_methods,
    .tp_new = FastPath_new,
};

/* -------------------------------------------------------------------------------- */

static PyMethodDef module_methods[] = {
    {"scan_bytes", scan_bytes, METH_VARARGS,
     "scan_bytes(raw, table, patterns) -> 8 counts of the bytes whose table entry has bit k\n"
     "set, then the number of (non-overlapping) occurrences of the patterns."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "router._hotpath", NULL, -1, module_methods,
};

PyMODINIT_FUNC
PyInit__hotpath(void)
{
    if (PyType_Ready(&ChunkIndexType) < 0 || PyType_Ready(&FastPathType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "ChunkIndex", (PyObject *)&ChunkIndexType) < 0 ||
        PyModule_AddObjectRef(m, "FastPath", (PyObject *)&FastPathType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

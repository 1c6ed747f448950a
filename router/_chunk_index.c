/* ChunkIndex.pool = StaticEmbedder.sums: split on whitespace, look each chunk's row up,
 * sum the rows (router/static_embedder.py is the Python version and the reference).
 *
 * A chunk costs one hash over its characters and one probe of an open-addressing table,
 * with no string created unless the chunk is new; a request allocates nothing.
 */
#include "_hotpath.h"
#include <stdint.h>
#include <string.h>

#define MAX_WIDTH 2048 /* floats in a pooled row */
#define MAX_PROBE 32 /* slots a lookup may visit in the chunk table */
#define ROW_BATCH 16 /* chunk rows fetched ahead of their sum */

#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(p) __builtin_prefetch(p)
#else
#define PREFETCH(p) ((void)0)
#endif

/* acc[0:n] += row[0:n] */
VECTOR_CLONES static void
add_row(float *restrict acc, const float *restrict row, Py_ssize_t n)
{
    for (Py_ssize_t j = 0; j < n; j++)
        acc[j] += row[j];
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

PyTypeObject ChunkIndexType = {
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

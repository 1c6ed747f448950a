/* scan_bytes = text_features' symbol-class and answer-choice counts
 * (router/text_features.py holds the Python version and the tables). */
#include "_hotpath.h"
#include <string.h>

#define N_GROUPS 8 /* symbol groups scan_bytes can count (bits of a table byte) */

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

PyObject *
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

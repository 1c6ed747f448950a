/* Compiled kernels for the static featurizer, the part of Router.route() that Python
 * cannot do fast: for one request the Python versions spend their time in interpreter
 * overhead and allocations over every whitespace chunk and byte of the prompt.
 *
 *   ChunkIndex.pool   (_chunk_index.c) = StaticEmbedder.sums: split on whitespace, look
 *                                        each chunk's row up, sum the rows.
 *   scan_bytes        (_scan_bytes.c)  = text_features' symbol-class and answer-choice counts.
 *
 * The model itself is defined once, in numpy (router/softmax_sets.py, router/joint_space.py);
 * each kernel is tested against the Python function it replaces (tests/unit/test_hotpath.py).
 * The module is optional: when it is not built, router/ runs the Python versions. It uses
 * only the CPython API and the buffer protocol (no numpy headers).
 */
#include "_hotpath.h"
#include <string.h>

int
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
    if (PyType_Ready(&ChunkIndexType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "ChunkIndex", (PyObject *)&ChunkIndexType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

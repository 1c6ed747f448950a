/* Declarations shared by the compiled kernels of router/_hotpath (see _hotpath.c). */
#ifndef TIER_ROUTER_HOTPATH_H
#define TIER_ROUTER_HOTPATH_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* The loops that carry the arithmetic get an AVX2/FMA copy, picked at load time on CPUs
 * that have it (GCC function multi-versioning); other builds use the default copy. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define VECTOR_CLONES
#endif

/* A C-contiguous float32 buffer with `ndim` dimensions, else TypeError (_hotpath.c). */
int float_buffer(PyObject *obj, Py_buffer *view, int ndim, int writable, const char *name);

extern PyTypeObject ChunkIndexType;                  /* _chunk_index.c */
PyObject *scan_bytes(PyObject *mod, PyObject *args); /* _scan_bytes.c */

#endif

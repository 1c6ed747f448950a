/* Declarations shared by the compiled kernels of router/_hotpath (see _hotpath.c). */
#ifndef TIER_ROUTER_HOTPATH_H
#define TIER_ROUTER_HOTPATH_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

extern PyTypeObject ChunkIndexType; /* _chunk_index.c */
PyObject *scan_bytes(PyObject *mod, PyObject *args); /* _scan_bytes.c */

#endif

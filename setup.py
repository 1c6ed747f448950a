"""Only the compiled kernels of route()'s fast path; all metadata is in pyproject.toml.

The extension is optional: without a C compiler the install still succeeds and
router/ runs the same functions in Python (slower); see router/compiled.py.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "router._hotpath",
            sources=["router/_hotpath.c", "router/_chunk_index.c", "router/_scan_bytes.c"],
            depends=["router/_hotpath.h"],
            extra_compile_args=["-O3"],
            optional=True,
        )
    ]
)

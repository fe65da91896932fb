"""Build hook for the one optional C extension (the pool's checkout stack walk).

Everything else is configured in pyproject.toml. `optional=True`: on a machine without a
C compiler the install still succeeds and dashboard.pool.origin falls back to the same
walk in pure Python (slower on the host's checkout path; see bench/bench_pool_overhead.py).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "dashboard.pool._framewalk",
            sources=["dashboard/pool/_framewalk.c"],
            optional=True,
        )
    ]
)

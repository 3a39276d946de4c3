"""One BLAS / OpenMP thread for a numeric step, the same way everywhere.

Why: on a small machine the loop shares its cores with MongoDB and Label Studio, and BLAS or OpenMP threads that
wait for a core cost more than they give (scikit-learn's k-means ran 10x slower on a busy 2-core machine; its
logistic regression was faster pinned to one thread: BENCH ``linear_probe_100k``).
"""

from __future__ import annotations


def one_blas_thread():
    """A context manager that limits BLAS and OpenMP to one thread inside it (threadpoolctl)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1)

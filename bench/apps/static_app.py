"""Starlette's StaticFiles as a bare ASGI app, the baseline of ``bench/static.py``.

Serves the directory named by ``BENCH_STATIC_ROOT`` (set by the benchmark).
"""

import os

from starlette.staticfiles import StaticFiles

app = StaticFiles(directory=os.environ["BENCH_STATIC_ROOT"])

"""The handler of the autoscaling benchmark: busy 20 ms per request (a blocking wait, so one
process answers at most 50 a second whatever the cores), answering with its pid."""

from __future__ import annotations

import os
import time

from mpush.http import Request, Response


def work(request: Request) -> Response:
    time.sleep(0.02)
    return Response.text(request.id, str(os.getpid()))

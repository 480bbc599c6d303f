"""``[core] hostname_callable`` for the Celery deployment test: each worker's tasks say which worker ran them.

Both workers run on one machine, so the machine's name cannot tell them apart; each worker's environment
names it (``FLEX_WORKER_NAME``), and its task processes inherit that.
"""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return f"{os.environ.get('FLEX_WORKER_NAME', 'worker')}@{socket.gethostname()}"

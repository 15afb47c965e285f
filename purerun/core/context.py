"""The one place that holds this process's runtime: its Client (or local-mode client).

Public API modules look the client up here and keep nothing of their own. Most calls need a
running client and start a default one on first use, as Ray does (``f.remote()`` before any
``init()``): that is ``get_or_start()``. Starting one is the public layer's business (it
validates ``init``'s arguments and picks the kind of client), so ``purerun.api`` registers
its starter here when it is imported; the core never imports the public layer.
"""

import threading

# The current process's client: core.client.Client, core.local_mode.LocalClient, or None.
client = None

# Serialises init/shutdown against each other (not the hot path).
lifecycle_lock = threading.RLock()

# Called with no arguments (under lifecycle_lock) to start the default runtime; it must set
# ``client``. purerun.api registers ``init`` at import.
_starter = None


def current():
    """The running client, or None."""
    return client


def set_starter(starter):
    """Register what ``get_or_start`` calls when no client is running."""
    global _starter
    _starter = starter


def get_or_start():
    """The running client; if there is none, start the default one first.

    Returns:
        The client of this process.

    Raises:
        RuntimeError: nothing is running and no starter is registered (purerun.api was
            never imported, which ``import purerun`` does).
        Whatever the starter raises (see purerun.init).
    """
    running = client
    if running is not None:
        return running
    with lifecycle_lock:
        if client is None:
            if _starter is None:
                raise RuntimeError("purerun is not running in this process; call "
                                   "purerun.init() first.")
            _starter()
        return client

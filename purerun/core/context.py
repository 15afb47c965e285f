"""The one place that holds this process's runtime: its Client (or local-mode client).

Public API modules look the client up here and keep nothing of their own.
"""

import threading

# The current process's client: core.client.Client, core.local_mode.LocalClient, or None.
client = None

# Serialises init/shutdown against each other (not the hot path).
lifecycle_lock = threading.RLock()


def current():
    """The running client, or None."""
    return client

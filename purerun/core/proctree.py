"""The processes below given ones, read from /proc without scanning every process.

``/proc/<pid>/task/<tid>/children`` names a thread's children; walking those from a few
pids costs a few file reads, where psutil's ``children(recursive=True)`` reads the status
of every process on the host (tens of milliseconds on a busy machine). Kernels without
those files (no CONFIG_PROC_CHILDREN) and systems without /proc fall back to psutil.
"""

import os


def with_descendants(pids):
    """``pids`` and every process below them now, parents first.

    Read from each process's ``/proc/<pid>/task/<tid>/children``, which names its children
    only; a scan of every process on the host (psutil's way) costs tens of milliseconds on
    a busy machine, at every shutdown. psutil where the kernel lacks those files.
    """
    found = []
    frontier = list(pids)
    while frontier:
        pid = frontier.pop(0)
        found.append(pid)
        children = _children_of(pid)
        if children is None:
            return with_descendants_psutil(pids)
        frontier.extend(children)
    return found


def _children_of(pid):
    """The children of ``pid`` ([] if it is gone), or None when /proc cannot say."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return [] if os.path.isdir("/proc/self/task") else None   # gone, or no /proc
    except OSError:
        return None
    children = []
    for tid in threads:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                children += [int(child) for child in f.read().split()]
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}/task/{tid}"):
                continue   # the thread (or the process) ended meanwhile
            return None    # a kernel without CONFIG_PROC_CHILDREN
        except (OSError, ValueError):
            return None
    return children


def with_descendants_psutil(pids):
    """``with_descendants`` by psutil, which scans every process."""
    import psutil
    found = []
    for pid in pids:
        found.append(pid)
        try:
            found += [child.pid for child in psutil.Process(pid).children(recursive=True)]
        except psutil.Error:
            pass
    return found

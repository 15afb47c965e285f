"""A fork server for node processes: a node in a few milliseconds instead of a new interpreter.

A node started by ``launcher.spawn_node`` is a fresh ``python`` that imports purerun before it
can listen: about a tenth of a second, which is most of what a cluster per test costs. With
the fork server on (``launcher.use_forkserver``; the pytest plugin turns it on for a test
session), the driver process starts one helper process, once, that has imported the node's
code and does nothing but fork a node on request::

    driver                                    fork server (python -c …, single-threaded)
    ──────                                    ──────────────────────────────────────────
    spawn_node ─▶ request ─────────────────▶  fork ─▶ child: setsid, the driver's cwd,
      (SEQPACKET: config, cwd, environment,            environment and sys.path, stdio,
       sys.path; fds: status socket, the               then core/node.py main()
       owner socket, stderr)                  status socket ◀─ the child's pid, then its
    ForkedProcess(pid, status socket)                          exit code once reaped

The request carries everything a new interpreter would have taken from the driver, so a
forked node runs as a spawned one does; only modules imported before the fork are the fork
server's (imported when it started), not re-read from disk.

``ForkedProcess`` stands in for the ``subprocess.Popen`` of a spawned node: ``pid``,
``poll``, ``wait``, ``send_signal``, ``kill``. The fork server reaps its children and
writes each one's exit code (``Popen.returncode`` style: negative for a signal) to its
status socket.

Lifetime: the fork server exits when the driver's end of its request socket closes (the
driver called ``stop`` or exited, however), after its children have exited (an owned node
stops when its driver's connection closes; a node started with ``die_with_parent`` gets
SIGTERM); and it gets SIGTERM itself when the driver process dies (PR_SET_PDEATHSIG).
"""

import array
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time

# The marker in the fork server's command line: leak checks know it by this.
MARKER = "purerun.core.forkserver"
_BOOT = ("import sys, json; sys.path[:] = json.loads(sys.argv[1]); "
         f"from {MARKER} import serve; serve(int(sys.argv[2]))")
# Requests carry the environment and sys.path: generous, and still one datagram.
MAX_REQUEST = 1 << 20
MAX_FDS = 3
# How long the fork server waits for its children to exit once its driver has gone.
CHILDREN_EXIT_WAIT_S = 10.0
# How long the driver waits for the fork server to answer a request (it forks at once).
ANSWER_TIMEOUT_S = 30.0
_CODE = struct.Struct("q")
_PR_SET_PDEATHSIG = 1


class ForkServerError(RuntimeError):
    """The fork server could not start, or stopped answering."""


class ForkServer:
    """The driver's handle on its fork server process."""

    def __init__(self):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _BOOT, json.dumps(sys.path), str(theirs.fileno())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, start_new_session=True, close_fds=True)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.sock = ours

    @property
    def pid(self):
        return self.process.pid

    def alive(self):
        return self.sock is not None and self.process.poll() is None

    def fork_node(self, config_json, owner_fd, errors_path, env, die_with_parent):
        """Have the fork server fork a node; return its ForkedProcess.

        Args:
            config_json: the node's configuration (core/node.py ``main``).
            owner_fd: the node's end of its owner's connection, or None.
            errors_path: the file its stderr goes to, or None for this process's stderr.
            env: its environment.
            die_with_parent: it gets SIGTERM when the fork server (so this process) dies.
        """
        status, status_theirs = socket.socketpair()
        try:
            request = json.dumps({
                "config": config_json, "owner": owner_fd is not None,
                "errors_path": errors_path, "cwd": os.getcwd(), "env": dict(env),
                "sys_path": sys.path, "die_with_parent": die_with_parent,
            }).encode()
            if len(request) > MAX_REQUEST:
                raise ForkServerError("the node's environment and sys.path are too large "
                                      "for a fork server request")
            fds = [status_theirs.fileno()] + ([owner_fd] if owner_fd is not None else [])
            if errors_path is None:
                fds.append(2)  # what a spawned node inherits
            try:
                self.sock.sendmsg([request], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                               array.array("i", fds))])
            except OSError as exc:
                raise ForkServerError(f"the fork server is gone ({exc})") from exc
        except BaseException:
            status.close()
            raise
        finally:
            status_theirs.close()
        process = ForkedProcess(status)
        try:
            process.read_pid(ANSWER_TIMEOUT_S)
        except BaseException:
            status.close()
            raise
        return process

    def stop(self, timeout=CHILDREN_EXIT_WAIT_S + 5.0):
        """Close the request socket and wait for the fork server to exit."""
        if self.sock is None:
            return
        self.sock.close()
        self.sock = None
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class ForkedProcess:
    """A node the fork server forked: the part of ``subprocess.Popen`` the launcher uses."""

    def __init__(self, status):
        self._status = status
        self.pid = None
        self.returncode = None
        self.args = MARKER

    def read_pid(self, timeout):
        data = self._read(timeout)
        if data is None or len(data) != _CODE.size:
            raise ForkServerError("the fork server did not fork a node")
        self.pid = _CODE.unpack(data)[0]

    def _read(self, timeout):
        """One 8-byte answer; None on timeout; b"" when the fork server closed it."""
        if self._status is None:
            return b""
        ready, _, _ = select.select([self._status], [], [], timeout)
        if not ready:
            return None
        try:
            return self._status.recv(_CODE.size, socket.MSG_WAITALL)
        except OSError:
            return b""

    def poll(self):
        return self.wait(0, _raise=False)

    def wait(self, timeout=None, _raise=True):
        """Wait for the exit code, as ``Popen.wait`` (TimeoutExpired after ``timeout``)."""
        if self.returncode is not None:
            return self.returncode
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            data = self._read(left if left is None else min(left, 1.0))
            if data:
                self._finish(_CODE.unpack(data)[0])
                return self.returncode
            if data == b"" and not _exists(self.pid):
                # The fork server died before it could tell: the node is gone, code unknown.
                self._finish(-signal.SIGKILL)
                return self.returncode
            if deadline is not None and time.monotonic() >= deadline:
                if _raise:
                    raise subprocess.TimeoutExpired(self.args, timeout)
                return None
            if data == b"":
                time.sleep(0.01)  # no status socket left: watch the pid instead

    def _finish(self, code):
        self.returncode = code
        if self._status is not None:
            self._status.close()
            self._status = None

    def send_signal(self, signum):
        if self.returncode is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def terminate(self):
        self.send_signal(signal.SIGTERM)

    def kill(self):
        self.send_signal(signal.SIGKILL)


def _exists(pid):
    """Whether ``pid`` is a process that has not exited (not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


# -- the fork server's side --------------------------------------------------------------------

def serve(fd):
    """The fork server's main loop (``python -c`` of ``ForkServer``)."""
    _die_with_parent()
    sock = socket.socket(fileno=fd)
    # What the nodes run, imported once here so that a fork has nothing left to import.
    from purerun.core import node
    del node
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    children = {}   # pid -> (status socket, die_with_parent)
    open_fds = {fd, wake_r, wake_w}
    try:
        while True:
            ready, _, _ = select.select([sock, wake_r], [], [])
            if wake_r in ready:
                _drain(wake_r)
                _reap(children, open_fds)
            if sock in ready:
                try:
                    message, fds = _receive(sock)
                except (OSError, ValueError):
                    break
                if message is None:
                    break  # the driver closed its end, or exited
                _fork(message, fds, children, open_fds)
    finally:
        for pid, (_, die) in children.items():
            if die:
                _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + CHILDREN_EXIT_WAIT_S
        while children and time.monotonic() < deadline:
            select.select([wake_r], [], [], 0.05)
            _drain(wake_r)
            _reap(children, open_fds)
        for pid in list(children):
            _signal(pid, signal.SIGKILL)
        _reap(children, open_fds, block=True)
    os._exit(0)


def _die_with_parent():
    try:
        import ctypes
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except Exception:
        pass


def _receive(sock):
    fds = array.array("i")
    message, ancillary, _flags, _ = sock.recvmsg(MAX_REQUEST, socket.CMSG_SPACE(
        MAX_FDS * fds.itemsize))
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
    if not message:
        for received in fds:
            os.close(received)
        return None, []
    return json.loads(message), list(fds)


def _fork(request, fds, children, open_fds):
    status_fd = fds[0]
    owner_fd = fds[1] if request["owner"] else None
    stderr_fd = fds[-1] if request["errors_path"] is None else None
    pid = os.fork()
    if pid == 0:
        _become_node(request, status_fd, owner_fd, stderr_fd, open_fds, children)
    for received in fds[1:]:
        os.close(received)
    status = socket.socket(fileno=status_fd)
    try:
        status.sendall(_CODE.pack(pid))
    except OSError:
        pass
    children[pid] = (status, request["die_with_parent"])
    open_fds.add(status_fd)


def _become_node(request, status_fd, owner_fd, stderr_fd, open_fds, children):
    """In the forked child: become what a spawned node would be, then run it."""
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()
        if request["die_with_parent"]:
            _die_with_parent()
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        if stderr_fd is not None:
            os.dup2(stderr_fd, 2)
        else:
            err = os.open(request["errors_path"], os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                          0o600)
            os.dup2(err, 2)
            os.close(err)
        children.clear()  # their status sockets close with them
        open_fds.clear()
        keep = {0, 1, 2} | ({owner_fd} if owner_fd is not None else set())
        for number in _open_fds():
            if number not in keep:
                try:
                    os.close(number)
                except OSError:
                    pass
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.path[:] = request["sys_path"]
        from purerun.core import node
        node.main(request["config"], "none" if owner_fd is None else str(owner_fd))
    except BaseException:
        try:
            import traceback
            traceback.print_exc()
        finally:
            os._exit(1)
    os._exit(0)


def _open_fds():
    try:
        return [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return list(range(3, 1024))


def _drain(fd):
    try:
        while os.read(fd, 4096):
            pass
    except (BlockingIOError, InterruptedError):
        pass
    except OSError:
        pass


def _reap(children, open_fds, block=False):
    while children:
        try:
            pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            children.clear()
            return
        if pid == 0:
            return
        entry = children.pop(pid, None)
        if entry is None:
            continue
        sock, _ = entry
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        try:
            sock.sendall(_CODE.pack(code))
        except OSError:
            pass
        open_fds.discard(sock.fileno())
        sock.close()


def _signal(pid, signum):
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass

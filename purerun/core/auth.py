"""The cluster token: the shared secret every TCP connection of a cluster proves it knows.

::

    where a process looks, first match wins          what it does with it

    $PURERUN_AUTH_TOKEN        the token itself       head:   HmacHandshake(token, SERVER)
    $PURERUN_AUTH_TOKEN_PATH   a file holding it              on its listener
    $RAY_AUTH_TOKEN            the token itself       node,   HmacHandshake(token, CLIENT)
    $RAY_AUTH_TOKEN_PATH       a file holding it      driver: in connect(address, token)
    ~/.purerun/auth_token      a file holding it
                               (ensure_token() makes one here if none is found)

The token is text (``secrets.token_hex(32)`` when purerun makes it); surrounding whitespace is
stripped, and its UTF-8 bytes are the HMAC key. It never crosses the wire (see
``transport.HmacHandshake``) and nothing here prints it.

Ray's variable names are read too, after purerun's own, so that a cluster set up for Ray
works unchanged. As in Ray, a ``*_PATH`` variable that names a missing, unreadable or empty
file is an error rather than a reason to look further: falling back would quietly use
another token, and the handshake would then fail far from the cause. A variable set to the
empty string counts as unset (``PURERUN_AUTH_TOKEN= cmd`` is how a shell clears one).

A token file is written so that it is never readable by anyone but its owner, not even for
an instant: created ``0600`` under a fresh name (``O_CREAT | O_EXCL``), then linked into
place, which also never replaces a token another process wrote meanwhile.
"""

import errno
import logging
import os
import secrets
from typing import Optional

from purerun.core.transport import MIN_TOKEN_BYTES

__all__ = [
    "TOKEN_ENV", "TOKEN_PATH_ENV", "RAY_TOKEN_ENV", "RAY_TOKEN_PATH_ENV", "DEFAULT_TOKEN_PATH",
    "default_token_path", "load_token", "ensure_token", "token_source_text",
]

logger = logging.getLogger("purerun.auth")

TOKEN_ENV = "PURERUN_AUTH_TOKEN"
TOKEN_PATH_ENV = "PURERUN_AUTH_TOKEN_PATH"
RAY_TOKEN_ENV = "RAY_AUTH_TOKEN"
RAY_TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
# Per user, like ~/.ssh: the token is the user's key to every cluster they start.
DEFAULT_TOKEN_PATH = "~/.purerun/auth_token"
# 32 random bytes, as hex text: what transport.MIN_TOKEN_BYTES asks for, with room to spare.
GENERATED_TOKEN_BYTES = 32
# The token file and its directory: the owner's only.
_FILE_MODE = 0o600
_DIR_MODE = 0o700

# Looked at in this order; each is (variable, True if it names a file).
_VARIABLES = ((TOKEN_ENV, False), (TOKEN_PATH_ENV, True),
              (RAY_TOKEN_ENV, False), (RAY_TOKEN_PATH_ENV, True))


def default_token_path() -> str:
    """Where the token lives when no variable says otherwise: ``~/.purerun/auth_token``,
    with ``~`` expanded now (from ``$HOME``)."""
    return os.path.expanduser(DEFAULT_TOKEN_PATH)


def _chosen():
    """(variable or None, value) of the first source that is set; (None, default path)."""
    for variable, _names_file in _VARIABLES:
        value = os.environ.get(variable, "").strip()
        if value:
            return variable, value
    return None, default_token_path()


def _names_file(variable) -> bool:
    return variable is None or dict(_VARIABLES)[variable]


def _checked(token: bytes, where: str) -> bytes:
    if len(token) < MIN_TOKEN_BYTES:
        raise ValueError(f"the cluster token {where} is {len(token)} bytes long; it must be at "
                         f"least {MIN_TOKEN_BYTES} (make one with: python -c "
                         "'import secrets; print(secrets.token_hex(32))')")
    return token


def _read(path: str, where: str) -> bytes:
    """The token in the file at ``path``; ``where`` says how it was chosen, for errors.

    Raises:
        FileNotFoundError: there is no such file (its message names ``where``).
        ValueError: it cannot be read, is empty, or holds too short a token.
    """
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            data = f.read()
    except FileNotFoundError as exc:
        raise FileNotFoundError(errno.ENOENT, f"there is no cluster token file at {path} "
                                f"({where})", path) from exc
    except OSError as exc:
        raise ValueError(f"cannot read the cluster token file {path} ({where}): "
                         f"{exc.strerror or exc}") from exc
    token = data.strip()
    if not token:
        raise ValueError(f"the cluster token file {path} ({where}) is empty; put the "
                         "cluster's token in it, or remove it")
    if mode & 0o077:
        logger.warning("the cluster token file %s is readable by other users (mode %o); "
                       "chmod 600 it", path, mode & 0o777)
    return _checked(token, f"in {path}")


def _describe(variable) -> str:
    return f"named by ${variable}" if variable else "the default location"


def load_token() -> Optional[bytes]:
    """The cluster token this process should use, or None if there is none.

    Looks at ``$PURERUN_AUTH_TOKEN``, then ``$PURERUN_AUTH_TOKEN_PATH`` (a file), then
    ``$RAY_AUTH_TOKEN``, then ``$RAY_AUTH_TOKEN_PATH``, then ``~/.purerun/auth_token``; the
    first one set decides.

    Returns:
        The token's text, whitespace stripped, as UTF-8 bytes (the HMAC key); None when no
        variable is set and the default file does not exist.

    Raises:
        FileNotFoundError: a ``*_PATH`` variable names a file that does not exist.
        ValueError: the chosen file cannot be read or is empty; the token is shorter than
            ``transport.MIN_TOKEN_BYTES``. The message names the variable and the path.
    """
    variable, value = _chosen()
    if not _names_file(variable):
        return _checked(value.encode(), f"in ${variable}")
    path = os.path.expanduser(value)
    try:
        return _read(path, _describe(variable))
    except FileNotFoundError:
        if variable is None:
            return None
        raise


def ensure_token(path: Optional[str] = None) -> tuple:
    """The cluster token, made and saved first if there is none yet (what a head does).

    Args:
        path: A token file to use instead of what the environment says (``--token-path``):
            read if it exists, else created.

    Returns:
        ``(token, path)``: the token as bytes, and the file it lives in, or None when it
        came from a variable holding the token itself. A new token is written to ``path``,
        else to ``$PURERUN_AUTH_TOKEN_PATH`` if that is set but names no file yet, else to
        ``~/.purerun/auth_token``: mode 0600, in a directory made 0700 if missing. An
        existing token is never replaced.

    Raises:
        FileNotFoundError: ``$RAY_AUTH_TOKEN_PATH`` (the one that decides) names no file:
            purerun does not write where Ray's variable points.
        ValueError: as ``load_token``.
        OSError: the new token file cannot be written.
    """
    if path is not None:
        variable, value = "--token-path", path
        where = "given with --token-path"
    else:
        variable, value = _chosen()
        where = _describe(variable)
        if not _names_file(variable):
            return _checked(value.encode(), f"in ${variable}"), None
    path = os.path.expanduser(value)
    try:
        return _read(path, where), path
    except FileNotFoundError:
        if variable == RAY_TOKEN_PATH_ENV:
            raise
    return _create(path, where), path


def _create(path: str, where: str) -> bytes:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=_DIR_MODE, exist_ok=True)
    token = secrets.token_hex(GENERATED_TOKEN_BYTES).encode()
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}."
                                        f"{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
    try:
        try:
            os.fchmod(fd, _FILE_MODE)   # whatever the umask
            os.write(fd, token + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            # A link, unlike a rename, fails if a token appeared there meanwhile: theirs wins.
            os.link(temporary, path)
        except FileExistsError:
            return _read(path, where)
        except OSError:
            # A file system without hard links: a rename, which could replace a token
            # written in this very instant (not one that existed when we looked).
            os.rename(temporary, path)
            temporary = None
    finally:
        if temporary is not None:
            try:
                os.unlink(temporary)
            except FileNotFoundError:
                pass
    logger.info("made a new cluster token in %s", path)
    return token


def token_source_text() -> str:
    """Where this process's token comes from, in one line for a banner; never the token.

    Reads the environment only (no file is opened), so it never fails.

    Returns:
        E.g. ``"from $PURERUN_AUTH_TOKEN"``, ``"in /etc/purerun/token (named by
        $PURERUN_AUTH_TOKEN_PATH)"``, ``"in /home/me/.purerun/auth_token"``, or, when none
        would be found, a sentence saying how to provide one.
    """
    variable, value = _chosen()
    if not _names_file(variable):
        return f"from ${variable}"
    path = os.path.expanduser(value)
    if variable is not None:
        return f"in {path} (named by ${variable})"
    if os.path.exists(path):
        return f"in {path}"
    return (f"none yet: set ${TOKEN_ENV}, or ${TOKEN_PATH_ENV} to a file holding it, or put "
            f"it in {path}")

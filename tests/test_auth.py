"""core.auth: where the cluster token is looked for, in which order, and how a new one is
written. Every test gets a fresh $HOME under tmp_path and none of the token variables."""

import os
import stat

import pytest

from purerun.core import auth
from purerun.core.auth import (RAY_TOKEN_ENV, RAY_TOKEN_PATH_ENV, TOKEN_ENV, TOKEN_PATH_ENV,
                               ensure_token, load_token, token_source_text)
from purerun.core.transport import MIN_TOKEN_BYTES

TOKEN_A = "a" * 32
TOKEN_B = "b" * 32
TOKEN_C = "c" * 32
TOKEN_D = "d" * 32
TOKEN_E = "e" * 32


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for variable in (TOKEN_ENV, TOKEN_PATH_ENV, RAY_TOKEN_ENV, RAY_TOKEN_PATH_ENV):
        monkeypatch.delenv(variable, raising=False)
    return home


def write(path, text, mode=0o600):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def default_file(home):
    return home / ".purerun" / "auth_token"


def test_no_token_anywhere_is_none(home):
    assert load_token() is None
    assert "none yet" in token_source_text() and TOKEN_ENV in token_source_text()


def test_each_source_in_order_of_precedence(home, tmp_path, monkeypatch):
    """Set all five; remove the winner one at a time and watch the next one take over."""
    write(default_file(home), TOKEN_E + "\n")
    monkeypatch.setenv(RAY_TOKEN_PATH_ENV, str(write(tmp_path / "ray_file", TOKEN_D)))
    monkeypatch.setenv(RAY_TOKEN_ENV, TOKEN_C)
    monkeypatch.setenv(TOKEN_PATH_ENV, str(write(tmp_path / "purerun_file", TOKEN_B)))
    monkeypatch.setenv(TOKEN_ENV, TOKEN_A)
    order = [(TOKEN_ENV, TOKEN_A), (TOKEN_PATH_ENV, TOKEN_B), (RAY_TOKEN_ENV, TOKEN_C),
             (RAY_TOKEN_PATH_ENV, TOKEN_D)]
    for variable, token in order:
        assert load_token() == token.encode()
        assert variable in token_source_text()
        monkeypatch.delenv(variable)
    assert load_token() == TOKEN_E.encode()
    assert token_source_text() == f"in {default_file(home)}"


def test_whitespace_is_stripped(home, tmp_path, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, f"  {TOKEN_A}\n")
    assert load_token() == TOKEN_A.encode()
    monkeypatch.delenv(TOKEN_ENV)
    write(default_file(home), f"\n {TOKEN_B} \r\n")
    assert load_token() == TOKEN_B.encode()


def test_an_empty_variable_counts_as_unset(home, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, "")
    monkeypatch.setenv(TOKEN_PATH_ENV, "  ")
    monkeypatch.setenv(RAY_TOKEN_ENV, TOKEN_C)
    assert load_token() == TOKEN_C.encode()


def test_a_path_variable_is_expanded(home, monkeypatch):
    write(home / "tokens" / "t", TOKEN_B)
    monkeypatch.setenv(TOKEN_PATH_ENV, "~/tokens/t")
    assert load_token() == TOKEN_B.encode()
    assert str(home / "tokens" / "t") in token_source_text()


@pytest.mark.parametrize("variable", [TOKEN_PATH_ENV, RAY_TOKEN_PATH_ENV])
def test_a_path_variable_naming_no_file_is_an_error_not_a_fallback(variable, home, tmp_path,
                                                                    monkeypatch):
    write(default_file(home), TOKEN_E)
    missing = tmp_path / "missing"
    monkeypatch.setenv(variable, str(missing))
    with pytest.raises(FileNotFoundError) as caught:
        load_token()
    assert variable in str(caught.value) and str(missing) in str(caught.value)


@pytest.mark.parametrize("variable", [TOKEN_PATH_ENV, RAY_TOKEN_PATH_ENV])
def test_a_path_variable_naming_an_empty_file_is_an_error(variable, tmp_path, monkeypatch):
    empty = write(tmp_path / "empty", " \n")
    monkeypatch.setenv(variable, str(empty))
    with pytest.raises(ValueError, match="is empty") as caught:
        load_token()
    assert variable in str(caught.value) and str(empty) in str(caught.value)
    with pytest.raises(ValueError, match="is empty"):
        ensure_token()   # never replaced either


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_a_path_variable_naming_an_unreadable_file_is_an_error(tmp_path, monkeypatch):
    locked = write(tmp_path / "locked", TOKEN_A, mode=0o000)
    monkeypatch.setenv(TOKEN_PATH_ENV, str(locked))
    with pytest.raises(ValueError, match="cannot read") as caught:
        load_token()
    assert TOKEN_PATH_ENV in str(caught.value) and str(locked) in str(caught.value)


def test_a_directory_is_not_a_token_file(tmp_path, monkeypatch):
    monkeypatch.setenv(TOKEN_PATH_ENV, str(tmp_path))
    with pytest.raises(ValueError, match="cannot read"):
        load_token()


def test_an_empty_default_file_is_an_error(home):
    write(default_file(home), "")
    with pytest.raises(ValueError, match="is empty"):
        load_token()


@pytest.mark.parametrize("where", ["variable", "file"])
def test_a_short_token_is_a_clear_error(where, home, monkeypatch):
    short = "x" * (MIN_TOKEN_BYTES - 1)
    if where == "variable":
        monkeypatch.setenv(TOKEN_ENV, short)
    else:
        write(default_file(home), short)
    with pytest.raises(ValueError, match=f"{MIN_TOKEN_BYTES - 1} bytes long.*at least "
                                         f"{MIN_TOKEN_BYTES}"):
        load_token()
    monkeypatch.setenv(TOKEN_ENV, "x" * MIN_TOKEN_BYTES)
    assert load_token() == b"x" * MIN_TOKEN_BYTES


def test_a_world_readable_token_file_is_used_with_a_warning(home, caplog):
    write(default_file(home), TOKEN_E, mode=0o644)
    assert load_token() == TOKEN_E.encode()
    assert "readable by other users" in caplog.text and TOKEN_E not in caplog.text


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_ensure_token_makes_a_private_file_once_and_keeps_it(home):
    token, path = ensure_token()
    assert path == str(default_file(home))
    assert len(token) == 2 * auth.GENERATED_TOKEN_BYTES and bytes.fromhex(token.decode())
    assert _mode(path) == 0o600 and _mode(os.path.dirname(path)) == 0o700
    assert os.listdir(os.path.dirname(path)) == ["auth_token"]   # no temporary left
    assert load_token() == token
    assert ensure_token() == (token, path)                        # never replaced
    assert token_source_text() == f"in {path}"


def test_ensure_token_uses_an_existing_token(home, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN_A)
    assert ensure_token() == (TOKEN_A.encode(), None)
    assert not default_file(home).exists()
    monkeypatch.delenv(TOKEN_ENV)
    write(default_file(home), TOKEN_E)
    assert ensure_token() == (TOKEN_E.encode(), str(default_file(home)))


def test_ensure_token_writes_where_purerun_token_path_points(home, tmp_path, monkeypatch):
    target = tmp_path / "secrets" / "cluster_token"
    monkeypatch.setenv(TOKEN_PATH_ENV, str(target))
    token, path = ensure_token()
    assert path == str(target) and target.read_text().strip() == token.decode()
    assert _mode(target) == 0o600
    assert not default_file(home).exists()
    assert load_token() == token


def test_ensure_token_does_not_write_where_rays_variable_points(tmp_path, monkeypatch):
    monkeypatch.setenv(RAY_TOKEN_PATH_ENV, str(tmp_path / "ray_token"))
    with pytest.raises(FileNotFoundError, match=RAY_TOKEN_PATH_ENV):
        ensure_token()
    assert not (tmp_path / "ray_token").exists()


def test_ensure_token_with_an_explicit_path_ignores_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN_A)
    target = tmp_path / "given"
    token, path = ensure_token(str(target))
    assert path == str(target) and token != TOKEN_A.encode()
    assert ensure_token(str(target)) == (token, path)


def test_a_token_written_meanwhile_by_another_process_wins(home, monkeypatch):
    """Two heads starting at once: the second one's link fails, and it reads the first's."""
    real_link = os.link

    def racing_link(src, dst):
        write(default_file(home), TOKEN_E)   # the other process got there first
        return real_link(src, dst)

    monkeypatch.setattr(auth.os, "link", racing_link)
    assert ensure_token() == (TOKEN_E.encode(), str(default_file(home)))
    assert os.listdir(default_file(home).parent) == ["auth_token"]


def test_the_new_file_is_never_readable_by_others_even_briefly(home, monkeypatch):
    """Every file ensure_token creates is created 0600 (not chmod-ed afterwards)."""
    created = []
    real_open = os.open

    def watching_open(path, flags, mode=0o777, **kwargs):
        if flags & os.O_CREAT:
            created.append((path, flags, mode))
        return real_open(path, flags, mode, **kwargs)

    monkeypatch.setattr(auth.os, "open", watching_open)
    ensure_token()
    assert created and all(mode == 0o600 and flags & os.O_EXCL for _, flags, mode in created)


def test_the_source_text_never_shows_the_token(home, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN_A)
    assert TOKEN_A not in token_source_text()
    monkeypatch.delenv(TOKEN_ENV)
    token, _ = ensure_token()
    assert token.decode() not in token_source_text()

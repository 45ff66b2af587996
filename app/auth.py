"""Logins for a shared server: `clipsae serve|demo|up --auth-file FILE` and `clipsae passwd FILE USER`.

The auth file is plain text, one user a line, `#` starts a comment:

    alice:pbkdf2_sha256$600000$<salt hex>$<hash hex>

the hash being PBKDF2-HMAC-SHA256 of the UTF-8 password with that salt (16 random bytes)
and that many iterations. `clipsae passwd FILE USER` adds or replaces a user, reading the
password from the terminal (getpass, asked twice) or, when stdin is not a terminal, from
stdin's first line; passwords never appear on a command line or in a log. The server
reads the file again at every login, so users can be added while it runs. Gradio's own
login guards every page, API call and file route (tests/test_auth.py).
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import logging
import os
import re
import secrets
import sys
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

SCHEME = "pbkdf2_sha256"
ITERATIONS = 600_000
"""OWASP's 2023 figure for PBKDF2-HMAC-SHA256 (about 0.3 s a login on one core)."""
USER_RE = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
"""User names: letters, digits and . _ @ - (no ':', no spaces), 1 to 64 characters."""


def hash_password(password: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """The stored form `pbkdf2_sha256$iterations$salt$hash` of a password (a fresh salt unless given)."""
    if not password:
        raise ValueError("the password is empty")
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, int(iterations))
    return f"{SCHEME}${int(iterations)}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches a stored hash (constant-time comparison); False for a malformed one."""
    try:
        scheme, iterations, salt, digest = stored.split("$")
        if scheme != SCHEME:
            return False
        got = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), bytes.fromhex(salt), int(iterations))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


def read_auth_file(path: str | Path) -> dict[str, str]:
    """{user: stored hash} from an auth file; ValueError naming the line for anything malformed."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--auth-file {p}: no such file; create it with `clipsae passwd {p} USER`")
    users: dict[str, str] = {}
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, stored = line.partition(":")
        parts = stored.split("$")
        if not sep or not USER_RE.match(user) or len(parts) != 4 or parts[0] != SCHEME or not parts[1].isdigit():
            raise ValueError(
                f"--auth-file {p}, line {n}: expected USER:{SCHEME}$ITERATIONS$SALT$HASH "
                "(write users with `clipsae passwd`)"
            )
        users[user] = stored
    if not users:
        raise ValueError(f"--auth-file {p} has no users; add one with `clipsae passwd {p} USER`")
    return users


def login_checker(path: str | Path) -> Callable[[str, str], bool]:
    """Gradio's `auth=` callable: the file is read (and checked) now, then again at every login."""
    read_auth_file(path)

    def check(user: str, password: str) -> bool:
        try:
            stored = read_auth_file(path).get(user)
        except ValueError as exc:
            log.warning("login refused: %s", exc)
            return False
        ok = stored is not None and verify_password(password, stored)
        log.info("login %s for user %r", "accepted" if ok else "refused", user[:64])
        return ok

    return check


def set_password(path: str | Path, user: str, password: str, iterations: int = ITERATIONS) -> bool:
    """Add `user` to the auth file (created 0600 if absent) or replace their hash; True if they were new."""
    if not USER_RE.match(user or ""):
        raise ValueError(f"user name {user[:64]!r}: use 1-64 letters, digits or . _ @ -")
    p = Path(path)
    lines = p.read_text(encoding="utf-8").splitlines() if p.is_file() else []
    if any(ln.strip() and not ln.strip().startswith("#") for ln in lines):
        read_auth_file(p)  # a malformed file is refused, not rewritten
    entry = f"{user}:{hash_password(password, iterations=iterations)}"
    kept = [ln for ln in lines if ln.strip().partition(":")[0] != user or ln.strip().startswith("#")]
    new = len(kept) == len(lines)
    tmp = p.with_name(p.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join([*kept, entry]) + "\n")
    os.replace(tmp, p)
    return new


def read_new_password(stdin=None) -> str:
    """The password to store: asked twice on a terminal, else stdin's first line (never an argument)."""
    stdin = stdin or sys.stdin
    if stdin.isatty():
        first = getpass.getpass("password: ")
        if first != getpass.getpass("again: "):
            raise ValueError("the two passwords differ")
    else:
        first = stdin.readline().rstrip("\r\n")
    if not first:
        raise ValueError("the password is empty")
    return first

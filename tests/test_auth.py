"""Logins (`--auth-file`, `clipsae passwd`): the hash format against PBKDF2's published test
vector, the file's checks, and over HTTP that no page, API call or file answers before login."""

from __future__ import annotations

import io
import json
import os
import stat
import urllib.error
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar

import pytest

from app.auth import hash_password, login_checker, read_auth_file, set_password, verify_password
from app.cli import main

FAST = 1_000  # iterations for the tests (the default's cost is for real servers)


def test_hash_is_pbkdf2_sha256_as_published():
    # RFC 7914 section 11: PBKDF2-HMAC-SHA256, P="passwd", S="salt", c=1 (first 32 bytes of dkLen=64)
    stored = hash_password("passwd", salt=b"salt", iterations=1)
    assert stored == "pbkdf2_sha256$1$73616c74$55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
    assert verify_password("passwd", stored) and not verify_password("passwd2", stored)
    assert hash_password("x", iterations=FAST) != hash_password("x", iterations=FAST)  # salted
    for bad in ("", "md5$1$00$00", "pbkdf2_sha256$x$zz$00", "pbkdf2_sha256$1$00"):
        assert not verify_password("passwd", bad)


def test_set_password_adds_replaces_and_keeps_the_file_private(tmp_path):
    f = tmp_path / "users"
    assert set_password(f, "alice", "one", iterations=FAST)
    assert set_password(f, "bob", "two", iterations=FAST)
    assert not set_password(f, "alice", "three", iterations=FAST)
    users = read_auth_file(f)
    assert sorted(users) == ["alice", "bob"]
    assert verify_password("three", users["alice"]) and not verify_password("one", users["alice"])
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    assert "three" not in f.read_text()
    check = login_checker(f)
    assert check("bob", "two") and not check("bob", "three") and not check("carol", "two")
    with pytest.raises(ValueError, match="user name"):
        set_password(f, "bad:name", "x", iterations=FAST)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "has no users"),
        ("# only a comment\n", "has no users"),
        ("alice:plain\n", "line 1: expected USER:pbkdf2_sha256"),
        ("alice pbkdf2_sha256$1$00$00\n", "line 1"),
    ],
)
def test_malformed_auth_files_are_refused_in_one_line(tmp_path, text, message):
    f = tmp_path / "users"
    f.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_auth_file(f)
    with pytest.raises(ValueError, match="no such file"):
        read_auth_file(tmp_path / "absent")


def test_clipsae_passwd_reads_stdin_and_never_echoes(tmp_path, monkeypatch, capsys):
    f = tmp_path / "users"
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret-pass\n"))
    assert main(["passwd", str(f), "alice"]) == 0
    out = capsys.readouterr()
    assert "s3cret-pass" not in out.out + out.err and "added user alice" in out.out
    assert verify_password("s3cret-pass", read_auth_file(f)["alice"])
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert main(["passwd", str(f), "bob"]) != 0  # empty password refused
    assert "bob" not in read_auth_file(f)


def _open(opener, url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    try:
        with opener.open(urllib.request.Request(url, data=data, headers=headers or {}), timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_no_route_answers_before_login(tmp_path):
    from app.server import launch, make_handlers
    from app.ui import build_ui
    from app_fixtures import free_port
    from helpers import build_tiny_clip_atlas

    users = tmp_path / "users"
    set_password(users, "alice", "correct horse", iterations=FAST)
    atlas = build_tiny_clip_atlas(tmp_path / "data", n_images=6)
    handlers, banner = make_handlers(atlas, device="cpu")
    demo = build_ui(handlers, banner)
    port = free_port()
    launch(demo, "127.0.0.1", port, prevent_thread_lock=True, auth=login_checker(users))
    base = f"http://127.0.0.1:{port}"
    try:
        jar = CookieJar()
        user = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        status, _ = _open(
            user, f"{base}/login", urllib.parse.urlencode({"username": "alice", "password": "correct horse"}).encode()
        )
        assert status == 200
        call = json.dumps({"data": [0, handlers.atlas.name]}).encode()
        status, body = _open(user, f"{base}/gradio_api/call/latent_page", call, {"Content-Type": "application/json"})
        assert status == 200, body[:200]
        event = json.loads(body)["event_id"]
        status, stream = _open(user, f"{base}/gradio_api/call/latent_page/{event}")
        assert status == 200 and b"event: complete" in stream
        files = sorted({u for u in json.dumps(stream.decode()).split('\\"') if "/gradio_api/file=" in u})
        assert files, stream[:300]
        rendered = [u for u in files if "/clipsae-render-" in u]  # served from the render folder, not copied
        assert rendered, files
        file_path = rendered[0][rendered[0].index("/gradio_api/file=") :]
        assert _open(user, base + file_path)[0] == 200  # the logged-in user gets the thumbnail
        with user.open(base + file_path) as r:  # content-addressed: the browser keeps it for good
            assert "immutable" in r.headers["Cache-Control"] and "max-age=31536000" in r.headers["Cache-Control"]
        folder = file_path.rsplit("/", 2)[0]
        for bad in [
            f"{folder}/../../../../etc/passwd",
            "/gradio_api/file=/etc/passwd",
            f"{folder}/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        ]:
            try:
                status, body = _open(user, base + bad)
            except Exception:  # a refused path may close the connection
                continue
            assert status != 200 or b"root:" not in body, bad

        stranger = urllib.request.build_opener()
        status, page = _open(stranger, f"{base}/")
        assert "RANDOM weights" in banner and b"RANDOM weights" in _open(user, f"{base}/config")[1]
        assert b"RANDOM weights" not in page and b'"dependencies": [{' not in page  # the login form, no app
        for path, data in [
            ("/config", None),
            ("/gradio_api/info", None),
            (file_path, None),
            (f"/gradio_api/call/latent_page/{event}", None),
            ("/gradio_api/call/latent_page", call),
            ("/gradio_api/queue/join", call),
            ("/gradio_api/upload", b"x"),
            ("/gradio_api/run/latent_page", call),
        ]:
            status, body = _open(stranger, base + path, data, {"Content-Type": "application/json"})
            assert status in (401, 403), (path, status, body[:200])
        status, _ = _open(
            stranger, f"{base}/login", urllib.parse.urlencode({"username": "alice", "password": "wrong"}).encode()
        )
        assert status in (400, 401)
    finally:
        demo.close()


def test_serve_refuses_a_missing_auth_file_before_loading(tmp_path, capsys):
    from app_fixtures import free_port

    code = main(
        [
            "serve",
            "--atlas",
            str(tmp_path / "no-atlas"),
            "--port",
            str(free_port()),
            "--auth-file",
            str(tmp_path / "absent"),
        ]
    )
    assert code != 0 and "no such file; create it with `clipsae passwd" in capsys.readouterr().err

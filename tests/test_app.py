"""`python app.py` starts and serves the studio; with --auth it lets only signed-in users in."""

import http.cookiejar
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(*flags: str):
    """The app on a free loopback port; -> its base URL once the page answers."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), *flags], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/", timeout=5)
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()
                assert time.time() < deadline, "app did not start within 90 s"
                time.sleep(1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_app_serves_page(tmp_path):
    with running_app("--workspace", str(tmp_path)) as url:
        html = urllib.request.urlopen(f"{url}/", timeout=10).read().decode()
        assert "Face-swap studio" in html
        config = urllib.request.urlopen(f"{url}/config", timeout=10).read().decode()
        for tab in ("Face sets", "Train", "Swap", "Evaluate"):
            assert f'"{tab}"' in config


def test_sign_in_is_required_with_auth(tmp_path):
    auth_file = tmp_path / "users.txt"
    auth_file.write_text("# one user a line\nbob:hunter2\n")
    with running_app("--workspace", str(tmp_path / "ws"), "--auth", "ann:secret", "--auth-file", str(auth_file)) as url:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/config", timeout=10)
        assert refused.value.code == 401

        def sign_in(user: str, password: str):
            jar = http.cookiejar.CookieJar()
            opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
            data = urllib.parse.urlencode({"username": user, "password": password}).encode()
            opener.open(f"{url}/login", data=data, timeout=10)
            return opener

        with pytest.raises(urllib.error.HTTPError):
            sign_in("ann", "wrong")
        for user, password in (("ann", "secret"), ("bob", "hunter2")):
            assert sign_in(user, password).open(f"{url}/config", timeout=10).status == 200


def test_bad_flags_exit_with_a_message(capsys, tmp_path):
    from app import main

    assert main(["--auth", "ann"]) == 2
    assert "USER:PASS" in capsys.readouterr().err
    assert main(["--auth", "../etc:pw"]) == 2
    assert "user name" in capsys.readouterr().err
    assert main(["--auth-file", str(tmp_path / "missing.txt")]) == 2
    assert "cannot read --auth-file" in capsys.readouterr().err
    assert main(["--max-upload-mb", "0"]) == 2

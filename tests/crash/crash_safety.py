"""Crash safety: drive refresh-token rotations and revocations under load, kill the server with
SIGKILL at random moments, restart it on the same store, and check that

- the store opens cleanly after every kill,
- every code exchange the server acknowledged is in effect: the code, presented again, is refused,
- every rotation the server acknowledged is in effect: the replaced refresh token is refused,
- every revocation the server acknowledged is in effect: the token introspects inactive and, for
  refresh tokens, is refused,
- no revoked or rotated token is ever accepted again.

Requests in flight at the kill may or may not have happened; only acknowledged ones are checked.

Usage: python3 tests/crash/crash_safety.py path/to/portcullis [kills]   (default 20)
"""
import base64
import html
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import requests

BINARY = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/portcullis")
KILLS = int(sys.argv[2]) if len(sys.argv) > 2 else 20
REDIRECT = "http://127.0.0.1:9/cb"
PASSWORD = "crash-admin-password"
# A check that gets no answer fails the run instead of hanging it.
CHECK_TIMEOUT = 30


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, env, port, log):
        self.env, self.port, self.base = env, port, f"http://127.0.0.1:{port}"
        self.process = None
        # The server's log goes to a file: a pipe nobody reads fills up (64 KiB: a few hundred
        # warnings, such as the replays of the checks below), and then the server blocks on its
        # next log line and the run hangs.
        self.log = log

    def start(self):
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([BINARY, "serve", "--listen", f"127.0.0.1:{self.port}"],
                                            env=self.env, stdout=subprocess.DEVNULL, stderr=log)
        for _ in range(400):
            if self.process.poll() is not None:
                with open(self.log, "rb") as log:
                    raise SystemExit(f"FAIL: the server did not start: {log.read().decode()[-2000:]}")
            try:
                if requests.get(self.base + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.025)
        raise SystemExit("FAIL: the server never answered")

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


def cli(env, *args):
    out = subprocess.run([BINARY, *args], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def sign_in(server):
    """A browser session signed in as the admin."""
    browser = requests.Session()
    page = browser.get(server.base + "/login", timeout=5).text
    csrf = html.unescape(re.search(r'name="csrf_token" value="([^"]*)"', page).group(1))
    browser.post(server.base + "/login", data={"csrf_token": csrf, "next": "/", "username": "admin",
                                               "password": PASSWORD}, allow_redirects=False, timeout=5)
    return browser


def exchange(server, browser, client, timeout=CHECK_TIMEOUT):
    """One trip through the code flow (skip-consent client): the code and the token endpoint's answer."""
    response = browser.get(server.base + "/o/authorize", params={
        "response_type": "code", "client_id": client["client_id"], "redirect_uri": REDIRECT, "state": "s"},
        allow_redirects=False, timeout=timeout)
    code = re.search(r"code=([^&]+)", response.headers["location"]).group(1)
    answer = requests.post(server.base + "/o/token", auth=(client["client_id"], client["client_secret"]),
                           data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT},
                           timeout=timeout)
    return code, answer


def new_chains(server, client, count):
    """`count` token responses through the code flow."""
    browser = sign_in(server)
    tokens = []
    for _ in range(count):
        _, answer = exchange(server, browser, client)
        assert answer.status_code == 200, answer.text
        tokens.append(answer.json())
    return tokens


def main():
    work = tempfile.mkdtemp()
    port = free_port()
    env = dict(os.environ, PORTCULLIS_DATA_DIR=f"{work}/data", PORTCULLIS_KEYS_DIR=f"{work}/keys",
               PORTCULLIS_ADMIN_PASSWORD=PASSWORD, RUST_LOG="warn")
    client = cli(env, "client", "create", "--name", "crash", "--skip-consent", "--redirect-uri", REDIRECT,
                 "--grant-type", "authorization_code", "--grant-type", "refresh_token")
    auth = (client["client_id"], client["client_secret"])
    server = Server(env, port, f"{work}/server.log")
    totals = {"kills": 0, "acknowledged exchanges": 0, "acknowledged rotations": 0, "acknowledged revocations": 0,
              "rotated tokens re-checked": 0, "revoked tokens re-checked": 0, "violations": 0}
    clean_cycles = 0
    random.seed(int(os.environ.get("SEED", "7")))

    for cycle in range(KILLS):
        server.start()
        chains = new_chains(server, client, 8)
        # Signed in before the kill's clock starts: the password check (Argon2id, slow on the debug
        # build) could otherwise take the whole window, and the cycle would exchange nothing.
        browser = sign_in(server)
        # Acknowledged: (old refresh token) / (kind, token) / code.
        rotated, revoked, exchanged = [], [], []
        lock = threading.Lock()
        stop = threading.Event()

        def worker(chain):
            session = requests.Session()
            current = chain["refresh_token"]
            access = chain["access_token"]
            while not stop.is_set():
                try:
                    if random.random() < 0.15:
                        kind, token = random.choice([("access", access), ("refresh", current)])
                        answer = session.post(server.base + "/o/revoke_token", auth=auth, data={"token": token}, timeout=5)
                        if answer.status_code == 200:
                            with lock:
                                revoked.append((kind, token))
                            if kind == "refresh":
                                return  # the chain is over
                        continue
                    answer = session.post(server.base + "/o/token", auth=auth, timeout=5,
                                          data={"grant_type": "refresh_token", "refresh_token": current})
                    if answer.status_code == 200:
                        body = answer.json()
                        with lock:
                            rotated.append(current)
                        current, access = body["refresh_token"], body["access_token"]
                    else:
                        return
                except requests.RequestException:
                    return  # the server died under us

        def exchanger():
            try:
                while not stop.is_set():
                    code, answer = exchange(server, browser, client, timeout=5)
                    if answer.status_code == 200:
                        with lock:
                            exchanged.append(code)
            except (requests.RequestException, KeyError, AttributeError):
                return  # the server died under us (mid-answer: no redirect, or no code in it)

        threads = [threading.Thread(target=worker, args=(chain,)) for chain in chains]
        threads.append(threading.Thread(target=exchanger))
        for thread in threads:
            thread.start()
        time.sleep(random.uniform(0.3, 1.5))
        server.kill()
        stop.set()
        for thread in threads:
            thread.join()
        totals["kills"] += 1

        server.start()  # the store must open cleanly
        violations_before = totals["violations"]
        for old in rotated:
            answer = requests.post(server.base + "/o/token", auth=auth, timeout=CHECK_TIMEOUT,
                                   data={"grant_type": "refresh_token", "refresh_token": old})
            totals["rotated tokens re-checked"] += 1
            if answer.status_code != 400 or answer.json().get("error") != "invalid_grant":
                totals["violations"] += 1
                print(f"VIOLATION: an acknowledged rotation was lost: {answer.status_code} {answer.text}")
        for kind, token in revoked:
            info = requests.post(server.base + "/o/introspect", auth=auth, data={"token": token},
                                 timeout=CHECK_TIMEOUT).json()
            totals["revoked tokens re-checked"] += 1
            if info.get("active"):
                totals["violations"] += 1
                print(f"VIOLATION: an acknowledged {kind} token revocation was lost")
        # Last: a replayed code revokes its grant, which would hide a lost rotation above.
        for code in exchanged:
            answer = requests.post(server.base + "/o/token", auth=auth, timeout=CHECK_TIMEOUT, data={
                "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT})
            if answer.status_code != 400 or answer.json().get("error") != "invalid_grant":
                totals["violations"] += 1
                print(f"VIOLATION: an acknowledged code exchange was lost: {answer.status_code} {answer.text}")
        clean_cycles += totals["violations"] == violations_before
        totals["acknowledged exchanges"] += len(exchanged)
        totals["acknowledged rotations"] += len(rotated)
        totals["acknowledged revocations"] += len(revoked)
        server.kill()
        print(f"cycle {cycle + 1}: {len(exchanged)} exchanges, {len(rotated)} rotations and {len(revoked)} revocations acknowledged before the kill, all checked")

    for name, count in totals.items():
        print(f"{name}: {count}")
    print(f"crash safety: {clean_cycles} passed, {totals['kills'] - clean_cycles} failed")
    if not totals["acknowledged exchanges"] or not totals["acknowledged rotations"]:
        raise SystemExit("FAIL: nothing was acknowledged before the kills, so nothing was checked")
    sys.exit(1 if totals["violations"] else 0)


if __name__ == "__main__":
    main()

"""Interoperability check with third-party libraries (Authlib + requests as the client, joserfc to
verify tokens offline), run against the
real binary as a new user would: provision through the CLI, start `serve`, then run the flows.

Usage: python3 tests/interop/authlib_client.py path/to/portcullis
With PORTCULLIS_SIGNING_ALG set (ES256 by default; RS256 or EdDSA), the server signs access
tokens with that algorithm and joserfc checks them with it.
Exits non-zero on the first failed expectation.
"""
import base64
import hashlib
import html
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time

import requests
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt
from joserfc.jwk import KeySet
from authlib.integrations.base_client.errors import OAuthError as OAuth2Error

BINARY = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/portcullis")
REDIRECT = "http://127.0.0.1:9/callback"
ADMIN_PASSWORD = "interop-admin-password"
# The server reads the same variable (`--signing-alg`).
SIGNING_ALG = os.environ.get("PORTCULLIS_SIGNING_ALG", "ES256")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli(env, *args):
    out = subprocess.run([BINARY, *args], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout) if out.stdout.strip() else None


PASSED = 0


def expect(condition, message):
    global PASSED
    if not condition:
        print(f"interop: {PASSED} passed, 1 failed")
        raise SystemExit(f"FAIL: {message}")
    PASSED += 1
    print(f"ok - {message}")


def sign_in_and_answer(base, authorization_url, button="allow"):
    """Drives the HTML pages like a browser; returns the final redirect Location."""
    browser = requests.Session()
    response = browser.get(authorization_url, allow_redirects=False)
    if response.status_code == 302 and response.headers["location"].startswith("/login"):
        login = browser.get(base + response.headers["location"])
        csrf = re.search(r'name="csrf_token" value="([^"]*)"', login.text).group(1)
        nxt = html.unescape(re.search(r'name="next" value="([^"]*)"', login.text).group(1))
        response = browser.post(base + "/login", data={"csrf_token": html.unescape(csrf), "next": nxt,
                                                       "username": "admin", "password": ADMIN_PASSWORD},
                                allow_redirects=False)
        assert response.status_code == 303, response.status_code
        response = browser.get(base + response.headers["location"], allow_redirects=False)
    if response.status_code == 200:
        fields = {html.unescape(k): html.unescape(v)
                  for k, v in re.findall(r'type="hidden" name="([^"]*)" value="([^"]*)"', response.text)}
        fields[button] = button
        response = browser.post(base + "/o/authorize", data=fields, allow_redirects=False)
    return response.status_code, response.headers.get("location", ""), response.text


def main():
    work = tempfile.mkdtemp()
    port = free_port()
    env = dict(os.environ, PORTCULLIS_DATA_DIR=f"{work}/data", PORTCULLIS_KEYS_DIR=f"{work}/keys",
               PORTCULLIS_LISTEN=f"127.0.0.1:{port}", PORTCULLIS_ADMIN_PASSWORD=ADMIN_PASSWORD, RUST_LOG="warn")
    confidential = cli(env, "client", "create", "--name", "Interop Web", "--redirect-uri", REDIRECT,
                       "--grant-type", "authorization_code", "--grant-type", "refresh_token",
                       "--grant-type", "client_credentials", "--scope", "read write")
    oidc_client = cli(env, "client", "create", "--name", "Interop RP", "--redirect-uri", REDIRECT,
                      "--scope", "openid profile email")
    public = cli(env, "client", "create", "--name", "Interop SPA", "--public", "--redirect-uri", REDIRECT,
                 "--scope", "read")
    server = subprocess.Popen([BINARY, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                requests.get(base + "/healthz", timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.05)
        meta = requests.get(base + "/.well-known/openid-configuration").json()
        expect(meta["issuer"] == base, "discovery names the issuer")
        jwks = KeySet.import_key_set(requests.get(meta["jwks_uri"]).json())

        def check_jwt(token, scope):
            decoded = jwt.decode(token, jwks, algorithms=[SIGNING_ALG])
            jwt.JWTClaimsRegistry(iss={"essential": True, "value": base}, aud={"essential": True, "value": base},
                                  exp={"essential": True}, nbf={"essential": True}).validate(decoded.claims)
            claims = decoded.claims
            header = decoded.header
            expect(header["typ"] == "at+jwt" and header["alg"] == SIGNING_ALG, "access token header is RFC 9068")
            expect(claims["scope"] == scope, f"access token carries scope {scope!r}")
            return claims

        # Confidential client, code flow with PKCE (client_secret_basic).
        verifier = secrets.token_urlsafe(48)
        session = OAuth2Session(confidential["client_id"], confidential["client_secret"], scope="read",
                                redirect_uri=REDIRECT, code_challenge_method="S256")
        url, state = session.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier)
        status, location, _ = sign_in_and_answer(base, url)
        expect(status == 303 and location.startswith(REDIRECT), "consent redirects to the client")
        token = session.fetch_token(meta["token_endpoint"], authorization_response=location, code_verifier=verifier)
        expect(token["token_type"] == "Bearer" and "refresh_token" in token, "code exchange returns tokens")
        check_jwt(token["access_token"], "read")
        hello = requests.get(base + "/api/hello", headers={"Authorization": f"Bearer {token['access_token']}"})
        expect(hello.status_code == 200 and hello.text == "Hello, there!!", "the token opens /api/hello")

        # Code replay.
        code = re.search(r"code=([^&]+)", location).group(1)
        try:
            session.fetch_token(meta["token_endpoint"], authorization_response=location, code_verifier=verifier)
            expect(False, "a replayed code is refused")
        except OAuth2Error as error:
            expect(error.error == "invalid_grant", "a replayed code is refused with invalid_grant")
        hello = requests.get(base + "/api/hello", headers={"Authorization": f"Bearer {token['access_token']}"})
        expect(hello.status_code == 401, "the replay revoked the access token")

        # Refresh rotation and reuse detection.
        verifier = secrets.token_urlsafe(48)
        url, state = session.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier)
        _, location, _ = sign_in_and_answer(base, url)
        token = session.fetch_token(meta["token_endpoint"], authorization_response=location, code_verifier=verifier)
        first_refresh = token["refresh_token"]
        rotated = session.refresh_token(meta["token_endpoint"], refresh_token=first_refresh)
        expect(rotated["refresh_token"] != first_refresh, "refresh rotates the refresh token")
        try:
            session.refresh_token(meta["token_endpoint"], refresh_token=first_refresh)
            expect(False, "a rotated refresh token is refused")
        except OAuth2Error as error:
            expect(error.error == "invalid_grant", "reusing a rotated refresh token is invalid_grant")
        try:
            session.refresh_token(meta["token_endpoint"], refresh_token=rotated["refresh_token"])
            expect(False, "the family is revoked after reuse")
        except OAuth2Error as error:
            expect(error.error == "invalid_grant", "reuse revoked the whole family")

        # OpenID Connect: nonce, ID token validated with joserfc, at_hash, UserInfo.
        nonce = secrets.token_urlsafe(16)
        verifier = secrets.token_urlsafe(48)
        oidc = OAuth2Session(oidc_client["client_id"], oidc_client["client_secret"], scope="openid profile email",
                             redirect_uri=REDIRECT, code_challenge_method="S256")
        url, state = oidc.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce)
        _, location, _ = sign_in_and_answer(base, url)
        token = oidc.fetch_token(meta["token_endpoint"], authorization_response=location, code_verifier=verifier)
        id_token = jwt.decode(token["id_token"], jwks, algorithms=meta["id_token_signing_alg_values_supported"])
        jwt.JWTClaimsRegistry(iss={"essential": True, "value": base},
                              aud={"essential": True, "value": oidc_client["client_id"]},
                              nonce={"essential": True, "value": nonce},
                              sub={"essential": True}, exp={"essential": True}, iat={"essential": True},
                              auth_time={"essential": True}).validate(id_token.claims)
        expect(True, "the ID token validates (iss, aud, nonce, exp, iat, auth_time)")
        digest = hashlib.sha256(token["access_token"].encode()).digest()[:16]
        expect(id_token.claims["at_hash"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode(), "at_hash matches")
        userinfo = oidc.get(meta["userinfo_endpoint"]).json()
        expect(userinfo["sub"] == id_token.claims["sub"] and userinfo["preferred_username"] == "admin",
               "UserInfo answers for the ID token's subject")

        # Introspection and revocation (RFC 7662, RFC 7009) with the same library.
        verifier = secrets.token_urlsafe(48)
        url, state = session.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier)
        _, location, _ = sign_in_and_answer(base, url)
        token = session.fetch_token(meta["token_endpoint"], authorization_response=location, code_verifier=verifier)
        info = session.introspect_token(meta["introspection_endpoint"], token=token["access_token"]).json()
        expect(info["active"] is True and info["client_id"] == confidential["client_id"], "introspection: active")
        response = session.revoke_token(meta["revocation_endpoint"], token=token["access_token"],
                                        token_type_hint="access_token")
        expect(response.status_code == 200, "revocation of an access token answers 200")
        info = session.introspect_token(meta["introspection_endpoint"], token=token["access_token"]).json()
        expect(info == {"active": False}, "a revoked access token introspects as inactive")
        response = session.revoke_token(meta["revocation_endpoint"], token=token["refresh_token"])
        expect(response.status_code == 200, "revocation of a refresh token answers 200")
        try:
            session.refresh_token(meta["token_endpoint"], refresh_token=token["refresh_token"])
            expect(False, "a revoked refresh token is refused")
        except OAuth2Error as error:
            expect(error.error == "invalid_grant", "a revoked refresh token is invalid_grant")
        response = session.revoke_token(meta["revocation_endpoint"], token="never-issued")
        expect(response.status_code == 200, "revoking an unknown token answers 200")

        # PKCE mismatch.
        verifier = secrets.token_urlsafe(48)
        url, state = session.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier)
        _, location, _ = sign_in_and_answer(base, url)
        try:
            session.fetch_token(meta["token_endpoint"], authorization_response=location,
                                code_verifier=secrets.token_urlsafe(48))
            expect(False, "a wrong code_verifier is refused")
        except OAuth2Error as error:
            expect(error.error == "invalid_grant", "a wrong code_verifier is invalid_grant")

        # Public client with PKCE (auth method none).
        spa = OAuth2Session(public["client_id"], scope="read", redirect_uri=REDIRECT,
                            code_challenge_method="S256", token_endpoint_auth_method="none")
        verifier = secrets.token_urlsafe(48)
        url, state = spa.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier)
        _, location, _ = sign_in_and_answer(base, url)
        token = spa.fetch_token(meta["token_endpoint"], authorization_response=location, code_verifier=verifier)
        check_jwt(token["access_token"], "read")
        expect(spa.refresh_token(meta["token_endpoint"], refresh_token=token["refresh_token"])["access_token"],
               "a public client refreshes without a secret")

        # Deny (prompt=consent: this user already approved this client once, which is remembered).
        url, state = spa.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier,
                                                  prompt="consent")
        status, location, _ = sign_in_and_answer(base, url, button="deny")
        expect("error=access_denied" in location and f"state={state}" in location, "deny returns access_denied")

        # Unregistered redirect URI: an error page, never a redirect.
        bad = OAuth2Session(confidential["client_id"], redirect_uri="https://evil.example/cb")
        url, _ = bad.create_authorization_url(meta["authorization_endpoint"])
        response = requests.get(url, allow_redirects=False)
        expect(response.status_code == 400 and "location" not in response.headers,
               "an unregistered redirect URI gets an error page")

        # client_credentials, with client_secret_post, and a wrong secret.
        m2m = OAuth2Session(confidential["client_id"], confidential["client_secret"], scope="write",
                            token_endpoint_auth_method="client_secret_post")
        token = m2m.fetch_token(meta["token_endpoint"], grant_type="client_credentials")
        claims = check_jwt(token["access_token"], "write")
        expect(claims["sub"] == confidential["client_id"], "client_credentials tokens name the client")
        wrong = OAuth2Session(confidential["client_id"], "wrong-secret")
        try:
            wrong.fetch_token(meta["token_endpoint"], grant_type="client_credentials")
            expect(False, "a wrong secret is refused")
        except OAuth2Error as error:
            expect(error.error == "invalid_client", "a wrong secret is invalid_client")

        # Garbage bodies.
        for body, ctype in [(b"\x00\xff" * 100, "application/x-www-form-urlencoded"), (b"{}", "application/json"),
                            (b"grant_type=" + b"a" * 100000, "application/x-www-form-urlencoded")]:
            response = requests.post(meta["token_endpoint"], data=body, headers={"Content-Type": ctype})
            expect(400 <= response.status_code < 500 and response.json()["error"], f"garbage body -> {response.status_code}")
    finally:
        server.terminate()
        expect(server.wait(timeout=15) == 0, "SIGTERM stops the server with exit 0")
    print(f"interop: {PASSED} passed, 0 failed")


if __name__ == "__main__":
    main()

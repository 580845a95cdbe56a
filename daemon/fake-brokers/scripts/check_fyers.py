#!/usr/bin/env python3
"""Check the fake Fyers against Fyers' official Python client (fyers-apiv3).

Runs the community-known headless steps H1-H4 of fyers.md (vagator `send_login_otp_v2`,
`verify_otp`, `verify_pin_v2`, then `POST /token`, answered with HTTP 308 and a JSON `Url`) with
`requests`, since the official client has no headless login; then lets the official client do
what it does: `SessionModel.generate_authcode()` (the assisted login URL, fetched once to see the
fake's login page), `SessionModel.generate_token()` (H5 `/validate-authcode` with `appIdHash`)
and `FyersModel.get_profile()` (V). The client's `Config.API` is pointed at the fake. Exits 0
when all of it works, 1 otherwise.

Usage:
    check_fyers.py DIR
        DIR as written by `cargo run -p fake-brokers --bin fake-brokers -- --dir DIR`
        (reads DIR/tokenbot.toml and DIR/fyers.json)

Needs: pip install fyers-apiv3 pyotp   (Python 3.11+ for tomllib). fyers-apiv3 pins
requests==2.31.0, so scripts/official-clients installs it in a virtualenv of its own.
"""

import base64
import json
import os
import sys
import tempfile
import time
import tomllib
import urllib.parse

import pyotp
import requests
from fyers_apiv3 import fyersModel


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def b64(s):
    return base64.b64encode(s.encode()).decode()


def totp(secret):
    return pyotp.TOTP(secret.replace(" ", "").upper()).now()


def show(step, r):
    h = r.headers
    print(f"{step}: HTTP {r.status_code}  content-type={h.get('content-type')!r} "
          f"content-encoding={h.get('content-encoding')!r} server={h.get('server')!r}")


def auth_code(login, api, c):
    s = requests.Session()
    r = s.post(f"{login}/send_login_otp_v2", json={"fy_id": b64(c["broker_user_id"]), "app_id": "2"}, timeout=10)
    show("H1 send_login_otp_v2", r)
    body = r.json()
    if body.get("s") != "ok":
        fail(f"H1: {body}")
    key = body["request_key"]
    for attempt in range(2):
        left = 30 - time.time() % 30
        if attempt or left < 5:
            time.sleep(left + 0.1)
        r = s.post(f"{login}/verify_otp", json={"request_key": key, "otp": totp(c["totp_secret"])}, timeout=10)
        show("H2 verify_otp", r)
        body = r.json()
        key = body.get("request_key", key)
        if body.get("s") == "ok":
            break
        if attempt:
            fail(f"H2: {body}")
        print("    TOTP refused (step already used?): retrying on the next step")
    r = s.post(f"{login}/verify_pin_v2", json={"request_key": key, "identity_type": "pin",
                                              "identifier": b64(c["pin"]), "recaptcha_token": ""}, timeout=10)
    show("H3 verify_pin_v2", r)
    body = r.json()
    if body.get("s") != "ok":
        fail(f"H3: {body.get('message')}")
    session = body["data"]["access_token"]
    app_id, app_type = c["api_key"].rsplit("-", 1)
    r = s.post(f"{api}/token", headers={"Authorization": f"Bearer {session}"}, allow_redirects=False, timeout=10,
               json={"fyers_id": c["broker_user_id"], "app_id": app_id, "redirect_uri": c["redirect_uri"],
                     "appType": app_type, "code_challenge": "", "state": "check", "scope": "", "nonce": "",
                     "response_type": "code", "create_cookie": True})
    show("H4 POST /token", r)
    if r.status_code != 308:
        fail(f"H4: HTTP {r.status_code}, expected 308")
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(r.json()["Url"]).query)
    if q.get("state") != ["check"] or "auth_code" not in q:
        fail(f"H4: no auth_code/state in the Url: {sorted(q)}")
    return q["auth_code"][0]


def main():
    if len(sys.argv) != 2:
        fail("usage: check_fyers.py DIR")
    d = sys.argv[1]
    with open(os.path.join(d, "tokenbot.toml"), "rb") as f:
        cfg = tomllib.load(f)["brokers"]["fyers"]
    with open(os.path.join(d, "fyers.json")) as f:
        c = json.load(f)
    login, api = cfg["login_url"].rstrip("/"), cfg["api_url"].rstrip("/")
    fyersModel.Config.API = api
    print(f"fyers-apiv3 against {api}")

    session = fyersModel.SessionModel(client_id=c["api_key"], secret_key=c["api_secret"],
                                      redirect_uri=c["redirect_uri"], response_type="code",
                                      grant_type="authorization_code", state="check")
    url = session.generate_authcode()
    r = requests.get(url, timeout=10)
    show("A1 GET /generate-authcode (SessionModel.generate_authcode)", r)
    if r.status_code != 200 or "html" not in r.headers.get("content-type", ""):
        fail("A1: the login page did not load")

    code = auth_code(login, api, c)
    print(f"auth_code: {code[:6]}...")
    session.set_token(code)
    token = session.generate_token()
    if token.get("s") != "ok" or not token.get("access_token"):
        fail(f"H5 generate_token: {token.get('code')} {token.get('message')}")
    print(f"H5 generate_token: s={token['s']} access_token={token['access_token'][:6]}...")

    with tempfile.TemporaryDirectory() as logs:
        fyers = fyersModel.FyersModel(client_id=c["api_key"], token=token["access_token"], is_async=False,
                                      log_path=logs)
        profile = fyers.get_profile()
    if profile.get("s") != "ok":
        fail(f"V get_profile: {profile}")
    fy_id = profile["data"]["fy_id"]
    print(f"V get_profile: fy_id={fy_id} name={profile['data'].get('name')!r}")
    if fy_id != c["broker_user_id"]:
        fail(f"V: profile of {fy_id}, expected {c['broker_user_id']}")
    again = session.generate_token()
    if again.get("s") == "ok":
        fail("H5: the auth code was accepted twice")
    print(f"H5 replay refused: code={again.get('code')} message={again.get('message')!r}")
    print("OK: fyers-apiv3 generate_authcode, generate_token and get_profile work against the fake")


if __name__ == "__main__":
    main()

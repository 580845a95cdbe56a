#!/usr/bin/env python3
"""Check the fake Dhan against Dhan's official Python client (dhanhq).

Points `dhanhq.auth.DhanLogin`'s URL constants at the fake, then drives what the client
supports: `generate_token(pin, totp)` (D1), `user_profile(access_token)` (D2), and the consent
flow `generate_login_session` (C1, with the browser stubbed) and `consume_token_id` (C3).
Exits 0 when all of it works, 1 otherwise.

Usage:
    check_dhanhq.py DIR
        DIR as written by `cargo run -p fake-brokers --bin fake-brokers -- --dir DIR`
        (reads DIR/tokenbot.toml and DIR/dhan.json)

Needs: pip install dhanhq pyotp requests   (Python 3.11+ for tomllib)
"""

import json
import os
import sys
import time
import urllib.parse

import pyotp
import requests


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def totp(secret):
    clean = secret.replace(" ", "").replace("-", "").replace("=", "").upper()
    left = 30 - time.time() % 30
    if left < 5:
        time.sleep(left + 0.1)
    return pyotp.TOTP(clean).now()


def main():
    if len(sys.argv) != 2:
        fail("usage: check_dhanhq.py DIR")
    import tomllib
    d = sys.argv[1]
    with open(os.path.join(d, "tokenbot.toml"), "rb") as f:
        dhan = tomllib.load(f)["brokers"]["dhan"]
    with open(os.path.join(d, "dhan.json")) as f:
        c = json.load(f)
    from importlib.metadata import version
    import dhanhq.auth as auth
    print(f"dhanhq {version('dhanhq')}, requests {requests.__version__}")
    auth.DhanLogin.AUTH_BASE_URL = dhan["auth_url"].rstrip("/")
    auth.DhanLogin.API_BASE_URL = dhan["api_url"].rstrip("/")
    opened = []
    auth.webbrowser.open = opened.append

    login = auth.DhanLogin(c["broker_user_id"])
    minted = login.generate_token(c["pin"], totp(c["totp_secret"]))
    token = minted.get("accessToken")
    if not token:
        fail(f"D1 generate_token: {minted}")
    print(f"D1 generate_token: dhanClientId={minted.get('dhanClientId')} "
          f"accessToken={token[:6]}... expiryTime={minted.get('expiryTime')}")
    profile = login.user_profile(token)
    if profile.get("dhanClientId") != c["broker_user_id"]:
        fail(f"D2 user_profile: {profile}")
    print(f"D2 user_profile: dhanClientId={profile['dhanClientId']} "
          f"tokenValidity={profile.get('tokenValidity')}")

    # The 2-minute throttle: an HTTP 200 error the client hands back as is.
    throttled = login.generate_token(c["pin"], totp(c["totp_secret"]))
    print(f"D1 again at once: {throttled}")
    if throttled.get("status") != "error" or "2 minutes" not in throttled.get("message", ""):
        fail(f"D1 again at once: expected the throttle, got {throttled}")

    # Consent flow: C1, the person's login (the fake's page is only looked at), C3.
    consent = login.generate_login_session(c["api_key"], c["api_secret"])
    print(f"C1 generate_login_session: consentAppId={consent} opened={opened}")
    page = requests.get(opened[0], timeout=7)
    if page.status_code != 200 or "html" not in page.headers.get("content-type", ""):
        fail(f"C2 consent page: {page.status_code}")
    print("OK: dhanhq generate_token, user_profile and generate_login_session work against the fake")
    print("    (consume_token_id needs the tokenId of a person's login: covered by the Rust tests)")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Check the fake Angel One against Angel One's official Python client (smartapi-python).

Lets `SmartApi.SmartConnect(api_key, root=<fake url>)` do `generateSession(clientcode, mpin,
totp)` (A1 loginByPassword, then A2 getProfile inside the client) and `getProfile()` again,
then checks the token with the client's own session. Exits 0 when all of it works, 1 otherwise.

Usage:
    check_smartapi.py DIR
        DIR as written by `cargo run -p fake-brokers --bin fake-brokers -- --dir DIR`
        (reads DIR/tokenbot.toml and DIR/angelone.json)

Needs: pip install smartapi-python pyotp requests   (Python 3.11+ for tomllib)

The client asks api.ipify.org for the public IP when it is imported; with no internet that
fails and it falls back to fixed values (as it always ends up doing). The lookup is stubbed here
so that the check never leaves the machine.
"""

import json
import os
import sys
import time

import pyotp
import requests


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


class _NoInternet:
    text = "127.0.0.1"


def import_smartapi():
    # SmartApi.smartConnect does `from requests import get` and calls get(ipify) at class
    # definition: answer it locally.
    real_get = requests.get
    requests.get = lambda url, *a, **k: _NoInternet() if "ipify" in url else real_get(url, *a, **k)
    try:
        from SmartApi import SmartConnect
        from SmartApi.version import __version__
    finally:
        requests.get = real_get
    return SmartConnect, __version__


def totp(secret):
    clean = secret.replace(" ", "").replace("-", "").replace("=", "").upper()
    left = 30 - time.time() % 30
    if left < 5:
        time.sleep(left + 0.1)
    return pyotp.TOTP(clean).now()


def main():
    if len(sys.argv) != 2:
        fail("usage: check_smartapi.py DIR")
    import tomllib
    d = os.path.abspath(sys.argv[1])
    with open(os.path.join(d, "tokenbot.toml"), "rb") as f:
        angel = tomllib.load(f)["brokers"]["angelone"]
    with open(os.path.join(d, "angelone.json")) as f:
        c = json.load(f)
    # The client writes its own log (request bodies with the MPIN included) under ./logs/: keep
    # it in DIR, which the caller removes, not in the checkout.
    os.chdir(d)
    SmartConnect, version = import_smartapi()
    print(f"smartapi-python {version}, requests {requests.__version__}")
    api = SmartConnect(api_key=c["api_key"], root=angel["api_url"].rstrip("/") + "/")
    try:
        session = api.generateSession(c["broker_user_id"], c["pin"], totp(c["totp_secret"]))
    except Exception as e:  # noqa: BLE001
        fail(f"A1 generateSession: {type(e).__name__}: {e}")
    if not session.get("status"):
        fail(f"A1/A2 generateSession: {session.get('errorcode')} {session.get('message')}")
    data = session["data"]
    print(f"A1+A2 generateSession: clientcode={data.get('clientcode')} "
          f"jwtToken={data['jwtToken'][:13]}... feedToken={data['feedToken'][:6]}... "
          f"exchanges={data.get('exchanges')}")
    if data.get("clientcode") != c["broker_user_id"]:
        fail(f"A2: profile is of {data.get('clientcode')}, expected {c['broker_user_id']}")
    profile = api.getProfile(api.refresh_token)
    if not profile.get("status") or profile["data"].get("clientcode") != c["broker_user_id"]:
        fail(f"A2 getProfile: {profile}")
    print(f"A2 getProfile: status={profile['status']} name={profile['data'].get('name')!r}")
    # A wrong MPIN is an HTTP 200 business error the client hands back as is.
    bad = SmartConnect(api_key=c["api_key"], root=angel["api_url"].rstrip("/") + "/")
    time.sleep(30 - time.time() % 30 + 0.1)
    refused = bad.generateSession(c["broker_user_id"], "000000", totp(c["totp_secret"]))
    print(f"A1 with a wrong MPIN: status={refused.get('status')} errorcode={refused.get('errorcode')} "
          f"message={refused.get('message')!r}")
    if refused.get("status") is not False or refused.get("errorcode") != "AB1007":
        fail(f"A1 with a wrong MPIN: {refused}")
    print("OK: smartapi-python generateSession and getProfile work against the fake")


if __name__ == "__main__":
    main()

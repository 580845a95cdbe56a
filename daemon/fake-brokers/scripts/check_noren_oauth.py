#!/usr/bin/env python3
"""Check the fake Shoonya's OAuth generation against Kambala's official Noren client (PyPI
`NorenRestApiOAuth`, module `NorenRestApiPy`, github.com/kambalatech/NorenRestApiWrapper-Py).

`getOAuthURL` builds the login URL; a person's browser is played with `requests` (the fake's
login page, its form, the 302 that carries only `?code=`); then `getAccessToken` (O2 GenAcsTok,
checksum = sha256(client id + secret code + code)) and `get_limits` (V, Bearer). The client is
given its host with a trailing slash, as the SDKs' users do, so it asks for `//GenAcsTok`.
Exits 0 when all of it works, 1 otherwise.

Usage:
    check_noren_oauth.py DIR
        DIR as written by `cargo run -p fake-brokers --bin fake-brokers -- --dir DIR`
        (reads DIR/tokenbot.toml and DIR/shoonya.json)

Needs: pip install NorenRestApiOAuth pyotp   (Python 3.11+ for tomllib)
"""

import json
import os
import sys
import time
import tomllib
from urllib.parse import parse_qs, urlsplit

import pyotp
import requests
from NorenRestApiPy.NorenApi import NorenApi


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    if len(sys.argv) != 2:
        fail("usage: check_noren_oauth.py DIR")
    d = sys.argv[1]
    with open(os.path.join(d, "tokenbot.toml"), "rb") as f:
        cfg = tomllib.load(f)["brokers"]["shoonya"]
    with open(os.path.join(d, "shoonya.json")) as f:
        c = json.load(f)
    api = NorenApi(host=cfg["api_url"] + "/", websocket="wss://127.0.0.1:1/NorenWSAPI/")
    print(f"NorenRestApiOAuth against {cfg['api_url']}")

    url = api.getOAuthURL(cfg["oauth_url"], c["api_key"])
    page = requests.get(url, timeout=10)
    if page.status_code != 200 or "<form" not in page.text:
        fail(f"O1 login page: HTTP {page.status_code}")
    # The previous step's code: the QuickAuth check may run in this same step.
    otp = pyotp.TOTP(c["totp_secret"]).at(time.time() - 30)
    form = {"client_id": c["api_key"], "uid": c["broker_user_id"], "pwd": c["password"], "otp": otp}
    sent = requests.post(cfg["oauth_url"], data=form, allow_redirects=False, timeout=10)
    location = sent.headers.get("location", "")
    query = parse_qs(urlsplit(location).query)
    if sent.status_code != 302 or list(query) != ["code"]:
        fail(f"O1 login form: HTTP {sent.status_code} location={location!r}")
    print(f"O1 login page: 302 to {urlsplit(location).path} with only a code")

    got = api.getAccessToken(query["code"][0], c["secret_code"], c["api_key"], c["broker_user_id"])
    if not got:
        fail("O2 getAccessToken returned nothing")
    token, uid, _refresh, actid = got
    if uid != c["broker_user_id"] or actid != c["broker_user_id"]:
        fail(f"O2 getAccessToken: USERID={uid} actid={actid}")
    print(f"O2 getAccessToken: USERID={uid} access_token={token[:6]}...")

    limits = api.get_limits()
    if not isinstance(limits, dict) or limits.get("stat") != "Ok":
        fail(f"V get_limits: {limits}")
    print(f"V get_limits: stat=Ok cash={limits.get('cash')}")

    again = api.getAccessToken(query["code"][0], c["secret_code"], c["api_key"], c["broker_user_id"])
    if again:
        fail("O2 accepted a used code")
    print("O2 refuses the used code")
    print("OK")


if __name__ == "__main__":
    main()

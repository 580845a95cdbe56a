#!/usr/bin/env python3
"""Check the fake Shoonya's QuickAuth generation against Shoonya's Noren client (PyPI
`NorenRestApiPy` 0.0.22, the last one whose `login` is QuickAuth; Kambala's later packages
comment it out).

`login` (Q1 QuickAuth: sha256 password, TOTP, vendor code, sha256(uid|API key) app key, imei;
the client asks for `//QuickAuth`) then `get_limits` (V with `jKey`). Exits 0 when all of it
works, 1 otherwise.

Usage:
    check_noren_quickauth.py DIR
        DIR as written by `cargo run -p fake-brokers --bin fake-brokers -- --dir DIR`
        (reads DIR/tokenbot.toml and DIR/shoonya.json)

Needs: pip install NorenRestApiPy==0.0.22 requests websocket-client pyotp   (Python 3.11+)
"""

import json
import os
import sys
import time
import tomllib

import pyotp
from NorenRestApiPy.NorenApi import NorenApi


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    if len(sys.argv) != 2:
        fail("usage: check_noren_quickauth.py DIR")
    d = sys.argv[1]
    with open(os.path.join(d, "tokenbot.toml"), "rb") as f:
        cfg = tomllib.load(f)["brokers"]["shoonya"]
    with open(os.path.join(d, "shoonya.json")) as f:
        c = json.load(f)
    api = NorenApi(host=cfg["legacy_url"] + "/", websocket="wss://127.0.0.1:1/NorenWS/")
    print(f"NorenRestApiPy against {cfg['legacy_url']}")

    # A fresh step: the OAuth check may have used the previous one.
    left = 30 - time.time() % 30
    if left < 5:
        time.sleep(left + 0.1)
    ret = api.login(
        userid=c["broker_user_id"],
        password=c["password"],
        twoFA=pyotp.TOTP(c["totp_secret"]).now(),
        vendor_code=c["api_key"],
        api_secret=c["api_secret"],
        imei="abc1234",
    )
    if not ret or ret.get("stat") != "Ok":
        fail(f"Q1 login: {ret}")
    print(f"Q1 login: stat=Ok actid={ret.get('actid')} susertoken={ret['susertoken'][:6]}...")

    limits = api.get_limits()
    if not isinstance(limits, dict) or limits.get("stat") != "Ok":
        fail(f"V get_limits: {limits}")
    print(f"V get_limits: stat=Ok cash={limits.get('cash')}")
    print("OK")


if __name__ == "__main__":
    main()

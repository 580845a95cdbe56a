#!/usr/bin/env python3
"""Check the fake Kotak Neo against Kotak's official Python SDK (PyPI `kotakneoapi`, module
`neo_api_client`, github.com/Kotak-Neo/kotak-neo-python).

Lets `NeoAPI(consumer_key=<API access token>, environment="prod")` do the whole v2 login:
`totp_login(mobile_number, ucc, totp)` (K1), `totp_validate(mpin)` (K2, which hands the client
the session's `baseUrl`, the fake itself), then `limits()` (V) on that base URL. The SDK's login
host constant is pointed at the fake, and its data-center config lookup (a call to
lapi.kotaksecurities.com, best effort) at the fake too. Exits 0 when all of it works, 1
otherwise.

Usage:
    check_kotakneo.py DIR
        DIR as written by `cargo run -p fake-brokers --bin fake-brokers -- --dir DIR`
        (reads DIR/tokenbot.toml and DIR/kotak-neo.json)

Needs: pip install kotakneoapi pyotp   (Python 3.11+ for tomllib)
"""

import json
import os
import sys
import time
import tomllib

import pyotp
from neo_api_client import NeoAPI
from neo_api_client.utils import neo_utility


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    if len(sys.argv) != 2:
        fail("usage: check_kotakneo.py DIR")
    d = sys.argv[1]
    with open(os.path.join(d, "tokenbot.toml"), "rb") as f:
        cfg = tomllib.load(f)["brokers"]["kotak-neo"]
    with open(os.path.join(d, "kotak-neo.json")) as f:
        c = json.load(f)
    login = cfg["login_url"].rstrip("/")
    root = login.removesuffix("/login/1.0")
    # The SDK appends `login/1.0/tradeApiLogin` to its session host.
    neo_utility.SESSION_PROD_BASE_URL = root
    neo_utility.CONFIG_SERVICE_URL_PROD = root + "/5config/config"
    print(f"neo_api_client against {root}")

    client = NeoAPI(consumer_key=c["api_key"], environment="prod")
    view = None
    for attempt in range(2):
        left = 30 - time.time() % 30
        if attempt or left < 5:
            time.sleep(left + 0.1)
        code = pyotp.TOTP(c["totp_secret"]).now()
        view = client.totp_login(mobile_number=c["mobile"], ucc=c["broker_user_id"], totp=code)
        if isinstance(view, dict) and "data" in view:
            break
        print(f"    K1 refused ({view.get('message') if isinstance(view, dict) else view}): retrying on the next step")
    if not isinstance(view, dict) or view.get("data", {}).get("kType") != "View":
        fail(f"K1 totp_login: {view}")
    print(f"K1 totp_login: kType={view['data']['kType']} sid={view['data']['sid'][:6]}...")

    trade = client.totp_validate(mpin=c["pin"])
    data = trade.get("data") if isinstance(trade, dict) else None
    if not data or data.get("kType") != "Trade":
        fail(f"K2 totp_validate: {trade}")
    print(f"K2 totp_validate: kType=Trade hsServerId={data.get('hsServerId')} dataCenter={data.get('dataCenter')} "
          f"baseUrl={data.get('baseUrl')}")

    limits = client.limits()
    if not isinstance(limits, dict) or limits.get("stat") != "Ok":
        fail(f"V limits: {limits}")
    print(f"V limits: stat={limits['stat']} stCode={limits.get('stCode')} Net={limits.get('Net')}")
    print("OK: neo_api_client totp_login, totp_validate and limits work against the fake")


if __name__ == "__main__":
    main()

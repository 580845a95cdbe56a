#!/usr/bin/env python3
"""Check the fake 5paisa against 5paisa's official Python client (py5paisa).

Lets `py5paisa.FivePaisaClient` run `get_totp_session` (F1 TOTPLogin, then F2 GetAccessToken)
and `get_tradebook()` (F3, the call tokenbot verifies with) against the fake, by pointing the
client's URL constants (module-level in py5paisa.py, copied onto the client by `set_url`) at it.
Exits 0 when all of it works, 1 otherwise.

Usage:
    check_py5paisa.py DIR
        DIR as written by `cargo run -p fake-brokers --bin fake-brokers -- --dir DIR`
        (reads DIR/tokenbot.toml and DIR/fivepaisa.json)

Needs: pip install py5paisa pyotp   (Python 3.11+ for tomllib)
"""

import json
import os
import sys
import time
import tomllib

import pyotp
import py5paisa
from py5paisa import py5paisa as core


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    if len(sys.argv) != 2:
        fail("usage: check_py5paisa.py DIR")
    d = sys.argv[1]
    with open(os.path.join(d, "tokenbot.toml"), "rb") as f:
        api = tomllib.load(f)["brokers"]["fivepaisa"]["api_url"].rstrip("/") + "/"
    with open(os.path.join(d, "fivepaisa.json")) as f:
        c = json.load(f)
    # The SDK builds every route from urlconst.BaseUrl at import time: re-point the ones used.
    core.GET_REQUEST_TOKEN_ROUTE = f"{api}TOTPLogin"
    core.ACCESS_TOKEN_ROUTE = f"{api}GetAccessToken"
    core.TRADEBOOK_ROUTE = f"{api}V1/TradeBook"
    client = py5paisa.FivePaisaClient(cred={
        "APP_NAME": "tokenbot-check", "APP_SOURCE": "0", "USER_ID": c["api_user_id"],
        "PASSWORD": "unused", "USER_KEY": c["api_key"], "ENCRYPTION_KEY": c["api_secret"],
    })
    client.TRADEBOOK_ROUTE = core.TRADEBOOK_ROUTE
    left = 30 - time.time() % 30
    if left < 5:
        time.sleep(left + 0.1)
    code = pyotp.TOTP(c["totp_secret"]).now()
    token = client.get_totp_session(c["broker_user_id"], code, c["pin"])
    if not token:
        fail("get_totp_session returned no access token")
    print(f"F1+F2 get_totp_session: access_token={token[:8]}... client_code={client.client_code}")
    if str(client.client_code) != c["broker_user_id"]:
        fail(f"client code {client.client_code!r}, expected {c['broker_user_id']!r}")
    trades = client.get_tradebook()
    print(f"F3 get_tradebook: {trades!r}")
    if trades is None:
        fail("get_tradebook failed")
    print("OK: py5paisa get_totp_session and get_tradebook work against the fake")


if __name__ == "__main__":
    main()

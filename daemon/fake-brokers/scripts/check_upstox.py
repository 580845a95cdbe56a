#!/usr/bin/env python3
"""Check the fake Upstox against Upstox's official Python client (upstox-python-sdk).

Points `upstox_client.Configuration().host` at the fake, then: A1 the authorization dialog (a
person's login stood in for by the fake's `_person` parameter; the 302 read, not followed), A2
`LoginApi.token` (form body, bare answer), V `UserApi.get_profile`, the single-use code (a
second `token` with it is refused with UDAPI100057), and Q1
`LoginApi.init_token_request_for_indie_user` (the v3 Access Token Request).
Exits 0 when all of it works, 1 otherwise.

Usage:
    check_upstox.py DIR
        DIR as written by `cargo run -p fake-brokers --bin fake-brokers -- --dir DIR`
        (reads DIR/tokenbot.toml and DIR/upstox.json)

Needs: pip install upstox-python-sdk   (Python 3.11+ for tomllib)
"""

import json
import os
import sys
import tomllib
import urllib.error
import urllib.parse
import urllib.request

import upstox_client
from upstox_client.rest import ApiException


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def main():
    if len(sys.argv) != 2:
        fail("usage: check_upstox.py DIR")
    d = sys.argv[1]
    with open(os.path.join(d, "tokenbot.toml"), "rb") as f:
        api = tomllib.load(f)["brokers"]["upstox"]["api_url"].rstrip("/")
    with open(os.path.join(d, "upstox.json")) as f:
        c = json.load(f)

    conf = upstox_client.Configuration()
    conf.host = api
    login = upstox_client.LoginApi(upstox_client.ApiClient(conf))

    # A1: the dialog answers a 302 to the redirect URL with code and state.
    query = urllib.parse.urlencode({
        "response_type": "code", "client_id": c["api_key"], "redirect_uri": c["redirect_uri"],
        "state": "st-1", "_person": c["broker_user_id"],
    })
    opener = urllib.request.build_opener(NoRedirect)
    try:
        opener.open(f"{api}/v2/login/authorization/dialog?{query}")
        fail("A1 did not redirect")
    except urllib.error.HTTPError as e:
        if e.code != 302:
            fail(f"A1 answered {e.code}")
        location = e.headers["Location"]
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
    if q.get("state") != "st-1" or not q.get("code"):
        fail(f"A1 redirect without code/state: {location}")

    # A2 with the official client.
    args = dict(code=q["code"], client_id=c["api_key"], client_secret=c["api_secret"],
                redirect_uri=c["redirect_uri"], grant_type="authorization_code")
    token = login.token("2.0", **args)
    if not token.access_token or token.user_id != c["broker_user_id"]:
        fail(f"A2: unexpected answer for {token.user_id}")
    try:
        login.token("2.0", **args)
        fail("A2: a used code was accepted again")
    except ApiException as e:
        body = e.body.decode() if isinstance(e.body, bytes) else (e.body or "")
        if "UDAPI100057" not in body:
            fail(f"A2 reuse: expected UDAPI100057, got HTTP {e.status}")

    # V: the profile with the new token.
    conf_v = upstox_client.Configuration()
    conf_v.host = api
    conf_v.access_token = token.access_token
    profile = upstox_client.UserApi(upstox_client.ApiClient(conf_v)).get_profile("2.0")
    if profile.status != "success" or profile.data.user_id != c["broker_user_id"]:
        fail("V: the profile does not name the user")

    # Q1: the v3 access token request.
    body = upstox_client.IndieUserTokenRequest(client_secret=c["api_secret"])
    req = login.init_token_request_for_indie_user(body, c["api_key"])
    if req.status != "success" or not str(req.data.authorization_expiry).isdigit():
        fail("Q1: no authorization_expiry")
    print("upstox-python-sdk: A1, token, reused code refused, get_profile, access token request: ok")


if __name__ == "__main__":
    main()

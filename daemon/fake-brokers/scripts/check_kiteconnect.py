#!/usr/bin/env python3
"""Check the fake Kite against Zerodha's official Python client (pykiteconnect).

Runs S1-S4 of the web login (kite.md) with `requests` and one cookie jar, stopping at the hop
that carries `request_token` (the app's redirect URL is never fetched), then lets
`kiteconnect.KiteConnect(api_key, root=<fake api url>)` do `generate_session` (S5) and
`profile()` (S6). Exits 0 when all of it works, 1 otherwise.

Usage:
    check_kiteconnect.py DIR
        DIR as written by `cargo run -p fake-brokers --bin fake-brokers -- --dir DIR`
        (reads DIR/tokenbot.toml and DIR/kite.json)
    check_kiteconnect.py --web-url URL --api-url URL --credentials kite.json

Needs: pip install kiteconnect pyotp requests   (Python 3.11+ for tomllib)

Cookies: the fake, like Kite, marks its session cookies `Secure`, and it listens on plain
http://127.0.0.1. Browsers and Rust's cookie_store send Secure cookies to loopback hosts;
Python's http.cookiejar only ever sends them over https, so the jar here uses a policy that
treats loopback as secure (as browsers do). Pass --strict-cookies to use the stock policy.
"""

import argparse
import http.cookiejar
import ipaddress
import json
import os
import sys
import time
import urllib.parse

import kiteconnect
import pyotp
import requests


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def totp(secret, t=None):
    """The RFC 6238 code (SHA-1, 6 digits, 30 s) of the base32 `secret` at `t` (now)."""
    clean = secret.replace(" ", "").replace("-", "").replace("=", "").upper()
    return pyotp.TOTP(clean).at(time.time() if t is None else t)


_stock_return_ok_secure = http.cookiejar.DefaultCookiePolicy.return_ok_secure


def _loopback_is_secure(self, cookie, request):
    """Send Secure cookies to loopback hosts over http, as browsers and cookie_store do."""
    host = urllib.parse.urlsplit(request.get_full_url()).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    return loopback or _stock_return_ok_secure(self, cookie, request)


def treat_loopback_as_secure():
    # Patched on the class: requests copies the session's jar into a fresh RequestsCookieJar
    # (with a fresh default policy) for every request, so a policy set on the session is lost.
    http.cookiejar.DefaultCookiePolicy.return_ok_secure = _loopback_is_secure


def load_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dir", nargs="?", help="the fake-brokers --dir output")
    p.add_argument("--web-url")
    p.add_argument("--api-url")
    p.add_argument("--credentials", help="kite.json")
    p.add_argument("--strict-cookies", action="store_true",
                   help="Python's stock cookie policy (no Secure cookies over http)")
    a = p.parse_args()
    if a.dir:
        import tomllib
        with open(os.path.join(a.dir, "tokenbot.toml"), "rb") as f:
            kite = tomllib.load(f)["brokers"]["kite"]
        a.web_url = a.web_url or kite["web_url"]
        a.api_url = a.api_url or kite["api_url"]
        a.credentials = a.credentials or os.path.join(a.dir, "kite.json")
    if not (a.web_url and a.api_url and a.credentials):
        p.error("give DIR, or --web-url, --api-url and --credentials")
    with open(a.credentials) as f:
        a.creds = json.load(f)
    return a


def show(step, r):
    h = r.headers
    print(f"{step}: HTTP {r.status_code}  content-type={h.get('content-type')!r} "
          f"content-encoding={h.get('content-encoding')!r} "
          f"transfer-encoding={h.get('transfer-encoding')!r} server={h.get('server')!r}")


def request_token(a):
    web = a.web_url.rstrip("/")
    web_host = urllib.parse.urlsplit(web).netloc
    c = a.creds
    if not a.strict_cookies:
        treat_loopback_as_secure()
    s = requests.Session()

    # S1
    r = s.get(f"{web}/connect/login", params={"v": "3", "api_key": c["api_key"]},
              allow_redirects=False, timeout=7)
    show("S1 GET /connect/login", r)
    if not r.is_redirect or "location" not in r.headers:
        fail(f"S1: expected a redirect, got {r.status_code} {r.text[:200]!r}")
    print(f"    redirect body: {r.text!r}")
    print(f"    Set-Cookie names: {[ck.name for ck in s.cookies]} (kept by the jar)")
    location = urllib.parse.urljoin(r.url, r.headers["location"])
    sess_id = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query).get("sess_id", [None])[0]
    if not sess_id:
        fail(f"S1: no sess_id in {location}")

    # S1a (browser-like)
    r = s.get(location, allow_redirects=False, timeout=7)
    show("S1a GET /connect/login?sess_id", r)

    # S2
    r = s.post(f"{web}/api/login", data={"user_id": c["broker_user_id"], "password": c["password"],
                                         "type": "user_id"}, timeout=7)
    show("S2 POST /api/login", r)
    body = r.json()
    if body.get("status") != "success":
        fail(f"S2: {body}")
    data = body["data"]

    # S3: a TOTP step with at least 5 s left; one retry on the next step if refused (a step is
    # accepted once, so running this twice within 30 s on one account needs it).
    for attempt in range(2):
        left = 30 - time.time() % 30
        if attempt or left < 5:
            time.sleep(left + 0.1)
        r = s.post(f"{web}/api/twofa", data={"user_id": data["user_id"], "request_id": data["request_id"],
                                             "twofa_value": totp(c["totp_secret"]),
                                             "twofa_type": data["twofa_type"]}, timeout=7)
        show("S3 POST /api/twofa", r)
        body = r.json()
        if body.get("status") == "success":
            break
        if body.get("message") != "Invalid TOTP" or attempt:
            fail(f"S3: {body}")
        print("    TOTP refused (step already used?): retrying on the next step")

    # S4: follow at most 5 hops on the web host, stop at the one carrying request_token.
    url = f"{web}/connect/finish?" + urllib.parse.urlencode({"api_key": c["api_key"], "sess_id": sess_id})
    for hop in range(5):
        r = s.get(url, allow_redirects=False, timeout=7)
        show(f"S4 hop {hop} GET {urllib.parse.urlsplit(url).path}", r)
        if not r.is_redirect:
            fail(f"S4: no redirect at {url}: {r.status_code} {r.text[:200]!r}")
        url = urllib.parse.urljoin(url, r.headers["location"])
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
        if "request_token" in q:
            return q["request_token"][0]
        if urllib.parse.urlsplit(url).path == "/connect/authorize":
            fail("S4: the app is not authorized")
        if urllib.parse.urlsplit(url).netloc != web_host:
            fail(f"S4: left the web host without a request_token: {url}")
    fail("S4: too many hops")


def main():
    a = load_args()
    from kiteconnect import __version__ as kc_version
    print(f"kiteconnect {kc_version.__version__}, requests {requests.__version__}")
    rt = request_token(a)
    print(f"request_token: {rt[:6]}...")
    kite = kiteconnect.KiteConnect(api_key=a.creds["api_key"], root=a.api_url.rstrip("/"))
    # Show what the official client's own session received.
    kite.reqsession.hooks["response"].append(
        lambda r, *args, **kwargs: show(f"    kiteconnect {r.request.method} {urllib.parse.urlsplit(r.url).path}", r))
    try:
        session = kite.generate_session(rt, api_secret=a.creds["api_secret"])
    except Exception as e:  # noqa: BLE001
        fail(f"S5 generate_session: {type(e).__name__}: {e}")
    print(f"S5 generate_session: user_id={session.get('user_id')} login_time={session.get('login_time')} "
          f"access_token={session['access_token'][:6]}...")
    try:
        profile = kite.profile()
    except Exception as e:  # noqa: BLE001
        fail(f"S6 profile: {type(e).__name__}: {e}")
    print(f"S6 profile: user_id={profile.get('user_id')} user_name={profile.get('user_name')!r}")
    if profile.get("user_id") != a.creds["broker_user_id"]:
        fail(f"S6: profile is of {profile.get('user_id')}, expected {a.creds['broker_user_id']}")
    print("OK: kiteconnect generate_session and profile work against the fake")


if __name__ == "__main__":
    main()

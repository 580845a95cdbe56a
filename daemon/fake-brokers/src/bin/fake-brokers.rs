//! Standalone fakes for trying the daemon by hand or checking other clients against them:
//! a realistic FakeKite, FakeIifl, FakeXts, FakeAngelOne, FakeDhan, FakeFyers, FakeKotakNeo,
//! FakeMotilal, FakeFivePaisa, FakeShoonya and FakeUpstox on loopback, on the system clock, with
//! one happy demo account each.
//!
//! ```text
//! fake-brokers --dir DIR [--ideal]
//! ```
//!
//! Writes into DIR (created if missing):
//! - `tokenbot.toml`: the `[brokers.kite]`, `[brokers.iifl]`, `[brokers.iifl-xts]`,
//!   `[brokers.angelone]`, `[brokers.dhan]`, `[brokers.fyers]`, `[brokers.kotak-neo]`,
//!   `[brokers.motilal]` (with the fake's registered `client_public_ip`) and
//!   `[brokers.fivepaisa]`, `[brokers.shoonya]` (with `flow = "quickauth"`) and `[brokers.upstox]`
//!   sections pointing at the fakes;
//! - one `<broker>.json` per broker: the account's credentials (`broker_user_id`, `password`,
//!   `api_key`, `api_secret`, `totp_secret`, and each broker's own fields such as `pin`,
//!   `mobile`, `dob_or_pan`, `api_user_id`, `secret_code`; XTS has no password nor TOTP secret).
//!
//! Then prints `ready` and serves until SIGTERM or SIGINT. Secrets are random on every start.
//! `--ideal` starts the fakes with tidy answers instead of real servers' habits.

use std::path::{Path, PathBuf};

use fake_brokers::{
    AngelUser, DhanUser, FakeAngelOne, FakeDhan, FakeFivePaisa, FakeFyers, FakeIifl, FakeKite,
    FakeKotakNeo, FakeMotilal, FakeOptions, FakeShoonya, FakeUpstox, FakeXts, FivePaisaUser,
    FyersUser, IiflUser, KiteUser, KotakUser, MOTILAL_REGISTERED_IP, MotilalUser, Realism,
    ShoonyaUser, UpstoxUser, XtsUser,
};
use serde_json::json;

const USAGE: &str = "usage: fake-brokers --dir DIR [--ideal]";

fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("getrandom");
    b
}

fn random_alnum(n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    random_bytes(n)
        .iter()
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect()
}

/// A random 160-bit TOTP secret in base32, as authenticator apps show it.
fn random_base32_secret() -> String {
    totp_rs::Secret::new(random_bytes(20).into_boxed_slice()).to_base32()
}

struct Args {
    dir: PathBuf,
    realism: Realism,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let (mut dir, mut realism) = (None, Realism::Realistic);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dir" => dir = Some(PathBuf::from(args.next().ok_or("--dir needs a value")?)),
            "--ideal" => realism = Realism::Ideal,
            "-h" | "--help" => return Err(String::new()),
            other => match other.strip_prefix("--dir=") {
                Some(d) => dir = Some(PathBuf::from(d)),
                None => return Err(format!("unknown argument {other:?}")),
            },
        }
    }
    Ok(Args {
        dir: dir.ok_or("--dir is required")?,
        realism,
    })
}

fn write(dir: &Path, name: &str, contents: &str) -> std::io::Result<()> {
    std::fs::write(dir.join(name), contents)
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string")
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("fake-brokers: {e}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args).await {
        eprintln!("fake-brokers: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> std::io::Result<()> {
    let options = FakeOptions {
        realism: args.realism,
        ..FakeOptions::default()
    };
    let kite = FakeKite::start_with(options.clone()).await;
    let iifl = FakeIifl::start_with(options.clone()).await;
    let xts = FakeXts::start_with(options.clone()).await;
    let angel = FakeAngelOne::start_with(options.clone()).await;
    let dhan = FakeDhan::start_with(options.clone()).await;
    let fyers = FakeFyers::start_with(options.clone()).await;
    let kotak = FakeKotakNeo::start_with(options.clone()).await;
    let motilal = FakeMotilal::start_with(options.clone()).await;
    let fivepaisa = FakeFivePaisa::start_with(options.clone()).await;
    let shoonya = FakeShoonya::start_with(options.clone()).await;
    let upstox = FakeUpstox::start_with(options).await;

    let kite_user = KiteUser::new(
        "AB1234",
        &random_alnum(16),
        &random_alnum(16).to_ascii_lowercase(),
        &random_alnum(32).to_ascii_lowercase(),
        &random_base32_secret(),
    );
    let iifl_user = IiflUser::new(
        "TEST101",
        &random_alnum(16),
        &random_alnum(32),
        &random_alnum(32),
        &random_base32_secret(),
    );
    let xts_user = XtsUser::new("XTS001", &random_alnum(24), &random_alnum(16));
    let digits = |n: usize| {
        random_bytes(n)
            .iter()
            .map(|b| char::from(b'0' + b % 10))
            .collect::<String>()
    };
    let fyers_user = FyersUser::new(
        "XY12345",
        &digits(4),
        &format!("{}-100", random_alnum(10).to_ascii_uppercase()),
        &random_alnum(10).to_ascii_uppercase(),
        &random_base32_secret(),
    );
    let kotak_user = KotakUser::new(
        "AB123",
        "+919876543210",
        &digits(6),
        &random_alnum(40),
        &random_base32_secret(),
    );
    fyers.add_user(fyers_user.clone());
    kotak.add_user(kotak_user.clone());
    kite.add_user(kite_user.clone());
    iifl.add_user(iifl_user.clone());
    xts.add_user(xts_user.clone());
    let angel_user = AngelUser::new("A123456", "7391", &random_alnum(8), &random_base32_secret());
    let dhan_user = DhanUser::new(
        "1000000401",
        "739164",
        &random_base32_secret(),
        &random_alnum(8),
        &random_alnum(32),
    );
    angel.add_user(angel_user.clone());
    dhan.add_user(dhan_user.clone());
    let motilal_user = MotilalUser::new(
        "AA017",
        &random_alnum(16),
        &random_alnum(24),
        &random_alnum(32),
        &random_base32_secret(),
        "18/10/1988",
    );
    motilal.add_user(motilal_user.clone());
    let fivepaisa_user = FivePaisaUser {
        client_code: "50011110".into(),
        pin: "739164".into(),
        totp_secret: random_base32_secret(),
        user_key: random_alnum(32),
        encry_key: random_alnum(32),
        api_user_id: random_alnum(11),
        behaviour: Default::default(),
    };
    fivepaisa.add_user(fivepaisa_user.clone());
    let fivepaisa_urls = fivepaisa.base_urls();
    let mut shoonya_user = ShoonyaUser::new(
        "FA12345",
        &random_alnum(16),
        &random_base32_secret(),
        &random_alnum(32),
        &random_alnum(64),
    );
    // The official OAuth client is pointed at a local redirect the check script reads back.
    shoonya_user.redirect_url = "http://127.0.0.1:1/callback/shoonya".into();
    shoonya.add_user(shoonya_user.clone());
    let upstox_user = UpstoxUser::new(
        "UP1234",
        &format!("615b1297-{}", random_alnum(12).to_ascii_lowercase()),
        &random_alnum(10).to_ascii_lowercase(),
    )
    .with_redirect_uri("http://127.0.0.1:3000/callback/upstox");
    upstox.add_user(upstox_user.clone());

    std::fs::create_dir_all(&args.dir)?;
    write(
        &args.dir,
        "tokenbot.toml",
        &format!(
            "# Written by fake-brokers: the brokers point at its loopback fakes.\n\n\
             [brokers.kite]\nweb_url = {}\napi_url = {}\n\n\
             [brokers.iifl]\nportal_url = {}\napi_url = {}\n\n\
             [brokers.iifl-xts]\napi_url = {}\n\n\
             [brokers.angelone]\napi_url = {}\nlogin_url = {}\n\n\
             [brokers.dhan]\nauth_url = {}\napi_url = {}\n\n\
             [brokers.fyers]\nlogin_url = {}\napi_url = {}\n\n\
             [brokers.kotak-neo]\nlogin_url = {}\napi_url = {}\n\n\
             [brokers.motilal]\napi_url = {}\nclient_public_ip = {}\n\n\
             [brokers.fivepaisa]\napi_url = {}\nlogin_url = {}\n\n\
             [brokers.shoonya]\nlegacy_url = {}\napi_url = {}\noauth_url = {}\nflow = \"quickauth\"\n\n\
             [brokers.upstox]\napi_url = {}\n",
            toml_str(kite.web_url()),
            toml_str(kite.api_url()),
            toml_str(&iifl.portal_url()),
            toml_str(&iifl.api_url()),
            toml_str(xts.api_url()),
            toml_str(angel.url()),
            toml_str(angel.url()),
            toml_str(&dhan.auth_url()),
            toml_str(&dhan.api_url()),
            toml_str(&fyers.login_url()),
            toml_str(&fyers.api_url()),
            toml_str(&kotak.login_url()),
            toml_str(&kotak.session_base_url()),
            toml_str(motilal.api_url()),
            toml_str(MOTILAL_REGISTERED_IP),
            toml_str(&fivepaisa_urls["api_url"]),
            toml_str(&fivepaisa_urls["login_url"]),
            toml_str(&shoonya.legacy_url()),
            toml_str(&shoonya.api_url()),
            toml_str(&shoonya.oauth_url()),
            toml_str(&upstox.api_url()),
        ),
    )?;
    let credentials = [
        (
            "kite.json",
            json!({
                "broker_user_id": kite_user.user_id,
                "password": kite_user.password,
                "api_key": kite_user.api_key,
                "api_secret": kite_user.api_secret,
                "totp_secret": kite_user.totp_secret,
            }),
        ),
        (
            "iifl.json",
            json!({
                "broker_user_id": iifl_user.client_id,
                "password": iifl_user.password,
                "api_key": iifl_user.app_key,
                "api_secret": iifl_user.app_secret,
                "totp_secret": iifl_user.totp_secret,
            }),
        ),
        (
            "iifl-xts.json",
            json!({
                "broker_user_id": xts_user.user_id,
                "api_key": xts_user.app_key,
                "api_secret": xts_user.secret_key,
            }),
        ),
        (
            "angelone.json",
            json!({
                "broker_user_id": angel_user.client_code,
                "pin": angel_user.mpin,
                "api_key": angel_user.api_key,
                "totp_secret": angel_user.totp_secret,
            }),
        ),
        (
            "dhan.json",
            json!({
                "broker_user_id": dhan_user.client_id,
                "pin": dhan_user.pin,
                "totp_secret": dhan_user.totp_secret,
                "api_key": dhan_user.app_id,
                "api_secret": dhan_user.app_secret,
            }),
        ),
        (
            "fyers.json",
            json!({
                "broker_user_id": fyers_user.fy_id,
                "api_key": fyers_user.app_id,
                "api_secret": fyers_user.app_secret,
                "totp_secret": fyers_user.totp_secret,
                "pin": fyers_user.pin,
                "redirect_uri": fyers_user.redirect_uri,
            }),
        ),
        (
            "kotak-neo.json",
            json!({
                "broker_user_id": kotak_user.ucc,
                "api_key": kotak_user.api_token,
                "totp_secret": kotak_user.totp_secret,
                "mobile": kotak_user.mobile,
                "pin": kotak_user.mpin,
            }),
        ),
        (
            "motilal.json",
            json!({
                "broker_user_id": motilal_user.client_code,
                "password": motilal_user.password,
                "api_key": motilal_user.api_key,
                "api_secret": motilal_user.api_secret,
                "totp_secret": motilal_user.totp_secret,
                "dob_or_pan": motilal_user.dob,
            }),
        ),
        (
            "fivepaisa.json",
            json!({
                "broker_user_id": fivepaisa_user.client_code,
                "pin": fivepaisa_user.pin,
                "api_key": fivepaisa_user.user_key,
                "api_secret": fivepaisa_user.encry_key,
                "api_user_id": fivepaisa_user.api_user_id,
                "totp_secret": fivepaisa_user.totp_secret,
            }),
        ),
        (
            "shoonya.json",
            json!({
                "broker_user_id": shoonya_user.uid,
                "password": shoonya_user.password,
                "api_key": shoonya_user.vendor_code,
                "api_secret": shoonya_user.api_key,
                "secret_code": shoonya_user.secret_code,
                "totp_secret": shoonya_user.totp_secret,
            }),
        ),
        (
            "upstox.json",
            json!({
                "broker_user_id": upstox_user.user_id,
                "api_key": upstox_user.api_key,
                "api_secret": upstox_user.api_secret,
                "redirect_uri": upstox_user.redirect_uri,
            }),
        ),
    ];
    for (name, value) in credentials {
        let text = serde_json::to_string_pretty(&value).expect("JSON") + "\n";
        write(&args.dir, name, &text)?;
    }

    println!("ready");
    shutdown_signal().await;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

//! The host's `totp` and `sleep_ms` callbacks, called exactly as a plugin calls them: through the
//! host table with a call context, JSON in, sink out, under a fixed clock.

use std::collections::BTreeMap;
use std::sync::Arc;

use broker_api::abi::{Bytes, SinkBuf, Status};
use broker_api::wire::{HostError, TotpCode};
use tokenbot::clock::ManualClock;
use tokenbot::config::PluginsConfig;
use tokenbot::plugins::host::{HOST_TABLE, PluginCall};
use tokenbot::plugins::totp::parse_secret;
use tokenbot::plugins::{AccountAccess, CallLimits, PluginEnv, Registry};

const RFC_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

fn context(services: &PluginEnv, account: &str, secret: Option<&str>) -> PluginCall {
    let registry = Registry::load(&PluginsConfig {
        dir: "/nonexistent".into(),
        sha256_allowlist: vec![],
    });
    let kite = registry.get("kite").unwrap();
    services.call_for(AccountAccess {
        plugin: &kite,
        account: account.to_owned(),
        configured_urls: &BTreeMap::new(),
        extra_hosts: &[],
        ipv4_only: false,
        totp_secret: secret.map(|s| parse_secret(s).unwrap()),
        secrets: vec![],
    })
}

fn totp(ctx: &PluginCall) -> Result<TotpCode, (Status, HostError)> {
    let mut out = SinkBuf::with_cap(1 << 16);
    let request = br#"{"v":1}"#;
    // SAFETY: the context is live for the call, the request and sink outlive it: exactly the
    // contract a plugin follows.
    let status = unsafe { (HOST_TABLE.totp)(ctx.as_ptr(), Bytes::new(request), out.sink()) };
    if status.is_ok() {
        Ok(serde_json::from_slice(out.bytes()).unwrap())
    } else {
        Err((status, serde_json::from_slice(out.bytes()).unwrap()))
    }
}

fn services(clock: &Arc<ManualClock>) -> PluginEnv {
    PluginEnv::new(clock.clone(), CallLimits::default())
}

#[tokio::test(flavor = "multi_thread")]
async fn rfc6238_vectors_through_the_callback() {
    // Each vector names an instant; the callback hands out the code of that instant's step when
    // enough of the step remains, so put the clock 1 s into each step.
    for (t, code) in [
        (59i64, "287082"),
        (1111111109, "081804"),
        (1234567890, "005924"),
        (2000000000, "279037"),
    ] {
        let clock = Arc::new(ManualClock::new((t / 30) * 30_000 + 1_000));
        let services = services(&clock);
        let got = totp(&context(&services, "u/kite", Some(RFC_SECRET))).unwrap();
        assert_eq!(got.code.expose(), code, "t={t}");
        assert_eq!(got.step, (t / 30) as u64);
        assert_eq!(got.valid_for_ms, 29_000);
        assert!(clock.sleeps().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_three_seconds_left_the_callback_waits_for_the_next_step() {
    let step = 40_000_000u64;
    let clock = Arc::new(ManualClock::new(step as i64 * 30_000 + 27_000));
    let services = services(&clock);
    let got = totp(&context(&services, "u/kite", Some(RFC_SECRET))).unwrap();
    assert_eq!(clock.sleeps(), vec![3_000]);
    assert_eq!(got.step, step + 1);
    assert_eq!(got.valid_for_ms, 30_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_step_is_never_handed_out_twice_for_one_account() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let services = services(&clock);
    // Two logins of one account (two contexts, as two attempts would have) share the guard.
    let first = totp(&context(&services, "u/kite", Some(RFC_SECRET))).unwrap();
    let second = totp(&context(&services, "u/kite", Some(RFC_SECRET))).unwrap();
    assert_eq!(second.step, first.step + 1);
    assert_ne!(first.code.expose(), second.code.expose());
    // Another account at the same instant is not held back.
    let other = totp(&context(&services, "v/kite", Some(RFC_SECRET))).unwrap();
    assert_eq!(
        other.step,
        first.step + 1,
        "the clock moved on while waiting"
    );
    assert_eq!(clock.sleeps().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_account_without_a_totp_secret_gets_a_typed_error() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let services = services(&clock);
    let (status, error) = totp(&context(&services, "u/kite", None)).unwrap_err();
    assert_eq!(status, Status::ERROR);
    assert_eq!(error.kind, "no_totp_secret");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wait_past_the_login_deadline_is_refused() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000 + 28_000));
    let settings = CallLimits {
        timeout: std::time::Duration::from_secs(1),
        ..CallLimits::default()
    };
    let services = PluginEnv::new(clock.clone(), settings);
    let (status, error) = totp(&context(&services, "u/kite", Some(RFC_SECRET))).unwrap_err();
    assert_eq!(status, Status::TIMEOUT, "{error:?}");
    assert!(clock.sleeps().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn sleep_waits_on_the_hosts_clock_and_refuses_to_pass_the_login_deadline() {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let services = PluginEnv::new(
        clock.clone(),
        CallLimits {
            timeout: std::time::Duration::from_secs(10),
            ..CallLimits::default()
        },
    );
    let ctx = context(&services, "u/kite", None);
    // SAFETY: the context is live for the calls, as during a plugin call.
    let sleep = |ms| unsafe { (HOST_TABLE.sleep_ms)(ctx.as_ptr(), ms) };
    assert_eq!(sleep(4_000), Status::OK);
    assert_eq!(sleep(4_000), Status::OK);
    assert_eq!(clock.sleeps(), vec![4_000, 4_000]);
    // 8 s of the 10 s are gone: a third 4 s wait would end after the deadline.
    assert_eq!(sleep(4_000), Status::TIMEOUT);
    assert_eq!(clock.sleeps(), vec![4_000, 4_000], "nothing was waited");
    assert_eq!(sleep(1_000), Status::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_step_is_recorded_before_its_code_leaves_and_withheld_if_it_cannot_be() {
    let step = 40_000_000u64;
    let clock = Arc::new(ManualClock::new(step as i64 * 30_000 + 1_000));
    let services = services(&clock);
    let mut ctx = context(&services, "u/kite", Some(RFC_SECRET));
    let recorded = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = recorded.clone();
    ctx.step_log = Some(Arc::new(move |s| {
        log.lock().unwrap().push(s);
        Ok(())
    }));
    let got = totp(&ctx).unwrap();
    assert_eq!(*recorded.lock().unwrap(), vec![got.step]);

    // A vault that cannot record it: no code, and the step stays burned in memory.
    ctx.step_log = Some(Arc::new(|_| Err("disk full".into())));
    let (status, error) = totp(&ctx).unwrap_err();
    assert_eq!(status, Status::ERROR);
    assert_eq!(error.kind, "step_not_recorded");
    assert!(error.message.contains("disk full"));
    ctx.step_log = None;
    assert_eq!(
        totp(&ctx).unwrap().step,
        step + 2,
        "the withheld step is not handed out later"
    );
}

use std::collections::BTreeMap;

use secrecy::SecretString;

use super::*;
use crate::clock::ManualClock;
use crate::config::TelegramConfig;

const TOKEN: &str = "123456:AAbb-cc_DD";

fn telegram(
    token: Option<&str>,
    default: Option<ChatId>,
    chats: &[(&str, ChatId)],
) -> NotifyConfig {
    NotifyConfig {
        telegram: TelegramConfig {
            bot_token: token.map(|t| SecretString::from(t.to_owned())),
            default_chat_id: default,
            chats: chats
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<BTreeMap<_, _>>(),
            ..TelegramConfig::default()
        },
        ..NotifyConfig::default()
    }
}

#[test]
fn bad_telegram_settings_are_refused_without_showing_the_token() {
    assert!(check_config(&NotifyConfig::default()).is_ok());
    let ok = telegram(Some(TOKEN), Some(ChatId::Id(-100)), &[]);
    assert!(check_config(&ok).is_ok());
    for bad in ["123456/AAbb", "no-colon", "12:ab/../x", "12:a b"] {
        let err = check_config(&telegram(Some(bad), Some(ChatId::Id(1)), &[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("notify.telegram.bot_token") && !err.contains(bad),
            "{err}"
        );
    }
    let err = check_config(&telegram(Some(TOKEN), None, &[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("default_chat_id"), "{err}");
    let err = check_config(&telegram(None, Some(ChatId::Id(1)), &[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("TOKENBOT_TELEGRAM_BOT_TOKEN"), "{err}");
    let err = check_config(&telegram(
        Some(TOKEN),
        None,
        &[("u1", ChatId::Name("nobody".into()))],
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("chats") && !err.contains(TOKEN), "{err}");
    let zero = NotifyConfig {
        quiet_secs: 0,
        ..NotifyConfig::default()
    };
    assert!(
        check_config(&zero)
            .unwrap_err()
            .to_string()
            .contains("notify.quiet_secs")
    );
}

#[test]
fn an_account_is_routed_to_its_own_chat_then_its_users_then_the_default() {
    let config = telegram(
        Some(TOKEN),
        Some(ChatId::Id(1)),
        &[
            ("u1/kite", ChatId::Id(2)),
            ("u1", ChatId::Name("@ops".into())),
        ],
    );
    let t = Telegram::from_config(&config.telegram).unwrap();
    let key = |u: &str, b: &str| AccountKey::parse(u, b).unwrap();
    assert_eq!(t.chat_for(&key("u1", "kite")), Some(&ChatId::Id(2)));
    assert_eq!(
        t.chat_for(&key("u1", "upstox")),
        Some(&ChatId::Name("@ops".into()))
    );
    assert_eq!(t.chat_for(&key("u2", "kite")), Some(&ChatId::Id(1)));
}

#[test]
fn a_second_request_within_the_quiet_interval_is_not_announced_again() {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let notifier = Notifier::new(&Config::default(), clock.clone(), None);
    let account = NoticeAccount::new(AccountKey::parse("u1", "upstox").unwrap(), "AB1");
    assert!(notifier.approval_requested(account.clone(), None, 1_000_000 + 3_600_000));
    clock.advance(60_000);
    assert!(!notifier.approval_requested(account.clone(), None, 1_000_000 + 3_600_000));
    assert_eq!(notifier.pending_approvals(), 1);
    notifier.approval_resolved(&account.key);
    assert_eq!(notifier.pending_approvals(), 0);
    assert!(
        !notifier.approval_requested(account, None, clock.now_ms()),
        "already expired"
    );
}

#[test]
fn the_bot_token_comes_from_its_env_name_and_the_routes_from_toml() {
    use secrecy::ExposeSecret;
    let toml = "[notify.telegram]\ndefault_chat_id = -100\n\
                chats = { \"u1/kite\" = 5, \"u2\" = \"@ops\" }\n";
    let config = Config::from_toml_str(toml, |name| {
        (name == "TOKENBOT_TELEGRAM_BOT_TOKEN").then(|| TOKEN.to_owned())
    })
    .unwrap();
    check_config(&config.notify).unwrap();
    let t = &config.notify.telegram;
    assert_eq!(t.bot_token.as_ref().unwrap().expose_secret(), TOKEN);
    assert_eq!(t.chats["u1/kite"], ChatId::Id(5));
    assert_eq!(t.chats["u2"], ChatId::Name("@ops".into()));
    assert_eq!(t.default_chat_id, Some(ChatId::Id(-100)));
}

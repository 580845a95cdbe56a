//! The plugin output decoder, `tokenbot::plugins::decode_output`: what `Plugin::call` does with the
//! status a plugin function returned and the bytes it wrote into the sink, both untrusted.
//!
//! Input: byte 0 picks the status (`Status(b % 16)`: `'0'` OK, `'1'` ERROR, ..., `'7'` TIMEOUT,
//! `'8'`.. unknown codes), byte 1 the output type (`b % 3`: `'0'` login, `'1'` verify, `'2'`
//! assisted URL), the rest is the sink's bytes. Invariants, beyond "never panics":
//! - a status other than OK and ERROR decides the result alone, whatever the bytes;
//! - ERROR never yields an output: the plugin's error, or `BadOutput`;
//! - an accepted output (or error) written back as JSON is accepted again, unchanged;
//! - a decoding error never repeats the access token: the host records call errors in the attempt
//!   log and returns them over the API. (The token is planted in the input's `access_token`.)
#![no_main]

use broker_api::abi::Status;
use broker_api::wire::{AssistedUrlOutput, LoginOutput, VerifyOutput};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokenbot::plugins::{PluginError, decode_output};

/// The access token planted by the no-leak check.
const TOKEN: &str = "tok3n-Pl4nted-By-The-Fuzzer";

fuzz_target!(|data: &[u8]| {
    let [status, kind, bytes @ ..] = data else {
        return;
    };
    let status = Status(i32::from(status % 16));
    match kind % 3 {
        0 => {
            check::<LoginOutput>(status, bytes, "login");
            if status == Status::OK {
                token_never_echoed(bytes);
            }
        }
        1 => check::<VerifyOutput>(status, bytes, "verify"),
        _ => check::<AssistedUrlOutput>(status, bytes, "assisted login"),
    }
});

fn check<Out: DeserializeOwned + Serialize>(status: Status, bytes: &[u8], what: &'static str) {
    let result = decode_output::<Out>(status, bytes, what);
    match status {
        Status::OK => match result {
            Ok(out) => {
                let json = serde_json::to_vec(&out).unwrap();
                let again = decode_output::<Out>(Status::OK, &json, what)
                    .unwrap_or_else(|e| panic!("re-encoded output refused: {e}"));
                same_json(&json, &again);
            }
            Err(PluginError::BadOutput(_)) => {}
            Err(e) => panic!("OK status decoded to {e:?}"),
        },
        Status::ERROR => match result {
            Ok(_) => panic!("ERROR status decoded to an output"),
            Err(PluginError::Failed(error)) => {
                let json = serde_json::to_vec(&error).unwrap();
                match decode_output::<Out>(Status::ERROR, &json, what) {
                    Err(PluginError::Failed(again)) => same_json(&json, &again),
                    Err(e) => panic!("re-encoded error decoded to {e:?}"),
                    Ok(_) => panic!("re-encoded error decoded to an output"),
                }
            }
            Err(PluginError::BadOutput(_)) => {}
            Err(e) => panic!("ERROR status decoded to {e:?}"),
        },
        Status::PANIC => assert!(matches!(result, Err(PluginError::Panicked))),
        Status::UNSUPPORTED => {
            assert!(matches!(result, Err(PluginError::Unsupported(w)) if w == what))
        }
        Status::TOO_LARGE => assert!(matches!(result, Err(PluginError::OutputTooLarge))),
        other => assert!(matches!(result, Err(PluginError::Status(s)) if s == other.0)),
    }
}

/// `value`, decoded from `json` (an accepted output written back), writes back as `json` again.
fn same_json<T: Serialize>(json: &[u8], value: &T) {
    let again = serde_json::to_vec(value).unwrap();
    assert_eq!(
        String::from_utf8_lossy(json),
        String::from_utf8_lossy(&again),
        "an accepted output changed when decoded again"
    );
}

/// Plant [`TOKEN`] as the access token of a JSON object input: whatever else is wrong with the
/// output, the error does not contain it; when accepted, the token is exactly it.
fn token_never_echoed(bytes: &[u8]) {
    let Ok(serde_json::Value::Object(mut object)) = serde_json::from_slice(bytes) else {
        return;
    };
    if serde_json::to_string(&object).unwrap().contains(TOKEN) {
        return;
    }
    object.insert("access_token".into(), TOKEN.into());
    let planted = serde_json::to_vec(&object).unwrap();
    match decode_output::<LoginOutput>(Status::OK, &planted, "login") {
        Ok(out) => assert_eq!(out.access_token.expose(), TOKEN),
        Err(e) => {
            let message = e.to_string();
            assert!(
                !message.contains(TOKEN),
                "the error repeats the token: {message}"
            );
        }
    }
}

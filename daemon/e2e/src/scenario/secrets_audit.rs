//! The secrets audit (`audit`): every secret of the run and every access token the driver saw,
//! searched for in the logs, the vault files, the mirror's dump, `/metrics`, `/health/detailed`
//! after a refused row, and every response received.

use std::path::Path;

use crate::audit::{self, Needles, Place, PlaceHits, Source};
use crate::http::Reply;
use crate::load::Bodies;
use crate::scenario::final_state::FinalState;
use crate::scenario::schemathesis::{SCHEMATHESIS_VAULT, SchemathesisRun};
use crate::setup::Run;
use crate::summary::{Row, row};
use crate::world::Account;

/// The mirror-refusal scenario's outcome: `/health/detailed` and the error it showed.
pub type Refusal = anyhow::Result<(Reply, String)>;

/// Search every place and sum up the hits in one row.
pub fn audit(
    run: &Run,
    st: &SchemathesisRun,
    bodies: &Bodies,
    state: &FinalState,
    refusal: &Refusal,
) -> Row {
    run.capture.flush();
    let needles = needles(run, st);
    let (responses, allowed) = responses(run, st, bodies);
    let places = places(run, state, refusal, responses);
    let hits = audit::search(&needles, &places);
    let clean = hits
        .iter()
        .all(|h| h.secret_hits == 0 && h.token_hits.unwrap_or(0) == 0 && h.files > 0);
    let per_place: Vec<String> = hits.iter().map(place_figures).collect();
    let refusal_shown = match refusal {
        Ok((_, error)) => format!("the refused row shown as: {error}"),
        Err(e) => format!("the refused row: FAILED: {e:#}"),
    };
    row(
        "secrets audit",
        clean && state.dump_ok && refusal.is_ok(),
        format!(
            "{} secrets and {} access tokens searched; {}; allowed: {allowed} Kite api_keys as \
             `api_key=` of the Kite login URL that GET /api/login/kite/{{userId}}/url answers; \
             {refusal_shown}{}",
            needles.secrets.len(),
            needles.tokens.len(),
            per_place.join("; "),
            if state.dump_ok {
                ""
            } else {
                "; pg_dump FAILED"
            }
        ),
    )
}

/// The run's secrets, the minted JWT, every account's credentials and every token seen.
fn needles(run: &Run, st: &SchemathesisRun) -> Needles {
    let secrets = &run.secrets;
    let mut needles = Needles {
        secrets: vec![
            ("the service API key".into(), secrets.api_key.clone()),
            ("JWT_SECRET".into(), secrets.jwt_secret.clone()),
            ("ENCRYPTION_KEY".into(), secrets.encryption_key.clone()),
            (
                "the PostgreSQL password".into(),
                secrets.pg_password.clone(),
            ),
            ("the minted JWT".into(), st.jwt.clone()),
        ],
        tokens: run
            .ctx
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect(),
    };
    for a in run.ctx.accounts.iter().chain(&st.accounts) {
        needles.secrets.extend(a.secrets());
    }
    needles
}

/// Every response received: the driver's capture, the load phase's distinct bodies and
/// schemathesis's; with the number of Kite login URLs allowed their `api_key`.
fn responses(run: &Run, st: &SchemathesisRun, bodies: &Bodies) -> (Vec<Source>, u64) {
    let mut responses = vec![Source::File(run.capture.path().to_owned())];
    for (i, b) in bodies.all().into_iter().enumerate() {
        responses.push(Source::Bytes(format!("load body {i}"), b.to_vec()));
    }
    let mut allowed = 0;
    if let Some(har) = &st.har {
        for (i, r) in crate::schemathesis::har_responses(har)
            .into_iter()
            .enumerate()
        {
            let (text, n) = allow_kite_login_url(&r, &st.accounts);
            allowed += n;
            responses.push(Source::Bytes(
                format!("schemathesis response {i} ({} {})", r.method, r.url),
                text,
            ));
        }
    }
    (responses, allowed)
}

/// The places searched, and whether access tokens may appear in each.
fn places(run: &Run, state: &FinalState, refusal: &Refusal, responses: Vec<Source>) -> Vec<Place> {
    let env = &run.ctx.env;
    let files = |dir: &Path| {
        audit::files_under(dir)
            .into_iter()
            .map(Source::File)
            .collect()
    };
    vec![
        Place {
            name: "log files".into(),
            sources: files(&env.log_dir()),
            tokens_forbidden: true,
        },
        Place {
            name: "stderr+CLI".into(),
            sources: files(&env.stderr_dir()),
            tokens_forbidden: true,
        },
        Place {
            name: "vault file".into(),
            sources: vault_files(&env.vault_path())
                .into_iter()
                .chain(vault_files(&run.work.join(SCHEMATHESIS_VAULT)))
                .collect(),
            tokens_forbidden: true,
        },
        Place {
            name: "pg_dump".into(),
            sources: vec![Source::File(state.dump_path.clone())],
            tokens_forbidden: false,
        },
        Place {
            name: "/metrics".into(),
            sources: vec![Source::Bytes("/metrics".into(), state.metrics.body.clone())],
            tokens_forbidden: true,
        },
        Place {
            name: "/health/detailed after a refused row".into(),
            sources: match refusal {
                Ok((detailed, _)) => vec![Source::Bytes(
                    "/health/detailed".into(),
                    detailed.body.clone(),
                )],
                Err(_) => vec![],
            },
            tokens_forbidden: true,
        },
        Place {
            name: "API responses".into(),
            sources: responses,
            tokens_forbidden: false,
        },
    ]
}

/// One place's hits as the summary shows them (labels, never values).
fn place_figures(h: &PlaceHits) -> String {
    let tokens = match h.token_hits {
        Some(n) => format!(", tokens {n}"),
        None => String::new(),
    };
    let examples = if h.examples.is_empty() {
        String::new()
    } else {
        format!(" [{}]", h.examples.join("; "))
    };
    format!(
        "{} ({} files, {:.1} MiB): secrets {}{tokens}{examples}",
        h.name,
        h.files,
        h.bytes as f64 / 1048576.0,
        h.secret_hits
    )
}

/// The one place a provisioned credential may appear in an answer: Kite's login URL carries the
/// app's `api_key` as a query parameter (Kite's protocol: the browser takes it to Kite), and
/// `GET /api/login/kite/{userId}/url` answers that URL. In such an answer (200, for that user's
/// own key) `api_key=<key>` is replaced before the search and counted; the key anywhere else,
/// and every other secret, still counts as a hit.
fn allow_kite_login_url(
    r: &crate::schemathesis::HarResponse,
    accounts: &[Account],
) -> (Vec<u8>, u64) {
    let path = r
        .url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map_or("", |(_, p)| p);
    let path = path.split('?').next().unwrap_or(path);
    let user = path
        .strip_prefix("api/login/kite/")
        .and_then(|p| p.strip_suffix("/url"));
    let account = user.and_then(|u| accounts.iter().find(|a| a.user == u));
    let (Some(account), "GET", 200) = (account, r.method.as_str(), r.status) else {
        return (r.text.clone(), 0);
    };
    let text = String::from_utf8_lossy(&r.text);
    let needle = format!("api_key={}", account.api_key);
    let n = text.matches(&needle).count() as u64;
    (text.replace(&needle, "api_key=[allowed]").into_bytes(), n)
}

/// The vault file (and, for a sled vault, its directory's files).
fn vault_files(path: &Path) -> Vec<Source> {
    if path.is_dir() {
        audit::files_under(path)
            .into_iter()
            .map(Source::File)
            .collect()
    } else {
        vec![Source::File(path.to_owned())]
    }
}

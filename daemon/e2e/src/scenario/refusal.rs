//! A row the mirror's table refuses, and `/health/detailed` read until it reports that.

use std::time::{Duration, Instant};

use anyhow::bail;

use crate::Ctx;
use crate::http::{self, Api, Auth};

/// A row PostgreSQL refuses, for the secrets audit: a check on the mirror's table that no token
/// passes, one account logged in again, and `/health/detailed` read until the mirror reports the
/// refusal; the answer and the error it shows. PostgreSQL's DETAIL for it quotes the row, token
/// included ("Failing row contains (..., <token>, ...)"): the audit searches that answer as a
/// place where no token may be. The check is then dropped, and the mirror must catch up.
pub async fn mirror_refusal(ctx: &Ctx, api: &Api) -> anyhow::Result<(http::Reply, String)> {
    const CHECK: &str = "e2e_no_new_tokens";
    let table = format!("{}.tokenbot_tokens", ctx.mirror.schema);
    ctx.mirror
        .execute(&format!(
            "ALTER TABLE {table} ADD CONSTRAINT {CHECK} CHECK (access_token IS NULL) NOT VALID"
        ))
        .await?;
    let shown = async {
        let user = &ctx.accounts[0].user;
        // Waits for the account's next TOTP step: up to 30 s.
        let r = api
            .post(
                &format!("/api/integration/tokens/refresh/{user}"),
                Auth::Key,
            )
            .await?;
        if r.status != 200 || r.json()["successful"] != 1 {
            bail!("refreshing {user}: {} {}", r.status, r.text());
        }
        let t = api.get(&format!("/api/tokens/{user}"), Auth::Key).await?;
        match t.json()["access_token"].as_str() {
            Some(token) => ctx.note_token(token),
            None => bail!(
                "no token for {user} after its refresh: {} {}",
                t.status,
                t.text()
            ),
        }
        let started = Instant::now();
        loop {
            let detailed = api.get("/health/detailed", Auth::Key).await?;
            let error = detailed.json()["mirror"]["last_error"]
                .as_str()
                .filter(|e| e.contains(CHECK))
                .map(str::to_owned);
            if let Some(error) = error {
                return Ok((detailed, error));
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!(
                    "/health/detailed did not report the refused row within 30 s: {}",
                    detailed.text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    .await;
    ctx.mirror
        .execute(&format!(
            "ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {CHECK}"
        ))
        .await?;
    let shown = shown?;
    // Without the check the mirror delivers the record at its next attempt.
    let started = Instant::now();
    loop {
        let detailed = api.get("/health/detailed", Auth::Key).await?.json();
        if detailed["mirror"]["backlog"] == 0 && detailed["mirror"]["last_error"].is_null() {
            return Ok(shown);
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the mirror did not catch up within 30 s of the check's removal: {detailed}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

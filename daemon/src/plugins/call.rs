//! Calling a plugin: its functions, run on a blocking thread with the call's [`PluginCall`], and
//! what they return decoded into results.

use std::sync::Arc;

use broker_api::abi::{Bytes, PluginFn, PluginTable, SinkBuf, Status};
use broker_api::wire::{self, ErrorOutput};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::host::{HOST_TABLE, PluginCall};
use super::{OUTPUT_CAP, Plugin, PluginError};

impl Plugin {
    /// Call `login` on the current (blocking) thread.
    pub fn login_blocking(
        &self,
        ctx: &PluginCall,
        req: &wire::LoginRequest,
    ) -> Result<wire::LoginOutput, PluginError> {
        self.call(self.table.login, "login", ctx, req)
    }

    /// Call `verify` on the current (blocking) thread.
    pub fn verify_blocking(
        &self,
        ctx: &PluginCall,
        req: &wire::VerifyRequest,
    ) -> Result<wire::VerifyOutput, PluginError> {
        let f = self.optional(std::mem::offset_of!(PluginTable, verify), self.table.verify);
        self.call(f, "verify", ctx, req)
    }

    /// Call `assisted_url` on the current (blocking) thread.
    pub fn assisted_url_blocking(
        &self,
        ctx: &PluginCall,
        req: &wire::AssistedUrlRequest,
    ) -> Result<wire::AssistedUrlOutput, PluginError> {
        let f = self.optional(
            std::mem::offset_of!(PluginTable, assisted_url),
            self.table.assisted_url,
        );
        self.call(f, "assisted login", ctx, req)
    }

    /// Call `assisted_finish` on the current (blocking) thread.
    pub fn assisted_finish_blocking(
        &self,
        ctx: &PluginCall,
        req: &wire::AssistedFinishRequest,
    ) -> Result<wire::LoginOutput, PluginError> {
        let f = self.optional(
            std::mem::offset_of!(PluginTable, assisted_finish),
            self.table.assisted_finish,
        );
        self.call(f, "assisted login", ctx, req)
    }

    fn call<Req: Serialize, Out: DeserializeOwned>(
        &self,
        f: Option<PluginFn>,
        what: &'static str,
        ctx: &PluginCall,
        req: &Req,
    ) -> Result<Out, PluginError> {
        let f = f.ok_or(PluginError::Unsupported(what))?;
        let input = serde_json::to_vec(req).map_err(|e| PluginError::BadOutput(e.to_string()))?;
        let input = zeroize::Zeroizing::new(input);
        let mut out = SinkBuf::with_cap(OUTPUT_CAP);
        // SAFETY: `f` comes from a validated table of a never-unloaded plugin; the host table is
        // static; `ctx`, `input` and `out` outlive the call.
        let status = unsafe { f(&HOST_TABLE, ctx.as_ptr(), Bytes::new(&input), out.sink()) };
        if out.overflowed() {
            return Err(PluginError::OutputTooLarge);
        }
        // A strategy's error text reaches logs, the attempt log and API answers: it gets the
        // redaction its log lines get.
        decode_output(status, out.bytes(), what).map_err(|e| match e {
            PluginError::Failed(mut failure) => {
                failure.message = ctx.redactor.redact(&failure.message);
                PluginError::Failed(failure)
            }
            other => other,
        })
    }
}

/// Turn what a plugin function returned (its status and the bytes it wrote into the sink) into the
/// call's result: `Out` for [`Status::OK`], the plugin's [`ErrorOutput`] for [`Status::ERROR`],
/// and a [`PluginError`] for anything else. `what` names the function for
/// [`PluginError::Unsupported`]. Plugin output is untrusted: this never panics (`daemon/fuzz`).
pub fn decode_output<Out: DeserializeOwned>(
    status: Status,
    bytes: &[u8],
    what: &'static str,
) -> Result<Out, PluginError> {
    match status {
        Status::OK => {
            serde_json::from_slice(bytes).map_err(|e| PluginError::BadOutput(e.to_string()))
        }
        Status::ERROR => match serde_json::from_slice::<ErrorOutput>(bytes) {
            Ok(error) => Err(PluginError::Failed(error)),
            Err(e) => Err(PluginError::BadOutput(e.to_string())),
        },
        Status::PANIC => Err(PluginError::Panicked),
        Status::UNSUPPORTED => Err(PluginError::Unsupported(what)),
        Status::TOO_LARGE => Err(PluginError::OutputTooLarge),
        other => Err(PluginError::Status(other.0)),
    }
}

/// Run a blocking plugin call on tokio's blocking pool.
pub async fn run_blocking<T: Send + 'static>(
    plugin: Arc<Plugin>,
    ctx: PluginCall,
    f: impl FnOnce(&Plugin, &PluginCall) -> Result<T, PluginError> + Send + 'static,
) -> Result<T, PluginError> {
    tokio::task::spawn_blocking(move || f(&plugin, &ctx))
        .await
        .map_err(|_| PluginError::Aborted)?
}

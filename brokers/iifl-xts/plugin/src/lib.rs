//! The IIFL XTS strategy ([`broker_iifl_xts`]) as a drop-in plugin, `libtokenbot_plugin_iifl_xts.so`.
//!
//! The entry symbol lives here, in a `cdylib` of its own, rather than in the strategy crate: the
//! daemon links every bundled strategy into one binary, where each would define the same symbol.

broker_api::export_plugin!(broker_iifl_xts::entry);

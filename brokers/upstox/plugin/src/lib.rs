//! The Upstox strategy ([`broker_upstox`]) as a drop-in plugin, `libtokenbot_plugin_upstox.so`.

broker_api::export_plugin!(broker_upstox::entry);

//! The Fyers API v3 strategy ([`broker_fyers`]) as a drop-in plugin, `libtokenbot_plugin_fyers.so`.

broker_api::export_plugin!(broker_fyers::entry);

//! The Dhan (DhanHQ v2) strategy ([`broker_dhan`]) as a drop-in plugin, `libtokenbot_plugin_dhan.so`.

broker_api::export_plugin!(broker_dhan::entry);

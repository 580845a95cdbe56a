//! The 5paisa Xstream OpenAPI strategy ([`broker_fivepaisa`]) as a drop-in plugin, `libtokenbot_plugin_fivepaisa.so`.

broker_api::export_plugin!(broker_fivepaisa::entry);

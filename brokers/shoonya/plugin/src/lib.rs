//! The Shoonya (Finvasia, Noren OMS) strategy ([`broker_shoonya`]) as a drop-in plugin,
//! `libtokenbot_plugin_shoonya.so`.

broker_api::export_plugin!(broker_shoonya::entry);

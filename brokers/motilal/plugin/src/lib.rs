//! The Motilal Oswal OpenAPI strategy ([`broker_motilal`]) as a drop-in plugin, `libtokenbot_plugin_motilal.so`.

broker_api::export_plugin!(broker_motilal::entry);

//! The Kotak Neo Trade API strategy ([`broker_kotak_neo`]) as a drop-in plugin, `libtokenbot_plugin_kotak_neo.so`.

broker_api::export_plugin!(broker_kotak_neo::entry);

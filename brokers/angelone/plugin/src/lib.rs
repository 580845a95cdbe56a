//! The Angel One SmartAPI strategy ([`broker_angelone`]) as a drop-in plugin, `libtokenbot_plugin_angelone.so`.

broker_api::export_plugin!(broker_angelone::entry);

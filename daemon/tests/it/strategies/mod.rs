//! The built-in strategies over loopback HTTP against the fake brokers, through the real plugin ABI.

mod angelone;
mod common;
mod dhan;
mod fivepaisa;
mod fyers;
mod iifl;
mod kite;
mod kotak_neo;
mod motilal;
mod shoonya;
pub(crate) mod upstox;
mod xts;

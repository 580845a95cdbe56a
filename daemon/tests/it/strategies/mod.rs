//! The built-in strategies over loopback HTTP against the fake brokers, through the real plugin ABI.

mod common;
mod fivepaisa;
mod iifl;
mod kite;
mod motilal;
mod xts;

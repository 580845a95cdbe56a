//! Refreshing tokens: the refresher in process, and `tokenbot refresh` through the real binary.

mod cli;
mod interval;
mod notify;
mod refresher;
mod rolling;
mod world;

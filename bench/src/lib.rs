//! The part of `flowscope-bench` the root crate's end-to-end tests share with it (as a
//! dev-dependency): starting a real `flowscope serve` and waiting until it is ready.

pub mod launch;

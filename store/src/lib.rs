//! `store`: the signed segment format and the durable on-disk segment store of `edged`.
#![forbid(unsafe_code)]

pub mod fs;
pub mod limits;

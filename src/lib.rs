//! siprec-gateway: a SIPREC recording server (RFC 7866 SRS) that records each call into one
//! time-aligned multi-channel WAV and delivers it to Tethr's Archived Call Upload API (or to a
//! local directory).
//!
//! Layers (see docs/architecture.md): the protocol cores (`sip`, `siprec`, `session`, `media`
//! timeline/codec/wav, `mapping`, `delivery::policy`) are sans-IO and take time as a value; the
//! `runtime` module moves bytes and timers and drives them; `config` and `cli` sit on top.
#![forbid(unsafe_code)]

pub mod bench;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod limits;
pub mod mapping;
pub mod media;
pub mod replay;
pub mod runtime;
pub mod session;
pub mod sip;
pub mod siprec;

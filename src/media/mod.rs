//! The media path's cores: G.711 decoding (`g711`), RTP source latching (`latch`), placement of RTP on the call's timeline
//! (`timeline`) and the WAV writer (`wav`). All sans-IO; the runtime's media thread owns the
//! sockets and files and drives them.

pub mod g711;
pub mod latch;
pub mod ports;
pub mod timeline;
pub mod wav;

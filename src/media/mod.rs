//! The media path's cores: SRTP decryption (`srtp`), payload decoding (`codec`, `g711`),
//! resampling to the call's rate (`resample`), rendering the delivered file from the capture
//! (`render`, `encode`), RTP source latching (`latch`), placement of RTP on
//! the call's timeline (`timeline`), the WAV writer (`wav`). All sans-IO; the runtime's media
//! thread owns the sockets and files and drives them.

pub mod codec;
pub mod encode;
pub mod g711;
pub mod latch;
pub mod ports;
pub mod render;
pub mod resample;
pub mod srtp;
pub mod timeline;
pub mod wav;

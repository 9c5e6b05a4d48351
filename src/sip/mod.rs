//! SIP for a recording server: message model (`message`) and the sans-IO user-agent-server core
//! (`endpoint`: RFC 3261 server transactions, dialogs, the 2xx retransmission of §13.3.1.4, and
//! the client transactions of the BYE and refresh UPDATE the gateway sends itself) and RFC 4028
//! session timers (`timer`).
//!
//! Nothing here opens a socket or reads the clock: bytes and `now` go in, bytes to send, events
//! and the next deadline come out. The runtime drives it.

pub mod endpoint;
pub mod message;
pub mod timer;

pub use endpoint::{DialogId, Endpoint, EndpointConfig, Event, Peer, Transmit, Transport, TxKey};
pub use message::Message;

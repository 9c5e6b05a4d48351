//! How the media thread reads its UDP sockets: the wake-up cadence and batched draining.
//!
//! At 50 packets per second per stream, waking on every readiness means one wake-up, one epoll
//! round and two receive calls (the packet, then `EAGAIN`) per packet. Instead a receive loop
//! wakes at most once per [`CADENCE`]: by then each busy socket holds a packet or more, one
//! epoll round reports them all, and one `recvmmsg` per socket takes everything queued (a batch
//! shorter than [`BATCH`] means the queue is empty, so no second call is needed).
//!
//! Shared by the media thread and by the benchmark's bare receiver (`bench`), so the bare
//! receiver measures exactly the receive strategy the gateway uses, minus the media work.
//! It does not know what a packet means.

use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};

/// Smallest interval between two wake-ups of a receive loop. It delays a packet by at most
/// this much, which the reorder window (60 ms by default) absorbs.
pub const CADENCE: Duration = Duration::from_millis(5);
/// Datagrams per `recvmmsg`.
pub const BATCH: usize = 16;
/// Room per datagram: G.711 packets of up to 240 ms. Longer datagrams are cut and skipped.
const SLOT: usize = 2048;

/// Sleeps until `CADENCE` has passed since `last_wake`, so that the next wake-up finds many
/// sockets ready at once.
pub fn pace(last_wake: Instant) {
    let next = last_wake + CADENCE;
    let now = crate::clock::now();
    if next > now {
        std::thread::sleep(next - now);
    }
}

/// Reads datagrams in batches into one reused buffer (nothing is allocated per call).
pub struct Drain {
    buf: Box<[u8]>,
    headers: MultiHeaders<SockaddrStorage>,
    /// Length of each datagram of the last batch; `None` for one that was cut.
    lens: [Option<usize>; BATCH],
    /// Source of each datagram of the last batch (for RTP latching).
    sources: [Option<SocketAddr>; BATCH],
}

impl Default for Drain {
    fn default() -> Self {
        Drain { buf: vec![0; BATCH * SLOT].into_boxed_slice(), headers: MultiHeaders::preallocate(BATCH, None), lens: [None; BATCH], sources: [None; BATCH] }
    }
}

impl Drain {
    /// Reads every datagram queued on `socket`, handing each to `on_packet`; returns how many.
    pub fn drain(&mut self, socket: &UdpSocket, mut on_packet: impl FnMut(&[u8])) -> usize {
        self.drain_from(socket, |datagram, _| on_packet(datagram))
    }

    /// As [`Drain::drain`], with each datagram's source address.
    pub fn drain_from(&mut self, socket: &UdpSocket, mut on_packet: impl FnMut(&[u8], Option<SocketAddr>)) -> usize {
        let fd = socket.as_raw_fd();
        let mut total = 0;
        loop {
            let got = {
                let mut slots = self.buf.chunks_exact_mut(SLOT);
                let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| [IoSliceMut::new(slots.next().unwrap_or(&mut []))]);
                match recvmmsg(fd, &mut self.headers, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None) {
                    Ok(msgs) => {
                        let mut n = 0;
                        for ((len, src), m) in self.lens.iter_mut().zip(self.sources.iter_mut()).zip(msgs) {
                            *len = (!m.flags.contains(MsgFlags::MSG_TRUNC)).then_some(m.bytes);
                            *src = m.address.as_ref().and_then(socket_addr);
                            n += 1;
                        }
                        n
                    }
                    Err(Errno::EINTR) => continue,
                    Err(Errno::EAGAIN) => 0,
                    Err(e) => {
                        tracing::debug!(error = %e, "rtp recv error");
                        0
                    }
                }
            };
            for (i, (len, src)) in self.lens[..got].iter().zip(&self.sources[..got]).enumerate() {
                if let Some(len) = len {
                    on_packet(&self.buf[i * SLOT..i * SLOT + len], *src);
                }
            }
            total += got;
            if got < BATCH {
                return total;
            }
        }
    }
}

/// The `SocketAddr` of a received datagram's source (IPv4 or IPv6).
fn socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    match (a.as_sockaddr_in(), a.as_sockaddr_in6()) {
        (Some(v4), _) => Some(SocketAddr::V4((*v4).into())),
        (_, Some(v6)) => Some(SocketAddr::V6((*v6).into())),
        _ => None,
    }
}

//! Reads a capture file into the transport payloads the replay needs.
//!
//! Handles pcap and pcapng; Ethernet, Linux cooked (SLL and SLL2) and raw-IP link types; IPv4 and
//! IPv6 fragments (reassembled with etherparse's defragmenter); UDP datagrams as they are and TCP
//! streams reassembled per flow (sequence-ordered, retransmissions dropped) and cut into SIP
//! messages by Content-Length with the gateway's own stream framing (`sip::message::frame`). It
//! does no network I/O and does not interpret SIP or RTP beyond framing; what the payloads mean
//! is `plan`'s job.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use etherparse::defrag::IpDefragPool;
use etherparse::{EtherType, IpNumber, NetSlice, SlicedPacket, TcpSlice, TransportSlice, UdpSlice};
use pcap_file::DataLink;
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::PcapNgReader;
use pcap_file::pcapng::blocks::Block;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;

use crate::sip::message::{self, Framed};

/// Why a capture file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    /// Neither a pcap nor a pcapng file, or a damaged header.
    #[error("not a readable pcap/pcapng file: {0}")]
    Format(#[from] pcap_file::PcapError),
    /// A link type the replay cannot decode.
    #[error("unsupported link type {0:?} (Ethernet, Linux SLL/SLL2 and raw IP are supported)")]
    LinkType(DataLink),
}

/// The transport a payload travelled on in the capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    Udp,
    Tcp,
}

/// One UDP datagram, or one SIP message cut out of a TCP stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// Capture timestamp (for TCP: of the segment that completed the message).
    pub ts: Duration,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub carrier: Carrier,
    pub data: Vec<u8>,
}

/// pcapng Section Header Block magic (the pcap magics differ).
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// Decodes every UDP datagram and TCP-carried SIP message in a capture, in capture order.
pub fn read_capture(bytes: &[u8]) -> Result<Vec<Payload>, CaptureError> {
    let mut decoder = Decoder::default();
    if bytes.starts_with(&PCAPNG_MAGIC) {
        let mut reader = PcapNgReader::new(bytes)?;
        // Per interface: link type and timestamp units per second (if_tsresol, default 10^6).
        let mut interfaces: Vec<(DataLink, u64)> = Vec::new();
        while let Some(block) = reader.next_block() {
            match block? {
                Block::InterfaceDescription(idb) => {
                    let resol = idb.options.iter().find_map(|o| match o {
                        InterfaceDescriptionOption::IfTsResol(r) => Some(*r),
                        _ => None,
                    });
                    interfaces.push((idb.linktype, units_per_second(resol.unwrap_or(6))));
                }
                Block::EnhancedPacket(epb) => {
                    let Some(&(link, units)) = interfaces.get(epb.interface_id as usize) else {
                        tracing::warn!(
                            interface = epb.interface_id,
                            "packet for an undeclared interface skipped"
                        );
                        continue;
                    };
                    // pcap-file 2.0 hands back the raw 64-bit timestamp as if it were nanoseconds.
                    let raw = u64::try_from(epb.timestamp.as_nanos()).unwrap_or(u64::MAX);
                    let ts = Duration::from_secs(raw / units)
                        + Duration::from_nanos(
                            ((raw % units) as u128 * 1_000_000_000 / units as u128) as u64,
                        );
                    decoder.packet(link, ts, &epb.data)?;
                }
                _ => {}
            }
        }
    } else {
        let mut reader = PcapReader::new(bytes)?;
        let link = reader.header().datalink;
        while let Some(packet) = reader.next_packet() {
            let packet = packet?;
            decoder.packet(link, packet.timestamp, &packet.data)?;
        }
    }
    Ok(decoder.out)
}

/// pcapng if_tsresol: high bit clear = 10^-n s, set = 2^-n s (RFC-draft pcapng §4.2).
fn units_per_second(resol: u8) -> u64 {
    let n = u32::from(resol & 0x7f);
    if resol & 0x80 == 0 {
        10u64.saturating_pow(n)
    } else {
        1u64.checked_shl(n).unwrap_or(u64::MAX)
    }
    .max(1)
}

#[derive(Default)]
struct Decoder {
    defrag: IpDefragPool,
    tcp: HashMap<(SocketAddr, SocketAddr), TcpFlow>,
    out: Vec<Payload>,
}

impl Decoder {
    fn packet(&mut self, link: DataLink, ts: Duration, data: &[u8]) -> Result<(), CaptureError> {
        let sliced = match link {
            DataLink::ETHERNET => SlicedPacket::from_ethernet(data),
            DataLink::LINUX_SLL => SlicedPacket::from_linux_sll(data),
            // SLL2 (tcpdump -i any on newer libpcap): 20-byte header starting with the protocol.
            DataLink::LINUX_SLL2 => match data {
                [p0, p1, rest @ ..] if data.len() >= 20 => SlicedPacket::from_ether_type(
                    EtherType(u16::from_be_bytes([*p0, *p1])),
                    &rest[18..],
                ),
                _ => return Ok(()),
            },
            DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => SlicedPacket::from_ip(data),
            other => return Err(CaptureError::LinkType(other)),
        };
        let Ok(sliced) = sliced else {
            tracing::debug!("undecodable frame skipped");
            return Ok(());
        };
        let (src_ip, dst_ip): (IpAddr, IpAddr) = match &sliced.net {
            Some(NetSlice::Ipv4(v4)) => (
                v4.header().source_addr().into(),
                v4.header().destination_addr().into(),
            ),
            Some(NetSlice::Ipv6(v6)) => (
                v6.header().source_addr().into(),
                v6.header().destination_addr().into(),
            ),
            _ => return Ok(()),
        };
        match &sliced.transport {
            Some(TransportSlice::Udp(udp)) => self.udp(ts, src_ip, dst_ip, udp),
            Some(TransportSlice::Tcp(tcp)) => self.tcp(ts, src_ip, dst_ip, tcp),
            Some(_) => {}
            // A fragment: the last one to arrive completes the datagram (RFC 791 §3.2).
            None => match self.defrag.process_sliced_packet(&sliced, (), ()) {
                Ok(Some(whole)) => {
                    if whole.ip_number == IpNumber::UDP {
                        if let Ok(udp) = UdpSlice::from_slice(&whole.payload) {
                            self.udp(ts, src_ip, dst_ip, &udp);
                        }
                    } else if whole.ip_number == IpNumber::TCP
                        && let Ok(tcp) = TcpSlice::from_slice(&whole.payload)
                    {
                        self.tcp(ts, src_ip, dst_ip, &tcp);
                    }
                    self.defrag.return_buf(whole);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "IP fragment could not be reassembled"),
            },
        }
        Ok(())
    }

    fn udp(&mut self, ts: Duration, src: IpAddr, dst: IpAddr, udp: &UdpSlice) {
        self.out.push(Payload {
            ts,
            src: SocketAddr::new(src, udp.source_port()),
            dst: SocketAddr::new(dst, udp.destination_port()),
            carrier: Carrier::Udp,
            data: udp.payload().to_vec(),
        });
    }

    fn tcp(&mut self, ts: Duration, src: IpAddr, dst: IpAddr, tcp: &TcpSlice) {
        let key = (
            SocketAddr::new(src, tcp.source_port()),
            SocketAddr::new(dst, tcp.destination_port()),
        );
        if tcp.syn() {
            // A SYN starts the flow afresh: its sequence number is the ISN, data begins at ISN+1.
            self.tcp
                .insert(key, TcpFlow::new(tcp.sequence_number().wrapping_add(1)));
            return;
        }
        if tcp.payload().is_empty() {
            return;
        }
        let flow = self
            .tcp
            .entry(key)
            .or_insert_with(|| TcpFlow::new(tcp.sequence_number()));
        flow.segment(tcp.sequence_number(), tcp.payload());
        for data in flow.messages() {
            self.out.push(Payload {
                ts,
                src: key.0,
                dst: key.1,
                carrier: Carrier::Tcp,
                data,
            });
        }
    }
}

/// One direction of a TCP connection, reassembled in sequence order.
#[derive(Debug)]
struct TcpFlow {
    /// Sequence number of the first stream byte.
    isn: u32,
    /// Stream offset up to which bytes have been appended to `buf`.
    delivered: u64,
    /// Out-of-order segments by stream offset.
    pending: BTreeMap<u64, Vec<u8>>,
    buf: Vec<u8>,
}

impl TcpFlow {
    fn new(isn: u32) -> Self {
        TcpFlow {
            isn,
            delivered: 0,
            pending: BTreeMap::new(),
            buf: Vec::new(),
        }
    }

    fn segment(&mut self, seq: u32, data: &[u8]) {
        let offset = seq.wrapping_sub(self.isn);
        // Offsets past 2^31 are segments from before the ISN (old retransmissions): drop them.
        if offset > i32::MAX as u32 {
            return;
        }
        let offset = u64::from(offset);
        let slot = self.pending.entry(offset).or_default();
        if data.len() > slot.len() {
            *slot = data.to_vec();
        }
        while let Some(entry) = self.pending.first_entry() {
            let start = *entry.key();
            if start > self.delivered {
                break;
            }
            let seg = entry.remove();
            let end = start + seg.len() as u64;
            if end > self.delivered {
                // Overlap with what we have (a retransmission that also carries new bytes).
                let skip = (self.delivered - start) as usize;
                self.buf.extend_from_slice(&seg[skip..]);
                self.delivered = end;
            }
        }
    }

    /// Complete SIP messages now at the head of the stream. A flow that cannot be framed as SIP
    /// (not SIP at all, a bad Content-Length, or no message within the largest size SIP allows)
    /// loses what it has buffered: nothing after it could be found reliably anyway.
    fn messages(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            match message::frame(&self.buf) {
                Ok(Some(Framed::KeepAlive(n))) => {
                    self.buf.drain(..n);
                }
                Ok(Some(Framed::Message(n))) => out.push(self.buf.drain(..n).collect()),
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(
                        bytes = self.buf.len(),
                        error = %e,
                        "TCP stream without SIP framing dropped"
                    );
                    self.buf.clear();
                    break;
                }
            }
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::replay::plan::sdp_of;
    use crate::sip::Message;
    use etherparse::PacketBuilder;
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};

    pub(crate) fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/pcaps/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Writes IPv4 packets into a pcap with the given link type and link header.
    fn pcap(
        link: DataLink,
        link_header: &dyn Fn(&[u8]) -> Vec<u8>,
        packets: &[Vec<u8>],
    ) -> Vec<u8> {
        let header = PcapHeader {
            datalink: link,
            ..PcapHeader::default()
        };
        let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
        for (i, ip) in packets.iter().enumerate() {
            let frame = link_header(ip);
            w.write_packet(&PcapPacket::new(
                Duration::from_millis(i as u64),
                frame.len() as u32,
                &frame,
            ))
            .unwrap();
        }
        w.into_writer()
    }

    fn udp(payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ipv4([10, 1, 1, 1], [10, 1, 1, 2], 64)
            .udp(4000, 5060)
            .write(&mut v, payload)
            .unwrap();
        v
    }

    fn tcp(seq: u32, payload: &[u8], syn: bool) -> Vec<u8> {
        let mut v = Vec::new();
        let b = PacketBuilder::ipv4([10, 1, 1, 1], [10, 1, 1, 2], 64).tcp(40000, 5060, seq, 1000);
        if syn {
            b.syn().write(&mut v, payload)
        } else {
            b.ack(1).write(&mut v, payload)
        }
        .unwrap();
        v
    }

    fn sip_msg(cseq: u32, body: &str) -> String {
        format!(
            "OPTIONS sip:x SIP/2.0\r\nCSeq: {cseq} OPTIONS\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    #[test]
    fn sll2_frames_are_decoded() {
        let sll2 = |ip: &[u8]| {
            let mut f = vec![
                0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0,
            ];
            f.extend_from_slice(ip);
            f
        };
        let file = pcap(DataLink::LINUX_SLL2, &sll2, &[udp(b"hello")]);
        let out = read_capture(&file).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data, b"hello");
        assert_eq!(out[0].dst, "10.1.1.2:5060".parse().unwrap());
    }

    #[test]
    fn tcp_out_of_order_and_retransmitted_segments_yield_each_message_once() {
        let a = sip_msg(1, "abc");
        let b = sip_msg(2, "");
        let stream = format!("{a}\r\n\r\n{b}");
        let bytes = stream.as_bytes();
        let isn = u32::MAX - 10; // sequence numbers wrap inside the stream
        let s = |from: usize, to: usize| {
            tcp(isn.wrapping_add(1 + from as u32), &bytes[from..to], false)
        };
        let packets = vec![
            tcp(isn, b"", true),
            s(0, 20),
            s(40, bytes.len()), // arrives early
            s(20, 40),
            s(0, 30), // retransmission
        ];
        let file = pcap(DataLink::RAW, &|ip| ip.to_vec(), &packets);
        let out = read_capture(&file).unwrap();
        let texts: Vec<_> = out
            .iter()
            .map(|p| String::from_utf8_lossy(&p.data).into_owned())
            .collect();
        assert_eq!(texts, vec![a, b]);
        assert!(out.iter().all(|p| p.carrier == Carrier::Tcp));
        assert_eq!(
            out[0].ts,
            Duration::from_millis(3),
            "completed by the fourth packet"
        );
    }

    #[test]
    fn ethernet_pcap_fixture_has_sip_and_both_rtp_streams() {
        let out = read_capture(&fixture("siprec-2stream-udp.pcap")).unwrap();
        let to = |port: u16| out.iter().filter(|p| p.dst.port() == port).count();
        assert_eq!((to(30000), to(30002)), (350, 250));
        assert_eq!(
            out.iter()
                .filter(|p| p.data.starts_with(b"INVITE "))
                .count(),
            1
        );
    }

    #[test]
    fn pcapng_tcp_fixture_reassembles_the_split_invite_and_keeps_timestamps() {
        let out = read_capture(&fixture("siprec-2stream-tcp.pcapng")).unwrap();
        let sip: Vec<_> = out.iter().filter(|p| p.carrier == Carrier::Tcp).collect();
        assert_eq!(sip.len(), 6, "INVITE 100 200 ACK BYE 200");
        let invite = Message::parse(&sip[0].data).unwrap();
        assert_eq!(invite.method(), Some("INVITE"));
        assert!(sdp_of(&invite).is_some());
        // if_tsresol 9 honoured: 2025-11-28T10:00:00.0102Z, not 1000x off.
        assert_eq!(
            sip[0].ts,
            Duration::from_secs(1_764_324_000) + Duration::from_micros(10_200)
        );
    }

    #[test]
    fn sll_fixture_reassembles_the_fragmented_invite() {
        let out = read_capture(&fixture("siprec-3stream-sll-frag.pcap")).unwrap();
        let invite = out.iter().find(|p| p.data.starts_with(b"INVITE ")).unwrap();
        assert!(
            invite.data.len() > 3000,
            "three fragments' worth: {}",
            invite.data.len()
        );
        let m = Message::parse(&invite.data).unwrap();
        assert_eq!(sdp_of(&m).unwrap().media.len(), 3);
        assert!(m.body.ends_with(b"--siprec-boundary-01--\r\n"));
    }

    #[test]
    fn unsupported_link_type_is_an_error_not_a_panic() {
        let file = pcap(DataLink::IEEE802_11, &|ip| ip.to_vec(), &[udp(b"x")]);
        assert!(matches!(
            read_capture(&file),
            Err(CaptureError::LinkType(_))
        ));
        assert!(read_capture(b"garbage that is not a capture").is_err());
    }
}

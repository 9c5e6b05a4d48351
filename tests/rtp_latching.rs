//! RTP latching against the real binary: a stream takes the first source it hears, packets
//! from anyone else are ignored and counted (`foreign`), and another source takes over only
//! after the first has been silent for `media.relatch_after` (an SBC failover).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use siprec_gateway::sip::Message;
use support::audio::ulaw_tone;
use support::gateway::Gateway;
use support::sip_client::{UdpPeer, in_dialog, invite};
use tokio::net::UdpSocket;

const WAIT: Duration = Duration::from_secs(20);
const PACKET: Duration = Duration::from_millis(20);

fn rtp(seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// The RTP ports of the answer's m-lines.
fn answer_ports(ok: &Message) -> Vec<u16> {
    String::from_utf8_lossy(&ok.body)
        .lines()
        .filter_map(|l| l.strip_prefix("m=audio ")?.split(' ').next()?.parse().ok())
        .collect()
}

/// A source of RTP: its own socket (its own address), one SSRC, a tone.
struct Source {
    socket: UdpSocket,
    ssrc: u32,
    audio: Vec<u8>,
    seq: u16,
}

impl Source {
    async fn new(ssrc: u32, freq: f64) -> Source {
        Source { socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(), ssrc, audio: ulaw_tone(freq, 12000.0, 5.0), seq: 0 }
    }

    async fn send(&mut self, to: SocketAddr) {
        let at = usize::from(self.seq) * 160 % (self.audio.len() - 160);
        let packet = rtp(self.seq, self.ssrc, &self.audio[at..at + 160]);
        self.socket.send_to(&packet, to).await.unwrap();
        self.seq += 1;
    }
}

/// Starts a call from `src`; returns the 200 and the first stream's RTP address.
async fn call(src: &UdpPeer, call_id: &str) -> (Message, SocketAddr) {
    src.send(&invite("UDP", src.local, call_id)).await;
    let ok = src.final_response().await;
    assert_eq!(ok.status(), Some(200));
    src.send(&in_dialog("ACK", 1, "UDP", src.local, call_id, &ok)).await;
    let port = answer_ports(&ok)[0];
    (ok, SocketAddr::from(([127, 0, 0, 1], port)))
}

#[tokio::test]
async fn an_intruder_cannot_inject_audio_into_a_latched_stream() {
    let gw = Gateway::start("");
    let src = UdpPeer::bind(gw.udp_addr()).await;
    let call_id = "latch-intruder@test";
    let (ok, rtp_addr) = call(&src, call_id).await;
    let (mut sbc, mut intruder) = (Source::new(0x1111, 400.0).await, Source::new(0x2222, 1000.0).await);
    let mut tick = tokio::time::interval(PACKET);
    for _ in 0..50 {
        tick.tick().await;
        sbc.send(rtp_addr).await;
        intruder.send(rtp_addr).await;
    }
    src.send(&in_dialog("BYE", 2, "UDP", src.local, call_id, &ok)).await;
    assert_eq!(src.final_response().await.status(), Some(200));

    let rec = gw.wait_for_recording(1, WAIT);
    let stream = rec.stream(0);
    assert_eq!(stream["packets"], 50, "{stream:#}");
    assert_eq!(stream["foreign"], 50, "{stream:#}");
    let audio = rec.wav.channel(0);
    assert!(audio.tone_share(1000.0, 0.2, 0.9) < 0.05, "the intruder's tone is in the recording");
    assert!(audio.tone_share(400.0, 0.2, 0.9) > 0.9, "the SBC's tone is missing");
}

#[tokio::test]
async fn a_new_source_takes_over_after_the_latched_one_falls_silent() {
    let gw = Gateway::start("[media]\nrelatch_after = \"300ms\"\n");
    let src = UdpPeer::bind(gw.udp_addr()).await;
    let call_id = "latch-failover@test";
    let (ok, rtp_addr) = call(&src, call_id).await;
    let (mut primary, mut mate) = (Source::new(0x1111, 400.0).await, Source::new(0x3333, 400.0).await);
    let mut tick = tokio::time::interval(PACKET);
    for _ in 0..10 {
        tick.tick().await;
        primary.send(rtp_addr).await;
    }
    // The primary SBC dies; its mate takes over after more than relatch_after.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..10 {
        tick.tick().await;
        mate.send(rtp_addr).await;
    }
    // The old primary coming back is now the foreign one.
    for _ in 0..5 {
        tick.tick().await;
        primary.send(rtp_addr).await;
        mate.send(rtp_addr).await;
    }
    src.send(&in_dialog("BYE", 2, "UDP", src.local, call_id, &ok)).await;
    assert_eq!(src.final_response().await.status(), Some(200));

    let rec = gw.wait_for_recording(1, WAIT);
    let stream = rec.stream(0);
    assert_eq!(stream["packets"], 25, "{stream:#}");
    assert_eq!(stream["foreign"], 5, "{stream:#}");
    let relatched = gw.wait_for_logs("re-latched", 1, WAIT);
    assert_eq!(gw.log().matches("re-latched").count(), 1, "{relatched:?}");
}

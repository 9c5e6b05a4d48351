//! The media path of the real binary, end to end, with an SRC written here: G.722 recorded at
//! 16 kHz, SDES-SRTP encrypted by an independent implementation (the `libsrtp` crate), hold
//! and resume by re-INVITE with the RTP timeout suspended, a codec change mid-call, and DTMF
//! kept out of the audio (and listed in metaData only when enabled).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use ezk_g722::libg722::{Bitrate, encoder::Encoder};
use libsrtp::{MasterKey, ProtectionProfile, SendSession, StreamConfig};
use siprec_gateway::sip::Message;
use support::audio::ulaw_tone;
use support::gateway::Gateway;
use support::sip_client::{UdpPeer, in_dialog};
use tokio::net::UdpSocket;

const WAIT: Duration = Duration::from_secs(20);
const PACKET: Duration = Duration::from_millis(20);
const PER_STREAM: &str = "[recording]\nlayout = \"per-stream\"\n";

fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, pt];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

fn sdp(mlines: &str) -> String {
    format!("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n{mlines}")
}

/// 16 kHz samples of a 1 kHz tone plus a 6 kHz one (only wideband carries the second).
fn wideband_tone(seconds: f64) -> Vec<i16> {
    let n = (seconds * 16000.0) as usize;
    (0..n)
        .map(|i| {
            let t = i as f64 / 16000.0;
            (8000.0 * (std::f64::consts::TAU * 1000.0 * t).sin() + 4000.0 * (std::f64::consts::TAU * 6000.0 * t).sin()) as i16
        })
        .collect()
}

/// The G.722 payloads (20 ms each) of `samples`.
fn g722_packets(samples: &[i16]) -> Vec<Vec<u8>> {
    let mut enc = Encoder::new(Bitrate::Mode1_64000, false, false);
    samples.chunks_exact(320).map(|c| enc.encode(c)).collect()
}

/// One SRC: its SIP peer, its RTP socket, the call.
struct Src {
    sip: UdpPeer,
    rtp: UdpSocket,
    call_id: String,
    cseq: u32,
    ok: Option<Message>,
}

impl Src {
    async fn new(gw: &Gateway, call_id: &str) -> Src {
        Src { sip: UdpPeer::bind(gw.udp_addr()).await, rtp: UdpSocket::bind("127.0.0.1:0").await.unwrap(), call_id: call_id.into(), cseq: 1, ok: None }
    }

    /// Sends the INVITE with `body` and returns the final response (ACKed if 200).
    async fn invite(&mut self, body: &str) -> Message {
        let (local, id) = (self.sip.local, &self.call_id);
        self.sip
            .send(&format!(
                "INVITE sip:srs@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-inv-{id};rport\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:src@example.com>;tag=src-{id}\r\nTo: <sip:srs@example.com>\r\n\
                 Call-ID: {id}\r\nCSeq: 1 INVITE\r\nContact: <sip:src@{local};transport=udp>\r\n\
                 Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ))
            .await;
        let resp = self.sip.final_response().await;
        if resp.status() == Some(200) {
            self.sip.send(&in_dialog("ACK", 1, "UDP", local, id, &resp)).await;
            self.ok = Some(resp.clone());
        }
        resp
    }

    /// A re-INVITE with `body`; returns the 200's SDP.
    async fn reinvite(&mut self, body: &str) -> String {
        self.cseq += 1;
        let ok = self.ok.clone().expect("call established");
        let (local, id, cseq) = (self.sip.local, &self.call_id, self.cseq);
        let to = ok.header("To").unwrap();
        let uri = ok.header("Contact").unwrap().trim().trim_start_matches('<').split('>').next().unwrap().to_string();
        self.sip
            .send(&format!(
                "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-reinv{cseq}-{id};rport\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:src@example.com>;tag=src-{id}\r\nTo: {to}\r\n\
                 Call-ID: {id}\r\nCSeq: {cseq} INVITE\r\nContact: <sip:src@{local};transport=udp>\r\n\
                 Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ))
            .await;
        let resp = self.sip.final_response().await;
        assert_eq!(resp.status(), Some(200), "re-INVITE answered");
        self.sip.send(&in_dialog("ACK", cseq, "UDP", local, id, &ok)).await;
        String::from_utf8_lossy(&resp.body).into_owned()
    }

    async fn bye(&mut self) {
        self.cseq += 1;
        let ok = self.ok.clone().expect("call established");
        self.sip.send(&in_dialog("BYE", self.cseq, "UDP", self.sip.local, &self.call_id, &ok)).await;
        assert_eq!(self.sip.final_response().await.status(), Some(200));
    }

    /// Where the gateway receives the answer's first m-line.
    fn rtp_target(&self) -> SocketAddr {
        let ok = self.ok.as_ref().expect("call established");
        let port = String::from_utf8_lossy(&ok.body)
            .lines()
            .find_map(|l| l.strip_prefix("m=audio ")?.split(' ').next()?.parse::<u16>().ok())
            .expect("an m=audio line");
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    async fn send(&self, packet: &[u8]) {
        self.rtp.send_to(packet, self.rtp_target()).await.unwrap();
    }
}

#[tokio::test]
async fn g722_is_recorded_wideband_at_16_khz() {
    let gw = Gateway::start(PER_STREAM);
    let mut src = Src::new(&gw, "g722@test").await;
    let ok = src
        .invite(&sdp("m=audio 40000 RTP/AVP 9 0 101\r\na=rtpmap:9 G722/8000\r\na=rtpmap:101 telephone-event/8000\r\na=label:1\r\na=sendonly\r\n"))
        .await;
    assert_eq!(ok.status(), Some(200));
    let answer = String::from_utf8_lossy(&ok.body).into_owned();
    assert!(answer.contains(" RTP/AVP 9 101\r\na=rtpmap:9 G722/8000\r\n"), "{answer}");
    let packets = g722_packets(&wideband_tone(1.5));
    let mut tick = tokio::time::interval(PACKET);
    for (i, p) in packets.iter().enumerate() {
        tick.tick().await;
        // RFC 3551 §4.5.2: G.722's RTP clock is 8000 although it samples at 16 kHz.
        src.send(&rtp(9, i as u16, i as u32 * 160, 0x722, p)).await;
    }
    src.bye().await;

    let rec = gw.wait_for_recording(1, WAIT);
    assert_eq!(rec.wav.spec.sample_rate, 16000, "the call's rate is its highest stream's");
    assert!((rec.wav.seconds() - rec.info_seconds()).abs() < 0.03);
    let ch = rec.wav.channel(0);
    // After the decoder's adaptation (~300 ms), both tones are there: the median over 100 ms
    // windows (a drift slip, a phase jump, would spoil one long window's measure).
    let median = |f: f64| {
        let mut v: Vec<f64> = (5..14).map(|i| ch.tone_share(f, f64::from(i) / 10.0, f64::from(i + 1) / 10.0)).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (low, high) = (median(1000.0), median(6000.0));
    assert!(low > 0.6 && high > 0.1, "1 kHz share {low:.2}, 6 kHz share {high:.2}");
    let stream = rec.stream(0);
    assert_eq!((stream["codec"].as_str(), stream["packets"].as_u64()), (Some("G722"), Some(75)), "{stream:#}");
}

/// AES_CM_128_HMAC_SHA1_80 key and salt, as the SRC offers them.
const SRTP_MATERIAL: [u8; 30] = [7; 30];

fn srtp_sender() -> SendSession {
    let (key, salt) = SRTP_MATERIAL.split_at(16);
    let config = StreamConfig::new(vec![MasterKey::new(key, salt, &None)], &ProtectionProfile::Aes128CmHmacSha180, &ProtectionProfile::Aes128CmHmacSha180);
    let mut session = SendSession::new();
    session.add_stream(None, &config).unwrap();
    session
}

#[tokio::test]
async fn srtp_encrypted_by_libsrtp_is_recorded_and_bad_packets_are_counted() {
    let gw = Gateway::start(PER_STREAM);
    let mut src = Src::new(&gw, "srtp@test").await;
    let key = base64::engine::general_purpose::STANDARD.encode(SRTP_MATERIAL);
    let ok = src
        .invite(&sdp(&format!("m=audio 40000 RTP/SAVP 0\r\na=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:{key}\r\na=label:1\r\na=sendonly\r\n")))
        .await;
    assert_eq!(ok.status(), Some(200));
    let answer = String::from_utf8_lossy(&ok.body).into_owned();
    assert!(answer.contains(" RTP/SAVP 0\r\n"), "{answer}");
    let ours = answer.lines().find_map(|l| l.strip_prefix("a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:")).expect("our a=crypto, same tag and suite");
    assert_ne!(ours, key, "our own key, not the SRC's");

    let mut tx = srtp_sender();
    let audio = ulaw_tone(400.0, 12000.0, 1.2);
    let mut tick = tokio::time::interval(PACKET);
    for i in 0..50u16 {
        tick.tick().await;
        let at = usize::from(i) * 160;
        let packet = tx.rtp_protect(rtp(0, i, u32::from(i) * 160, 0x5EC, &audio[at..at + 160])).unwrap();
        if i % 20 == 5 {
            // Tampered payload, ahead of the genuine packet: the tag no longer matches.
            let mut forged = packet.clone();
            forged[20] ^= 0x55;
            src.send(&forged).await;
        }
        src.send(&packet).await;
        if i == 10 {
            src.send(&packet).await; // a replay
        }
    }
    src.bye().await;

    let rec = gw.wait_for_recording(1, WAIT);
    let stream = rec.stream(0);
    assert_eq!(stream["packets"], 50, "{stream:#}");
    let srtp = &stream["srtp"];
    assert_eq!(srtp["suite"], "AES_CM_128_HMAC_SHA1_80", "{stream:#}");
    assert_eq!((srtp["authFailures"].as_u64(), srtp["replayed"].as_u64()), (Some(3), Some(1)), "{stream:#}");
    let ch = rec.wav.channel(0);
    assert!(ch.tone_share(400.0, 0.2, 0.9) > 0.9, "the decrypted tone is missing");
    assert!(!gw.log().contains(&key) && !gw.log().contains(ours), "a key was logged");
}

#[tokio::test]
async fn srtp_policy_refuses_what_it_must() {
    let key = base64::engine::general_purpose::STANDARD.encode(SRTP_MATERIAL);
    let savp = sdp(&format!("m=audio 40000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}\r\na=sendonly\r\n"));
    let avp = sdp("m=audio 40000 RTP/AVP 0\r\na=sendonly\r\n");
    let refuse = Gateway::start("[media]\nsrtp = \"refuse\"\n");
    assert_eq!(Src::new(&refuse, "refuse-savp@test").await.invite(&savp).await.status(), Some(488));
    assert_eq!(Src::new(&refuse, "refuse-avp@test").await.invite(&avp).await.status(), Some(200));
    let require = Gateway::start("[media]\nsrtp = \"require\"\n");
    assert_eq!(Src::new(&require, "require-avp@test").await.invite(&avp).await.status(), Some(488));
    assert_eq!(Src::new(&require, "require-savp@test").await.invite(&savp).await.status(), Some(200));
    // Accept (the default): an SRTP line without a usable key is refused, not recorded as noise.
    let accept = Gateway::start("");
    let both = sdp(&format!(
        "m=audio 40000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:short\r\na=sendonly\r\nm=audio 40002 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}\r\na=sendonly\r\n"
    ));
    let ok = Src::new(&accept, "accept@test").await.invite(&both).await;
    let m: Vec<String> = String::from_utf8_lossy(&ok.body).lines().filter(|l| l.starts_with("m=")).map(str::to_string).collect();
    assert!(m[0].starts_with("m=audio 0 ") && !m[1].starts_with("m=audio 0 "), "{m:?}");
}

#[tokio::test]
async fn hold_and_resume_by_reinvite_outlast_the_rtp_timeout_on_one_timeline() {
    let gw = Gateway::start(&format!("{PER_STREAM}[media]\nrtp_timeout = \"1s\"\n"));
    let mut src = Src::new(&gw, "hold@test").await;
    let line = "m=audio 40000 RTP/AVP 0\r\na=label:1\r\n";
    assert_eq!(src.invite(&sdp(&format!("{line}a=sendonly\r\n"))).await.status(), Some(200));
    let audio = ulaw_tone(400.0, 12000.0, 3.0);
    let mut tick = tokio::time::interval(PACKET);
    for i in 0..50u16 {
        tick.tick().await;
        let at = usize::from(i) * 160;
        src.send(&rtp(0, i, u32::from(i) * 160, 0x401d, &audio[at..at + 160])).await;
    }
    let answer = src.reinvite(&sdp(&format!("{line}a=inactive\r\n"))).await;
    assert!(answer.contains("a=inactive\r\n") && !answer.contains("recvonly"), "{answer}");
    // Twice the RTP timeout without a packet: on hold, the call goes on.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Resumed; a new m-line mid-call is refused with port 0 (a WAV cannot gain a channel).
    let answer = src.reinvite(&sdp(&format!("{line}a=sendonly\r\nm=audio 40002 RTP/AVP 0\r\na=label:2\r\na=sendonly\r\n"))).await;
    assert!(answer.contains("a=recvonly\r\n"), "{answer}");
    assert!(answer.contains("m=audio 0 RTP/AVP 0\r\n"), "{answer}");
    // The SRC restarts its timestamps after the hold: placed by arrival, not by timestamp.
    let mut tick = tokio::time::interval(PACKET); // a fresh one: the old would burst its missed ticks
    for i in 0..50u16 {
        tick.tick().await;
        let at = usize::from(i) * 160;
        src.send(&rtp(0, 5000 + i, 999_000 + u32::from(i) * 160, 0x401d, &audio[at..at + 160])).await;
    }
    src.bye().await;

    let rec = gw.wait_for_recording(1, WAIT);
    assert_eq!(rec.info["metaData"]["gateway"]["endReason"], "bye", "{:#}", rec.info);
    assert_eq!(rec.wav.channels.len(), 1);
    let secs = rec.wav.seconds();
    assert!((secs - rec.info_seconds()).abs() < 0.03 && secs > 3.9, "{secs} s");
    let ch = rec.wav.channel(0);
    assert!(ch.tone_share(400.0, 0.2, 0.9) > 0.9, "before the hold");
    assert!(ch.rms(1.4, 2.9) < 1.0, "silence on hold");
    assert!(ch.tone_share(400.0, secs - 0.8, secs - 0.2) > 0.9, "after the resume");
    assert_eq!(rec.stream(0)["packets"], 100, "{:#}", rec.stream(0));
}

#[tokio::test]
async fn codec_change_mid_call_swaps_the_decoder_on_the_same_channel() {
    let gw = Gateway::start(PER_STREAM);
    let mut src = Src::new(&gw, "codec-change@test").await;
    assert_eq!(src.invite(&sdp("m=audio 40000 RTP/AVP 0\r\na=label:1\r\na=sendonly\r\n")).await.status(), Some(200));
    let audio = ulaw_tone(400.0, 12000.0, 1.2);
    let mut tick = tokio::time::interval(PACKET);
    for i in 0..50u16 {
        tick.tick().await;
        let at = usize::from(i) * 160;
        src.send(&rtp(0, i, u32::from(i) * 160, 0xc0de, &audio[at..at + 160])).await;
    }
    let answer = src.reinvite(&sdp("m=audio 40000 RTP/AVP 9\r\na=rtpmap:9 G722/8000\r\na=label:1\r\na=sendonly\r\n")).await;
    assert!(answer.contains("a=rtpmap:9 G722/8000"), "{answer}");
    // 1 kHz only: the call was set up at 8 kHz, so G.722 is resampled down to it.
    let wide: Vec<i16> = (0..16000 * 3 / 2).map(|i| (8000.0 * (std::f64::consts::TAU * 1000.0 * i as f64 / 16000.0).sin()) as i16).collect();
    for (k, p) in g722_packets(&wide).iter().enumerate() {
        tick.tick().await;
        let i = 50 + k as u16;
        src.send(&rtp(9, i, u32::from(i) * 160, 0xc0de, p)).await;
    }
    src.bye().await;

    let rec = gw.wait_for_recording(1, WAIT);
    assert_eq!(rec.wav.spec.sample_rate, 8000);
    let stream = rec.stream(0);
    assert_eq!((stream["codec"].as_str(), stream["codecChanges"].as_u64(), stream["packets"].as_u64()), (Some("G722"), Some(1), Some(125)), "{stream:#}");
    let ch = rec.wav.channel(0);
    let secs = rec.wav.seconds();
    assert!(ch.tone_share(400.0, 0.2, 0.9) > 0.9, "PCMU part");
    // From 0.8 s after the switch: the G.722 decoder's first ~0.5 s follow its own adaptation
    // rather than the test encoder's (src/media/codec.rs, the oracle test).
    // Zero crossings rather than the tone's share: a drift-correction slip (the test's sender
    // jitters when the suite runs in parallel) shifts the phase, which a share measure punishes.
    let hz = ch.zero_crossing_hz(secs - 0.8, secs - 0.1);
    assert!((hz - 1000.0).abs() < 30.0 && ch.tone_share(400.0, secs - 0.8, secs - 0.1) < 0.05, "G.722 part: {hz:.0} Hz in {secs:.2} s, {:?} {stream:#}", windows(&ch, 1000.0, secs));
}

/// 25 packets of tone, a 160 ms key press of `5` (RFC 4733: ten updates, the last three with
/// the end bit, all at the event's start timestamp), 25 packets of tone.
async fn call_with_a_digit(gw: &Gateway, call_id: &str) {
    let mut src = Src::new(gw, call_id).await;
    let ok = src
        .invite(&sdp("m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=label:1\r\na=sendonly\r\n"))
        .await;
    assert_eq!(ok.status(), Some(200));
    let audio = ulaw_tone(400.0, 12000.0, 1.2);
    let mut tick = tokio::time::interval(PACKET);
    for i in 0..60u16 {
        tick.tick().await;
        let at = usize::from(i) * 160;
        let packet = match i {
            25..35 => {
                // RFC 4733 §2.5.1.4: the end is sent three times with the final duration.
                let duration = (i - 24).min(8) * 160;
                let end = if i >= 32 { 0x80 } else { 0 };
                let d = duration.to_be_bytes();
                rtp(101, i, 25 * 160, 0xd7f, &[5, end | 10, d[0], d[1]])
            }
            _ => rtp(0, i, u32::from(i) * 160, 0xd7f, &audio[at..at + 160]),
        };
        src.send(&packet).await;
    }
    src.bye().await;
}

#[tokio::test]
async fn dtmf_is_never_audio_and_listed_only_when_enabled() {
    let gw = Gateway::start(&format!("{PER_STREAM}[media]\ndtmf_in_metadata = true\n"));
    call_with_a_digit(&gw, "dtmf-on@test").await;
    let rec = gw.wait_for_recording(1, WAIT);
    let stream = rec.stream(0);
    assert_eq!(stream["telephoneEvents"], 10, "{stream:#}");
    let digits = stream["dtmf"].as_array().expect("dtmf listed");
    assert_eq!(digits.len(), 1, "{stream:#}");
    assert_eq!((digits[0]["digit"].as_str(), digits[0]["durationMs"].as_u64()), (Some("5"), Some(160)));
    let at = digits[0]["atMs"].as_u64().unwrap();
    assert!((400..900).contains(&at), "pressed 500 ms after the first packet, at {at} ms");
    let ch = rec.wav.channel(0);
    let first = ch.first_sound().unwrap();
    assert!(ch.rms(first + 0.54, first + 0.66) < 1.0, "the key press is silence, not audio");

    let gw = Gateway::start(PER_STREAM);
    call_with_a_digit(&gw, "dtmf-off@test").await;
    let rec = gw.wait_for_recording(1, WAIT);
    let stream = rec.stream(0);
    assert_eq!(stream["telephoneEvents"], 10, "{stream:#}");
    assert!(stream.get("dtmf").is_none(), "digits listed although off: {stream:#}");
}

#[tokio::test]
async fn an_mline_added_by_reinvite_gets_a_spare_channel_at_its_place_in_the_file() {
    let gw = Gateway::start(&format!("{PER_STREAM}[media]\nspare_streams = 1\n"));
    let mut src = Src::new(&gw, "added@test").await;
    let first = "m=audio 40000 RTP/AVP 0\r\na=label:1\r\na=sendonly\r\n";
    assert_eq!(src.invite(&sdp(first)).await.status(), Some(200));
    let (low, high) = (ulaw_tone(400.0, 12000.0, 3.0), ulaw_tone(1000.0, 12000.0, 3.0));
    let mut tick = tokio::time::interval(PACKET);
    for i in 0..50u16 {
        tick.tick().await;
        let at = usize::from(i) * 160;
        src.send(&rtp(0, i, u32::from(i) * 160, 0xadd1, &low[at..at + 160])).await;
    }
    let answer = src.reinvite(&sdp(&format!("{first}m=audio 40002 RTP/AVP 0\r\na=label:2\r\na=sendonly\r\n"))).await;
    let ports: Vec<u16> = answer.lines().filter_map(|l| l.strip_prefix("m=audio ")?.split(' ').next()?.parse().ok()).collect();
    assert!(ports.len() == 2 && ports[1] != 0 && ports[1] != ports[0], "{answer}");
    let second = SocketAddr::from(([127, 0, 0, 1], ports[1]));
    // The next one finds no spare left: port 0.
    let answer = src.reinvite(&sdp(&format!("{first}m=audio 40002 RTP/AVP 0\r\na=label:2\r\na=sendonly\r\nm=audio 40004 RTP/AVP 0\r\na=label:3\r\na=sendonly\r\n"))).await;
    assert!(answer.contains(&format!("m=audio {} RTP/AVP 0", ports[1])) && answer.contains("m=audio 0 RTP/AVP 0"), "{answer}");
    // Same ticker: the SRC's packet clock does not stop for the re-INVITEs (missed ticks burst).
    for i in 50..100u16 {
        tick.tick().await;
        let at = usize::from(i) * 160;
        src.send(&rtp(0, i, u32::from(i) * 160, 0xadd1, &low[at..at + 160])).await;
        src.rtp.send_to(&rtp(0, i - 50, u32::from(i - 50) * 160, 0xadd2, &high[at..at + 160]), second).await.unwrap();
    }
    src.bye().await;

    let rec = gw.wait_for_recording(1, WAIT);
    assert_eq!(rec.wav.channels.len(), 2, "{:#}", rec.info["metaData"]["gateway"]);
    let streams = rec.info["metaData"]["gateway"]["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 2);
    assert_eq!((streams[1]["label"].as_str(), streams[1]["packets"].as_u64()), (Some("2"), Some(50)));
    let ch = rec.wav.channel(1);
    let start = ch.first_sound().expect("the added stream is heard");
    assert!((0.95..1.3).contains(&start), "starts at its place in the file: {start} s");
    assert!(ch.tone_share(1000.0, start + 0.2, start + 0.8) > 0.9);
    let ch0 = rec.wav.channel(0);
    assert!(ch0.tone_share(400.0, 0.2, 1.8) > 0.9, "{:?} {:#}", windows(&ch0, 400.0, rec.wav.seconds()), rec.info["metaData"]["gateway"]);
}

/// Tone share and RMS per 100 ms window, for failure messages.
fn windows(ch: &support::audio::Channel<'_>, freq: f64, secs: f64) -> Vec<(u32, u32)> {
    (0..(secs * 10.0) as usize)
        .map(|w| {
            let (a, b) = (w as f64 / 10.0, (w + 1) as f64 / 10.0);
            ((ch.tone_share(freq, a, b) * 100.0) as u32, ch.rms(a, b) as u32)
        })
        .collect()
}

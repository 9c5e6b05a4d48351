//! SRTP checked against implementations we did not write: the pure-Rust `libsrtp` crate (every
//! suite, SRTP and SRTCP) and ffmpeg's SRTP muxer (the two HMAC-SHA1 suites, over real UDP).
//! Covers the sequence wrap with its ROC, tampering, replays, an SSRC change and a sender restart.
//!
//! The ffmpeg tests need `ffmpeg` on the PATH (Debian: `apt-get install ffmpeg`).

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use libsrtp::{MasterKey, ProtectionProfile, SendSession, StreamConfig};
use siprec_gateway::media::g711::{self, Law};
use siprec_gateway::media::srtp::{RESYNC_AFTER, SrtpError, SrtpReceiver, Suite, parse_crypto};

const ALL_SUITES: [Suite; 6] = [
    Suite::AesCm128HmacSha1_80,
    Suite::AesCm128HmacSha1_32,
    Suite::AesCm256HmacSha1_80,
    Suite::AesCm256HmacSha1_32,
    Suite::AeadAes128Gcm,
    Suite::AeadAes256Gcm,
];

/// (key length, salt length, libsrtp's RTP profile, its RTCP profile: SRTCP always has an 80-bit
/// tag with the HMAC suites, RFC 4568 §6.2.2).
fn libsrtp_profile(suite: Suite) -> (usize, usize, ProtectionProfile, ProtectionProfile) {
    use ProtectionProfile as P;
    match suite {
        Suite::AesCm128HmacSha1_80 => (16, 14, P::Aes128CmHmacSha180, P::Aes128CmHmacSha180),
        Suite::AesCm128HmacSha1_32 => (16, 14, P::Aes128CmHmacSha132, P::Aes128CmHmacSha180),
        Suite::AesCm256HmacSha1_80 => (32, 14, P::Aes256CmHmacSha180, P::Aes256CmHmacSha180),
        Suite::AesCm256HmacSha1_32 => (32, 14, P::Aes256CmHmacSha132, P::Aes256CmHmacSha180),
        Suite::AeadAes128Gcm => (16, 12, P::AeadAes128Gcm, P::AeadAes128Gcm),
        Suite::AeadAes256Gcm => (32, 12, P::AeadAes256Gcm, P::AeadAes256Gcm),
    }
}

/// A sender (libsrtp, any SSRC) and our receiver sharing one key for `suite`.
fn pair(suite: Suite) -> (SendSession, SrtpReceiver) {
    let (key_len, salt_len, rtp, rtcp) = libsrtp_profile(suite);
    let material: Vec<u8> = (0..key_len + salt_len).map(|i| (i * 7 + 3) as u8).collect();
    (
        sender(&material, key_len, rtp, rtcp),
        receiver(suite, &material),
    )
}

fn sender(
    material: &[u8],
    key_len: usize,
    rtp: ProtectionProfile,
    rtcp: ProtectionProfile,
) -> SendSession {
    let (key, salt) = material.split_at(key_len);
    let config = StreamConfig::new(vec![MasterKey::new(key, salt, &None)], &rtp, &rtcp);
    let mut session = SendSession::new();
    session.add_stream(None, &config).unwrap();
    session
}

fn receiver(suite: Suite, material: &[u8]) -> SrtpReceiver {
    let b64 = base64::engine::general_purpose::STANDARD.encode(material);
    let offer = parse_crypto(&format!("1 {} inline:{b64}|2^31", suite.name())).unwrap();
    SrtpReceiver::new(&offer).unwrap()
}

/// A PCMU packet whose payload depends on its sequence number.
fn rtp(ssrc: u32, seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..160u16).map(|i| (seq ^ i) as u8));
    p
}

/// An RTCP sender report without report blocks.
fn sender_report(ssrc: u32, packets: u32) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0, 6];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0x11; 12]);
    p.extend_from_slice(&packets.to_be_bytes());
    p.extend_from_slice(&(packets * 160).to_be_bytes());
    p
}

/// Encrypts with libsrtp and decrypts with ours; the plain packet must come back.
fn round_trip(tx: &mut SendSession, rx: &mut SrtpReceiver, plain: &[u8]) -> Result<(), SrtpError> {
    let mut packet = tx.rtp_protect(plain.to_vec()).unwrap();
    let n = rx.decrypt_rtp(&mut packet)?;
    assert_eq!(&packet[..n], plain);
    Ok(())
}

#[test]
fn every_suite_decrypts_what_libsrtp_encrypts_across_the_sequence_wrap() {
    for suite in ALL_SUITES {
        let (mut tx, mut rx) = pair(suite);
        // Starts 100 packets before the wrap: the ROC must go to 1 (RFC 3711 §3.3.1).
        for i in 0..300u16 {
            round_trip(
                &mut tx,
                &mut rx,
                &rtp(0xdead_beef, 65_436u16.wrapping_add(i)),
            )
            .unwrap_or_else(|e| panic!("{suite:?} packet {i}: {e}"));
            if i % 50 == 0 {
                let report = sender_report(0xdead_beef, u32::from(i));
                let mut packet = tx.rtcp_protect(report.clone()).unwrap();
                let n = rx
                    .decrypt_rtcp(&mut packet)
                    .unwrap_or_else(|e| panic!("{suite:?} SRTCP {i}: {e}"));
                assert_eq!(packet[..n], report[..], "{suite:?}");
            }
        }
        let stats = rx.stats();
        assert_eq!(
            (stats.decrypted, stats.rtcp_decrypted, stats.auth_failures),
            (300, 6, 0),
            "{suite:?}"
        );
    }
}

#[test]
fn tampered_packet_is_counted_as_an_auth_failure_and_dropped() {
    for suite in [
        Suite::AesCm128HmacSha1_80,
        Suite::AesCm128HmacSha1_32,
        Suite::AeadAes128Gcm,
    ] {
        let (mut tx, mut rx) = pair(suite);
        round_trip(&mut tx, &mut rx, &rtp(7, 1)).unwrap();
        for flip in [20, 12, 2] {
            // A payload bit, the first payload byte, the sequence number.
            let mut packet = tx.rtp_protect(rtp(7, 2 + flip as u16)).unwrap();
            packet[flip] ^= 0x01;
            let before = packet.clone();
            assert_eq!(
                rx.decrypt_rtp(&mut packet),
                Err(SrtpError::AuthFailed),
                "{suite:?}"
            );
            assert_eq!(packet, before, "a dropped packet is left as it was");
        }
        let mut packet = tx.rtp_protect(rtp(7, 50)).unwrap();
        let last = packet.len() - 1;
        packet[last] ^= 0x80; // the tag
        assert_eq!(
            rx.decrypt_rtp(&mut packet),
            Err(SrtpError::AuthFailed),
            "{suite:?}"
        );
        // The stream goes on.
        round_trip(&mut tx, &mut rx, &rtp(7, 51)).unwrap();
        let stats = rx.stats();
        assert_eq!(
            (stats.decrypted, stats.auth_failures, stats.replayed),
            (2, 4, 0),
            "{suite:?}"
        );

        let mut report = tx.rtcp_protect(sender_report(7, 2)).unwrap();
        report[10] ^= 0x04;
        assert_eq!(
            rx.decrypt_rtcp(&mut report),
            Err(SrtpError::AuthFailed),
            "{suite:?}"
        );
        assert_eq!(rx.stats().rtcp_dropped, 1);
    }
}

#[test]
fn replayed_and_too_old_packets_are_counted_and_dropped() {
    let (mut tx, mut rx) = pair(Suite::AesCm128HmacSha1_80);
    let packets: Vec<Vec<u8>> = (0..100u16)
        .map(|s| tx.rtp_protect(rtp(9, 1000 + s)).unwrap())
        .collect();
    // Out of order inside the window is fine.
    for i in [0, 2, 1, 3] {
        rx.decrypt_rtp(&mut packets[i].clone()).unwrap();
    }
    assert_eq!(
        rx.decrypt_rtp(&mut packets[2].clone()),
        Err(SrtpError::Replayed)
    );
    for p in &packets[4..] {
        rx.decrypt_rtp(&mut p.clone()).unwrap();
    }
    // 99 packets behind the newest: outside the default window of 64.
    assert_eq!(
        rx.decrypt_rtp(&mut packets[0].clone()),
        Err(SrtpError::Replayed)
    );
    assert_eq!(
        rx.decrypt_rtp(&mut packets[99].clone()),
        Err(SrtpError::Replayed)
    );
    let stats = rx.stats();
    assert_eq!(
        (stats.decrypted, stats.replayed, stats.auth_failures),
        (100, 3, 0)
    );

    let report = tx.rtcp_protect(sender_report(9, 100)).unwrap();
    rx.decrypt_rtcp(&mut report.clone()).unwrap();
    assert_eq!(
        rx.decrypt_rtcp(&mut report.clone()),
        Err(SrtpError::Replayed)
    );
}

#[test]
fn ssrc_change_mid_stream_gets_its_own_roc_and_the_old_ssrc_may_come_back() {
    let (mut tx, mut rx) = pair(Suite::AesCm128HmacSha1_80);
    // SSRC A crosses the wrap (ROC 1), then a failover to B with its own sequence, then A again.
    for s in 65_500..=65_535u16 {
        round_trip(&mut tx, &mut rx, &rtp(0xaaaa, s)).unwrap();
    }
    for s in 0..20u16 {
        round_trip(&mut tx, &mut rx, &rtp(0xaaaa, s)).unwrap();
    }
    for s in 30_000..30_100u16 {
        round_trip(&mut tx, &mut rx, &rtp(0xbbbb, s)).unwrap();
    }
    for s in 20..40u16 {
        round_trip(&mut tx, &mut rx, &rtp(0xaaaa, s)).unwrap();
    }
    assert_eq!(rx.stats().decrypted, 36 + 20 + 100 + 20);
}

#[test]
fn forged_packets_with_new_ssrcs_are_dropped_and_do_not_disturb_the_stream() {
    let (mut tx, mut rx) = pair(Suite::AesCm128HmacSha1_80);
    round_trip(&mut tx, &mut rx, &rtp(5, 100)).unwrap();
    for ssrc in 1000..1100u32 {
        let mut forged = rtp(ssrc, 101);
        forged.extend_from_slice(&[0u8; 10]);
        assert_eq!(rx.decrypt_rtp(&mut forged), Err(SrtpError::AuthFailed));
    }
    round_trip(&mut tx, &mut rx, &rtp(5, 101)).unwrap();
    let stats = rx.stats();
    assert_eq!((stats.decrypted, stats.auth_failures), (2, 100));
}

#[test]
fn sender_restart_with_the_same_ssrc_resyncs_after_a_run_of_failures() {
    let suite = Suite::AesCm128HmacSha1_80;
    let (key_len, salt_len, rtp_profile, rtcp_profile) = libsrtp_profile(suite);
    let material: Vec<u8> = (0..key_len + salt_len).map(|i| i as u8).collect();
    let mut rx = receiver(suite, &material);
    let mut tx = sender(&material, key_len, rtp_profile, rtcp_profile);
    for s in 100..150u16 {
        round_trip(&mut tx, &mut rx, &rtp(3, s)).unwrap();
    }
    // The SRC restarts: same SSRC and key, sequence 40 000 ahead (more than 2^15).
    let mut tx = sender(&material, key_len, rtp_profile, rtcp_profile);
    let failed = (40_100..40_100 + RESYNC_AFTER as u16)
        .filter(|&s| round_trip(&mut tx, &mut rx, &rtp(3, s)).is_err())
        .count();
    assert_eq!(failed, RESYNC_AFTER as usize - 1);
    for s in 40_200..40_300u16 {
        round_trip(&mut tx, &mut rx, &rtp(3, s)).unwrap();
    }
    let stats = rx.stats();
    assert_eq!(stats.resyncs, 1);
    assert_eq!(
        stats.auth_failures + stats.replayed,
        u64::from(RESYNC_AFTER) - 1
    );
    assert_eq!(stats.decrypted, 50 + 1 + 100);
}

#[test]
fn unencrypted_srtcp_is_dropped() {
    let (mut tx, mut rx) = pair(Suite::AesCm128HmacSha1_80);
    let mut report = tx.rtcp_protect(sender_report(4, 1)).unwrap();
    let e_flag = report.len() - 14;
    report[e_flag] &= 0x7f;
    assert_eq!(
        rx.decrypt_rtcp(&mut report),
        Err(SrtpError::UnencryptedSrtcp)
    );
    assert_eq!(rx.stats().rtcp_dropped, 1);
}

/// Binds an RTP socket and its RTCP neighbour (port + 1) on loopback.
fn bind_pair() -> (UdpSocket, UdpSocket) {
    for _ in 0..50 {
        let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = rtp.local_addr().unwrap().port();
        if port == u16::MAX {
            continue;
        }
        if let Ok(rtcp) = UdpSocket::bind(("127.0.0.1", port + 1)) {
            return (rtp, rtcp);
        }
    }
    panic!("no free pair of adjacent UDP ports");
}

/// Goertzel power of `freq` Hz in `samples` at 8 kHz, relative to the signal's energy.
fn tone_share(samples: &[i16], freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / 8000.0;
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2;
    let energy: f64 = samples.iter().map(|&x| f64::from(x).powi(2)).sum();
    2.0 * power / (energy * samples.len() as f64)
}

#[test]
fn ffmpeg_srtp_is_decrypted_across_the_wrap_for_both_sha1_suites() {
    let key = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk"; // 30 bytes
    for suite in [Suite::AesCm128HmacSha1_80, Suite::AesCm128HmacSha1_32] {
        let mut rx =
            SrtpReceiver::new(&parse_crypto(&format!("1 {} inline:{key}", suite.name())).unwrap())
                .unwrap();
        let (rtp_socket, rtcp_socket) = bind_pair();
        let port = rtp_socket.local_addr().unwrap().port();
        rtp_socket
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        rtcp_socket.set_nonblocking(true).unwrap();
        // 1.5 s of a 1 kHz tone as PCMU, 20 ms per packet (pkt_size = 12 + 160 + 14 reserved for
        // the tag), starting 36 packets before the sequence wraps.
        let mut ffmpeg = Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-nostdin",
                "-loglevel",
                "error",
                "-re",
                "-f",
                "lavfi",
            ])
            .args(["-i", "sine=frequency=1000:sample_rate=8000:duration=1.5"])
            .args([
                "-c:a",
                "pcm_mulaw",
                "-ar",
                "8000",
                "-ac",
                "1",
                "-f",
                "rtp",
                "-payload_type",
                "0",
            ])
            .args([
                "-ssrc",
                "305419896",
                "-seq",
                "65500",
                "-srtp_out_suite",
                suite.name(),
            ])
            .args([
                "-srtp_out_params",
                key,
                &format!("srtp://127.0.0.1:{port}?pkt_size=186"),
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("ffmpeg must be installed for this test (apt-get install ffmpeg)");

        let mut buf = [0u8; 2048];
        let mut seqs = Vec::new();
        let mut audio = Vec::new();
        let mut pcm = [0i16; 4096];
        let (mut quiet_after_exit, mut timeouts) = (0, 0);
        // Packets come paced by -re; stop once ffmpeg has exited and the socket stays quiet (or
        // after 30 s of timeouts, so a stuck ffmpeg fails the test instead of hanging it).
        while quiet_after_exit < 2 && timeouts < 100 {
            match rtp_socket.recv(&mut buf) {
                Ok(len) => {
                    let n = rx
                        .decrypt_rtp(&mut buf[..len])
                        .unwrap_or_else(|e| panic!("{suite:?}: {e}"));
                    let packet = &buf[..n];
                    assert_eq!(packet[1] & 0x7f, 0, "PCMU");
                    seqs.push(u16::from_be_bytes([packet[2], packet[3]]));
                    let samples = g711::decode(Law::Mu, &packet[12..], &mut pcm);
                    audio.extend_from_slice(&pcm[..samples]);
                }
                Err(_) if ffmpeg.try_wait().unwrap().is_some() => quiet_after_exit += 1,
                Err(_) => timeouts += 1,
            }
        }
        assert!(ffmpeg.wait().unwrap().success(), "{suite:?}: ffmpeg failed");
        assert!(seqs.len() >= 70, "{suite:?}: only {} packets", seqs.len());
        assert_eq!(seqs[0], 65_500);
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
            "{suite:?}: {seqs:?}"
        );
        assert!(
            seqs.contains(&0) && seqs.contains(&30),
            "{suite:?}: the wrap was crossed"
        );
        assert!(tone_share(&audio, 1000.0) > 0.9, "{suite:?}: a 1 kHz tone");
        assert!(tone_share(&audio, 600.0) < 0.01, "{suite:?}");

        // ffmpeg sends a sender report with its first packet. With the _32 suite it tags SRTCP
        // with 32 bits too, where RFC 4568 §6.2.2 keeps SRTCP at 80 bits (libsrtp and rtc-srtp
        // follow the RFC; see the libsrtp tests above): those reports are dropped, as a
        // conforming receiver must.
        let mut reports = 0;
        while let Ok(len) = rtcp_socket.recv(&mut buf) {
            reports += 1;
            let decrypted = rx.decrypt_rtcp(&mut buf[..len]);
            if suite == Suite::AesCm128HmacSha1_32 {
                assert!(decrypted.is_err(), "a 32-bit SRTCP tag is not accepted");
                continue;
            }
            let n = decrypted.unwrap_or_else(|e| panic!("{suite:?} SRTCP: {e}"));
            assert_eq!(buf[1], 200, "a sender report");
            assert_eq!(
                u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
                305_419_896
            );
            assert!(n >= 28);
        }
        assert!(reports >= 1, "{suite:?}: no SRTCP received");
        let rtcp_ok = if suite == Suite::AesCm128HmacSha1_32 {
            0
        } else {
            reports
        };
        assert_eq!(rx.stats().rtcp_decrypted, rtcp_ok, "{suite:?}");
        let stats = rx.stats();
        assert_eq!(
            (stats.auth_failures, stats.replayed, stats.malformed),
            (0, 0, 0),
            "{suite:?}"
        );
    }
}

#[test]
fn truncated_or_corrupted_packets_never_panic() {
    for suite in [Suite::AesCm128HmacSha1_80, Suite::AeadAes128Gcm] {
        let (mut tx, mut rx) = pair(suite);
        // Two CSRCs and a one-byte header extension (RFC 8285), which the parser must bound.
        let mut plain = vec![
            0x92, 0, 0, 5, 0, 0, 3, 32, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 2,
        ];
        plain.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0x7f, 0, 0]);
        plain.extend_from_slice(&[0x55; 160]);
        let packet = tx.rtp_protect(plain.clone()).unwrap();
        let report = tx.rtcp_protect(sender_report(8, 1)).unwrap();
        for (original, rtcp) in [(&packet, false), (&report, true)] {
            for end in 0..original.len() {
                let mut p = original[..end].to_vec();
                let _ = if rtcp {
                    rx.decrypt_rtcp(&mut p)
                } else {
                    rx.decrypt_rtp(&mut p)
                };
            }
            for at in 0..original.len() {
                for bits in [0x01, 0x80, 0xff] {
                    let mut p = original.clone();
                    p[at] ^= bits;
                    let result = if rtcp {
                        rx.decrypt_rtcp(&mut p)
                    } else {
                        rx.decrypt_rtp(&mut p)
                    };
                    assert!(result.is_err(), "{suite:?}: corrupted byte {at} accepted");
                }
            }
        }
        // The untouched packet still decrypts, header extension and all.
        let mut p = packet.clone();
        let n = rx.decrypt_rtp(&mut p).unwrap();
        assert_eq!(p[..n], plain[..], "{suite:?}");
    }
}

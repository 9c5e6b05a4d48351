//! The real gateway binary against sipp playing a session recording client (SRC) that this
//! project did not write. Scenarios are in `tests/sipp/src_*.xml`; each test starts its own
//! gateway on ephemeral ports and runs one sipp call against it.
//!
//! Needs `sipp` on PATH (Debian package `sip-tester`, built with RTPSTREAM).

mod support;

use std::time::Duration;

use support::audio::ulaw_tone;
use support::gateway::Gateway;
use support::sipp::SippCall;

/// A guard against hanging; every wait ends earlier when things work.
const WAIT: Duration = Duration::from_secs(20);
/// Peak amplitude of the tone sipp plays (its RMS is this / √2).
const AMPLITUDE: f64 = 12000.0;

#[test]
fn options_probe_gets_200_with_allow_accept_and_supported() {
    let gw = Gateway::start("");
    // The header checks are in the scenario; a mismatch fails sipp's call.
    SippCall::new("src_options.xml")
        .start(gw.udp_addr())
        .finish();
}

#[test]
fn cancel_matching_no_transaction_gets_481() {
    let gw = Gateway::start("");
    SippCall::new("src_cancel_unknown.xml")
        .start(gw.udp_addr())
        .finish();
    assert!(
        !gw.log().contains("recording started"),
        "a CANCEL alone must not start a recording"
    );
}

#[test]
fn cancel_after_the_200_gets_200_and_the_call_is_still_recorded() {
    let gw = Gateway::start("");
    // The CANCEL's own 200 is checked (CSeq: 1 CANCEL) in the scenario; the BYE must then
    // still find the dialog (a 481 would fail sipp's call).
    let done = SippCall::new("src_cancel_after_200.xml")
        .pause_ms(500)
        .start(gw.udp_addr())
        .finish();
    let rec = gw.wait_for_recording(1, WAIT);
    assert_eq!(rec.info["sessionId"], done.call_id());
    assert_eq!(
        rec.info["metaData"]["gateway"]["endReason"], "bye",
        "{:#}",
        rec.info
    );
    assert_eq!(rec.wav.channels.len(), 2);
    assert!(
        !gw.log().contains("cancelled"),
        "the answered INVITE was treated as cancelled:\n{}",
        gw.log()
    );
}

#[test]
fn bodiless_reinvite_gets_our_sdp_as_offer_and_the_call_goes_on() {
    let gw = Gateway::start("");
    // The scenario checks the 200 to the re-INVITE carries an SDP offer and answers it in the
    // ACK; a 488 (the old behaviour) fails sipp's call.
    let done = SippCall::new("src_reinvite_refresh.xml")
        .pause_ms(300)
        .start(gw.udp_addr())
        .finish();
    let rec = gw.wait_for_recording(1, WAIT);
    assert_eq!(rec.info["sessionId"], done.call_id());
    assert_eq!(rec.info["metaData"]["gateway"]["endReason"], "bye", "{:#}", rec.info);
    assert_eq!(rec.wav.channels.len(), 2);
}

#[test]
fn unacknowledged_200_is_retransmitted_until_the_ack() {
    let gw = Gateway::start("");
    let done = SippCall::new("src_no_ack.xml")
        .start(gw.udp_addr())
        .finish();

    // Scenario steps: 0 INVITE, 1 100, 2 200, 3 pause 2.2 s, 4 ACK, 5 pause 1.5 s, 6 BYE.
    let counts = done.counts();
    assert_eq!(
        counts.get("2_200_Retrans"),
        Some(&2),
        "RFC 3261 §13.3.1.4: the 200 is resent at T1 and 3·T1 before the ACK at 2.2 s, and not \
         at 7·T1 after it; sipp counted {counts:?}\n{}",
        done.describe()
    );
    let oks: Vec<f64> = done
        .messages()
        .iter()
        .filter(|m| {
            m.received && m.text.starts_with("SIP/2.0 200") && m.text.contains("CSeq: 1 INVITE")
        })
        .map(|m| m.at)
        .collect();
    assert_eq!(
        oks.len(),
        3,
        "original 200 and two retransmissions: {oks:?}"
    );
    let gaps = [oks[1] - oks[0], oks[2] - oks[1]];
    assert!(
        (gaps[0] - 0.5).abs() < 0.15 && (gaps[1] - 1.0).abs() < 0.15,
        "retransmission intervals should be T1 then 2·T1: {gaps:?}"
    );

    let rec = gw.wait_for_recording(1, WAIT);
    assert_eq!(
        rec.info["metaData"]["gateway"]["endReason"], "bye",
        "{:#}",
        rec.info
    );
    assert!(!gw.log().contains("no ACK"), "{}", gw.log());
}

#[test]
fn two_stream_call_from_sipp_records_the_stream_it_sends_and_a_silent_one() {
    let gw = Gateway::start("[metadata]\ncarry_headers = [\"X-*\"]\n");
    let done = SippCall::new("src_siprec_call.xml")
        .file("audio.ulaw", ulaw_tone(700.0, AMPLITUDE, 2.0))
        .pause_ms(2100)
        .start(gw.udp_addr())
        .finish();
    let rec = gw.wait_for_recording(1, WAIT);
    let info = &rec.info;

    // Format and length.
    assert_eq!(rec.wav.spec.sample_rate, 8000);
    assert_eq!(rec.wav.channels.len(), 2, "agent side and customer side");
    let wav_s = rec.wav.seconds();
    assert!(
        (wav_s - rec.info_seconds()).abs() <= 0.020,
        "WAV lasts {wav_s:.3} s but endTime - startTime is {:.3} s",
        rec.info_seconds()
    );

    // The metadata names the party on the first m-line +15551230001 and the one on the second
    // 4711, an internal extension: the agent. Channel 0 is the agent's side (the second m-line,
    // on which nothing was sent: all zero), channel 1 the customer's (sipp's 2 s of 700 Hz).
    let ch0 = rec.wav.channel(1);
    let start = ch0.first_sound().expect("channel 0 has audio");
    let end = ch0.last_sound().expect("channel 0 has audio");
    assert!(start < 0.5, "audio starts {start:.3} s into the file");
    assert!(
        (end - start - 2.0).abs() < 0.05,
        "2.0 s of audio were sent, the channel holds {:.3} s",
        end - start
    );
    ch0.assert_tone(
        "channel 1",
        700.0,
        AMPLITUDE / 2f64.sqrt(),
        start + 0.01,
        end - 0.01,
    );
    assert!(
        rec.wav.channel(0).is_all_zero(),
        "the agent's stream got no RTP: channel 0 must be all zero"
    );

    // info.
    assert_eq!(info["sessionId"], done.call_id());
    assert_eq!(info["audio"]["format"], "wav");
    assert_eq!(rec.first_null(), None, "{info:#}");
    let contacts = info["contacts"].as_array().expect("contacts");
    let on = |ch: u64| {
        contacts
            .iter()
            .find(|c| c["channel"] == ch)
            .unwrap_or_else(|| panic!("no contact on {ch}: {info:#}"))
    };
    assert_eq!(
        (on(0)["type"].as_str(), on(0)["phoneNumber"].as_str()),
        (Some("agent"), Some("4711"))
    );
    assert_eq!(
        (on(1)["type"].as_str(), on(1)["phoneNumber"].as_str()),
        (Some("customer"), Some("+15551230001"))
    );
    assert_eq!(
        info["metaData"]["sipHeaders"]["X-Tenant-Ref"], "tenant-42",
        "{info:#}"
    );
    assert_eq!(rec.stream(0)["silent"], false);
    assert_eq!(rec.stream(1)["silent"], true);
    assert_eq!(info["metaData"]["gateway"]["endReason"], "bye");
}

#[test]
fn invite_with_content_length_beyond_the_datagram_gets_400() {
    let gw = Gateway::start("");
    SippCall::new("src_content_length_too_big.xml")
        .start(gw.udp_addr())
        .finish();
    assert!(!gw.log().contains("recording started"), "{}", gw.log());
}

#[test]
fn invite_requiring_100rel_gets_420_with_unsupported() {
    let gw = Gateway::start("");
    SippCall::new("src_require_100rel.xml")
        .start(gw.udp_addr())
        .finish();
    assert!(!gw.log().contains("recording started"), "{}", gw.log());
}

#[test]
fn offer_with_only_video_gets_488() {
    let gw = Gateway::start("");
    SippCall::new("src_video_only.xml")
        .start(gw.udp_addr())
        .finish();
    assert!(!gw.log().contains("recording started"), "{}", gw.log());
}

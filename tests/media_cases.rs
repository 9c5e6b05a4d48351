//! Every media misbehaviour of issue 6, as the gateway records it: each `pcaps/media-*.pcap`
//! (made by `examples/make_pcaps.rs`, described in pcaps/README.md) is replayed at speed 1 with
//! `siprec-gateway replay` against a gateway that writes one channel per stream
//! (`[recording] layout = "per-stream"`), and the recording is read back: which tone each channel
//! holds in every 250 ms window, silence (not garbage) where the capture has none, the length
//! against `endTime − startTime`, and the counters in `info.metaData.gateway.streams`. The last
//! tests deliver the same call in every output format and decode it with tools this project did
//! not write (sox, ffmpeg, opusdec).
//!
//! In every capture stream 1 is a 440 Hz tone and stream 2 a 1000 Hz tone, each at 12000/32767
//! peak, whose media start 0.060 s and 0.063 s after the INVITE.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::audio::Wav;
use support::gateway::{self, Gateway, Recording};

/// A guard against hanging; every wait ends earlier when things work.
const WAIT: Duration = Duration::from_secs(30);
/// The captures' tone level (pcaps/README.md: 12000/32767 peak).
const CAPTURE_RMS: f64 = 12000.0 / std::f64::consts::SQRT_2;
/// The analysis window.
const WINDOW: f64 = 0.25;
/// Where stream 1's and stream 2's media start in the recording (seconds after the INVITE,
/// which the gateway answers at once: its timeline starts at its 200 OK).
const START: [f64; 2] = [0.060, 0.063];
const TONES: [f64; 2] = [440.0, 1000.0];
/// How far an edge in the recording may be from where the capture puts it (replay and
/// scheduling jitter, the media thread's wake-ups).
const EDGE: f64 = 0.040;
/// A channel that should be silent has no window above this RMS (µ-law's quietest codes are
/// ±2 and the G.711 step near zero is small: anything louder is audio or garbage).
const QUIET_RMS: f64 = 30.0;

const PER_STREAM: &str = "[recording]\nlayout = \"per-stream\"\n";

#[track_caller]
fn assert_close(what: &str, got: f64, expected: f64, tolerance: f64) {
    assert!(
        (got - expected).abs() <= tolerance,
        "{what}: {got:.3}, expected {expected:.3} ± {tolerance:.3}"
    );
}

/// Replays `capture` (over UDP) against a fresh per-stream gateway with `extra` config and
/// waits for the recording.
fn record(capture: &str, extra: &str) -> (Gateway, Recording) {
    record_within(capture, extra, Duration::from_secs(40))
}

/// [`record`] for a capture longer than half a minute.
fn record_within(capture: &str, extra: &str, limit: Duration) -> (Gateway, Recording) {
    let gw = Gateway::start(&format!("{PER_STREAM}{extra}"));
    gateway::replay_within(capture, gw.udp_addr(), false, limit);
    let rec = gw.wait_for_recording(1, WAIT);
    // Shown when the test fails: what the gateway counted.
    println!("{capture}: {:#}", rec.info["metaData"]["gateway"]["streams"]);
    (gw, rec)
}

/// Where channel `c`'s sound starts, checked against where the capture puts its stream's.
/// Positions inside a channel are then measured from here: a stream is anchored on its first
/// packet's arrival, so the whole channel may sit a few milliseconds off the capture's times.
#[track_caller]
fn start_of(rec: &Recording, c: usize) -> f64 {
    let first = rec.wav.channel(c).first_sound().unwrap_or_else(|| panic!("channel {c} is silent"));
    assert_close(&format!("channel {c} starts (s)"), first, START[c], EDGE);
    first
}

/// What a 250 ms window of a channel must hold.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// This tone at the captures' level, and nearly nothing else.
    Tone(f64),
    /// Silence: no audio and no garbage.
    Quiet,
    /// Not checked (next to an edge, where the window straddles both sides).
    Skip,
}

/// `Tone` between `from` and `to` (seconds in the recording), `Quiet` outside, `Skip` for
/// windows within [`EDGE`] of either.
fn tone_between(freq: f64, from: f64, to: f64) -> impl Fn(f64, f64) -> Expect {
    move |a, b| {
        let near = |edge: f64| a - EDGE < edge && edge < b + EDGE;
        if near(from) || near(to) {
            Expect::Skip
        } else if a >= from && b <= to {
            Expect::Tone(freq)
        } else {
            Expect::Quiet
        }
    }
}

/// Checks every whole 250 ms window of channel `c` against `expect(window start, end)`, and
/// that the other stream's tone is absent wherever a tone is expected (channels kept apart).
#[track_caller]
fn check_windows(wav: &Wav, c: usize, expect: impl Fn(f64, f64) -> Expect) {
    check_windows_with(wav, c, 0.9, expect);
}

/// [`check_windows`] with the share of a window's energy that must be at the tone's frequency
/// (Goertzel). A sender whose clock is off by 0.3 % sends a tone 0.3 % off until the timeline
/// has found the drift, 1.3 Hz at 440 Hz: 70 % in a 250 ms window.
#[track_caller]
fn check_windows_with(wav: &Wav, c: usize, min_share: f64, expect: impl Fn(f64, f64) -> Expect) {
    let ch = wav.channel(c);
    let len = wav.seconds();
    let (mut tones, mut quiet) = (0, 0);
    let mut impure = Vec::new();
    let mut t = 0.0;
    while t + WINDOW <= len + 1e-9 {
        let (a, b) = (t, t + WINDOW);
        let rms = ch.rms(a, b);
        match expect(a, b) {
            Expect::Tone(f) => {
                let share = ch.tone_share(f, a, b);
                let db = 20.0 * (rms / CAPTURE_RMS).log10();
                let describe = || {
                    format!(
                        "channel {c} {a:.2}..{b:.2} s: expected {f} Hz at RMS {CAPTURE_RMS:.0}, got RMS \
                         {rms:.0} ({db:+.1} dB), {:.0}% at {f} Hz (zero crossings say {:.0} Hz)",
                        share * 100.0,
                        ch.zero_crossing_hz(a, b)
                    )
                };
                assert!(db.abs() < 2.0 && share > 0.5, "{}", describe());
                // A window may hold a slip of the timeline (a few samples inserted or dropped at
                // a packet boundary, as tests/support/audio.rs explains): a phase jump that lowers
                // the share at exactly `f`. A tenth of the windows (at least one) may be so.
                if share <= min_share {
                    impure.push(describe());
                }
                for other in TONES.iter().filter(|&&o| o != f) {
                    let leak = ch.tone_share(*other, a, b);
                    assert!(leak < 0.02, "channel {c} {a:.2}..{b:.2} s: {:.1}% at {other} Hz", leak * 100.0);
                }
                tones += 1;
            }
            Expect::Quiet => {
                assert!(rms < QUIET_RMS, "channel {c} {a:.2}..{b:.2} s should be silent, RMS {rms:.0}");
                quiet += 1;
            }
            Expect::Skip => {}
        }
        t += WINDOW;
    }
    assert!(tones + quiet > 0, "channel {c}: no window checked in {len:.2} s");
    assert!(impure.len() <= (tones / 10).max(1), "{} of {tones} windows impure: {impure:#?}", impure.len());
}

/// The length checks every recording passes: the file lasts `endTime − startTime`, which
/// covers the capture's media (`media_s` seconds of it) and little more (the BYE follows the
/// last packet by 50 ms).
#[track_caller]
fn check_length(rec: &Recording, channels: usize, media_s: f64) {
    assert_eq!(rec.wav.channels.len(), channels, "one channel per stream: {:#}", rec.info);
    let wav_s = rec.wav.seconds();
    assert_close("WAV length against endTime − startTime (s)", wav_s, rec.info_seconds(), 0.020);
    assert!(
        wav_s > media_s && wav_s < media_s + 0.3,
        "WAV lasts {wav_s:.3} s for {media_s} s of media"
    );
    assert_eq!(rec.info["metaData"]["gateway"]["endReason"], "bye", "{:#}", rec.info);
}

/// `metaData.gateway.streams[i][key]` as a number.
#[track_caller]
fn stat(rec: &Recording, i: usize, key: &str) -> u64 {
    rec.stream(i)[key]
        .as_u64()
        .unwrap_or_else(|| panic!("streams[{i}].{key} missing: {:#}", rec.info["metaData"]["gateway"]))
}

/// Stream `i`'s counters as (packets, lost, late, duplicates, reanchors).
fn counters(rec: &Recording, i: usize) -> (u64, u64, u64, u64, u64) {
    (
        stat(rec, i, "packets"),
        stat(rec, i, "lost"),
        stat(rec, i, "late"),
        stat(rec, i, "duplicates"),
        stat(rec, i, "reanchors"),
    )
}

/// Silent runs of at least `min` seconds inside `[from, to)`.
fn gaps(rec: &Recording, c: usize, min: f64, from: f64, to: f64) -> Vec<(f64, f64)> {
    rec.wav
        .channel(c)
        .silent_spans(min)
        .into_iter()
        .filter(|&(a, b)| b > from && a < to)
        .collect()
}

/// Stream 2 (channel 1) of every capture but the late and silent ones: the 1000 Hz reference,
/// steady from its start to the end of the media.
#[track_caller]
fn check_reference(rec: &Recording, media_s: f64) {
    check_windows(&rec.wav, 1, tone_between(TONES[1], START[1], START[1] + media_s));
    assert_eq!(counters(rec, 1), ((media_s / 0.02).round() as u64, 0, 0, 0, 0));
}

#[test]
fn packet_loss_is_silence_in_place_and_counted() {
    let (_gw, rec) = record("media-loss.pcap", "");
    check_length(&rec, 2, 3.0);
    // Lost: packet slots 50..58 (0.16 s from 1.0 s), 100 and 125 (20 ms each).
    let holes = [(1.00, 1.16), (2.00, 2.02), (2.50, 2.52)].map(|(a, b)| (START[0] + a, START[0] + b));
    let tone = tone_between(TONES[0], START[0], START[0] + 3.0);
    check_windows(&rec.wav, 0, |a, b| {
        if holes.iter().any(|&(h0, h1)| a < h1 + EDGE && h0 - EDGE < b) { Expect::Skip } else { tone(a, b) }
    });
    // Each hole is silence where the capture has it, with the channel's length kept: the
    // audio after a hole is not pulled forward.
    let s0 = start_of(&rec, 0);
    let found = gaps(&rec, 0, 0.015, START[0] + 0.1, START[0] + 2.9);
    assert_eq!(found.len(), 3, "three holes in channel 0 (starting at {s0:.3} s), found {found:?}");
    for (&(a, b), &(h0, h1)) in found.iter().zip(&holes) {
        // Silence detection can end a sample or two early or late at a zero crossing.
        assert_close("hole start after the channel's (s)", a - s0, h0 - START[0], 0.002);
        assert_close("hole end after the channel's (s)", b - s0, h1 - START[0], 0.002);
    }
    assert_eq!(counters(&rec, 0), (140, 10, 0, 0, 0), "(packets, lost, late, duplicates, reanchors)");
    check_reference(&rec, 3.0);
}

#[test]
fn reordered_packets_land_in_place_late_and_duplicate_ones_are_dropped_and_counted() {
    let (_gw, rec) = record("media-reorder.pcap", "");
    check_length(&rec, 2, 3.0);
    // Slots 20, 40, 41 and 60 arrive 25 ms late (after their successors, inside the 60 ms
    // reorder window): in place, no hole. Slot 100 arrives 250 ms late: dropped, a 20 ms hole.
    let hole = (START[0] + 2.00, START[0] + 2.02);
    let tone = tone_between(TONES[0], START[0], START[0] + 3.0);
    check_windows(&rec.wav, 0, |a, b| if a < hole.1 + EDGE && hole.0 - EDGE < b { Expect::Skip } else { tone(a, b) });
    let s0 = start_of(&rec, 0);
    let found = gaps(&rec, 0, 0.015, START[0] + 0.1, START[0] + 2.9);
    assert_eq!(found.len(), 1, "only the late packet leaves a hole in channel 0 (starting at {s0:.3} s): {found:?}");
    assert_close("hole start after the channel's (s)", found[0].0 - s0, hole.0 - START[0], 0.002);
    assert_close("hole end after the channel's (s)", found[0].1 - s0, hole.1 - START[0], 0.002);
    // 150 packets sent (2 of them twice); the late one is not lost (RFC 3550 §6.4.1).
    assert_eq!(counters(&rec, 0), (149, 0, 1, 2, 0), "(packets, lost, late, duplicates, reanchors)");
    check_reference(&rec, 3.0);
}

#[test]
fn sequence_and_timestamp_wrap_around_changes_nothing() {
    let (_gw, rec) = record("media-wrap.pcap", "");
    check_length(&rec, 2, 3.0);
    // Stream 1: sequence numbers wrap after 0.6 s, timestamps after 1.0 s; stream 2's sequence
    // numbers after 1.5 s.
    check_windows(&rec.wav, 0, tone_between(TONES[0], START[0], START[0] + 3.0));
    for (c, start) in START.into_iter().enumerate() {
        let found = gaps(&rec, c, 0.005, start + 0.05, start + 2.95);
        assert!(found.is_empty(), "channel {c} has holes {found:?}");
    }
    assert_eq!(counters(&rec, 0), (150, 0, 0, 0, 0), "(packets, lost, late, duplicates, reanchors)");
    check_reference(&rec, 3.0);
}

#[test]
fn ssrc_change_mid_stream_reanchors_without_gap_or_overlap() {
    let (_gw, rec) = record("media-ssrc-change.pcap", "");
    check_length(&rec, 2, 3.0);
    // At 1.5 s stream 1 comes from another SSRC with new sequence numbers and timestamps (an
    // SBC failover): re-anchored on arrival, the tone goes on.
    let switch = START[0] + 1.5;
    let tone = tone_between(TONES[0], START[0], START[0] + 3.0);
    check_windows(&rec.wav, 0, |a, b| if a - EDGE < switch && switch < b + EDGE { Expect::Skip } else { tone(a, b) });
    // No gap beyond one packet at the switch, and none anywhere else.
    let found = gaps(&rec, 0, 0.021, START[0] + 0.05, START[0] + 2.95);
    assert!(found.is_empty(), "channel 0 has holes {found:?}");
    // No overlap beyond one packet: the audio after the switch is where the capture puts it,
    // so the channel still ends with the media.
    let s0 = start_of(&rec, 0);
    let end = rec.wav.channel(0).last_sound().expect("sound");
    assert_close("channel 0's sound lasts (s)", end - s0, 3.0, 0.021);
    assert_eq!(counters(&rec, 0), (150, 0, 0, 0, 1), "(packets, lost, late, duplicates, reanchors)");
    check_reference(&rec, 3.0);
}

#[test]
fn stream_that_starts_late_starts_at_its_place() {
    let (_gw, rec) = record("media-late-stream.pcap", "");
    check_length(&rec, 2, 3.0);
    check_windows(&rec.wav, 0, tone_between(TONES[0], START[0], START[0] + 3.0));
    // Stream 2's first packet comes 1.5 s after stream 1's: silence until then.
    let late = START[1] + 1.5;
    check_windows(&rec.wav, 1, tone_between(TONES[1], late, START[1] + 3.0));
    assert_close("channel 1 starts (s)", rec.wav.channel(1).first_sound().expect("sound"), late, EDGE);
    assert_eq!(counters(&rec, 1), (75, 0, 0, 0, 0), "(packets, lost, late, duplicates, reanchors)");
    let first_ms = rec.stream(1)["firstPacketMs"].as_f64().expect("firstPacketMs");
    assert_close("stream 2's first packet (s)", first_ms / 1000.0, late, EDGE);
}

#[test]
fn stream_without_any_media_is_a_full_length_silent_channel_said_so_in_metadata() {
    let (_gw, rec) = record("media-no-media.pcap", "");
    check_length(&rec, 2, 3.0);
    check_windows(&rec.wav, 0, tone_between(TONES[0], START[0], START[0] + 3.0));
    assert!(rec.wav.channel(1).is_all_zero(), "channel 1 has sound but its stream sent nothing");
    assert_eq!(rec.stream(1)["silent"], true, "{:#}", rec.info["metaData"]["gateway"]);
    assert_eq!(rec.stream(0)["silent"], false);
    assert_eq!(counters(&rec, 1), (0, 0, 0, 0, 0));
    assert_eq!(counters(&rec, 0).0, 150);
}

#[test]
fn sender_clock_running_fast_stays_in_step_with_the_other_stream_and_the_wall_clock() {
    let (_gw, rec) = record_within("media-clock-drift.pcap", "", Duration::from_secs(90));
    check_length(&rec, 2, 60.0);
    // Both streams are quiet from 50 to 51 s of real time; stream 1's clock runs 0.3 % fast, so
    // by then it has sent 150 ms more audio than the wall clock has run.
    let (q0, q1) = (50.0, 51.0);
    for c in 0..2 {
        let tone = tone_between(TONES[c], START[c], START[c] + 60.0);
        let quiet = (START[c] + q0, START[c] + q1);
        check_windows_with(&rec.wav, c, 0.6, |a, b| {
            if a - EDGE < quiet.1 && quiet.0 < b + EDGE {
                if a >= quiet.0 + EDGE && b <= quiet.1 - EDGE { Expect::Quiet } else { Expect::Skip }
            } else {
                tone(a, b)
            }
        });
    }
    // Within 20 ms of each other and of the wall clock (issue 6), measured at the quiet span.
    let span = |c: usize| -> (f64, f64) {
        let found = gaps(&rec, c, 0.5, START[c] + 1.0, START[c] + 59.0);
        assert_eq!(found.len(), 1, "channel {c}: one quiet span, found {found:?}");
        found[0]
    };
    let (s0, s1) = (span(0), span(1));
    let (first0, first1) = (start_of(&rec, 0), start_of(&rec, 1));
    assert_close("channel 0's quiet span starts after its start (s)", s0.0 - first0, q0, 0.020);
    assert_close("channel 0's quiet span ends after its start (s)", s0.1 - first0, q1, 0.020);
    assert_close("channel 1's quiet span starts after its start (s)", s1.0 - first1, q0, 0.020);
    assert_close("the quiet spans apart (s)", s0.0 - START[0], s1.0 - START[1], 0.020);
    // 0.3 % of 60 s at 8 kHz is 1440 samples too many, dropped by the timeline.
    let dropped = stat(&rec, 0, "driftDropped");
    eprintln!(
        "drift: quiet span at {:.4}/{:.4} s after each channel's start, channels {:.4} s apart, \
         driftDropped {dropped}, stream 2 {}/{}",
        s0.0 - first0,
        s1.0 - first1,
        (s0.0 - START[0]) - (s1.0 - START[1]),
        stat(&rec, 1, "driftInserted"),
        stat(&rec, 1, "driftDropped"),
    );
    assert!((1150..=1750).contains(&dropped), "driftDropped {dropped}, expected about 1440");
    assert!(stat(&rec, 0, "driftInserted") <= 16, "{:#}", rec.stream(0));
    for key in ["driftDropped", "driftInserted"] {
        assert!(stat(&rec, 1, key) <= 16, "stream 2 runs on our clock: {:#}", rec.stream(1));
    }
    // Every packet arrived once. Over a minute of real time on a busy machine the replay may
    // stall past the reorder window: then packets are dropped as late, and counted so.
    for (i, sent) in [(0, 3009), (1, 3000)] {
        let (packets, lost, late, dups, _) = counters(&rec, i);
        assert_eq!((lost, dups), (0, 0), "stream {i}: {:#}", rec.stream(i));
        assert!(packets <= sent && packets + late >= sent, "stream {i}: {:#}", rec.stream(i));
        assert!(late <= 10, "stream {i}: {:#}", rec.stream(i));
    }
}

#[test]
fn dtmf_events_are_not_written_as_audio() {
    let (_gw, rec) = record("media-dtmf.pcap", "");
    check_length(&rec, 2, 3.0);
    // From 1.2 s for 0.5 s stream 1 sends RFC 4733 events for digit 5 instead of audio: the
    // events are not audio, so that span is silent, and the tone is there on either side.
    let dtmf = (START[0] + 1.2, START[0] + 1.7);
    let tone = tone_between(TONES[0], START[0], START[0] + 3.0);
    check_windows(&rec.wav, 0, |a, b| {
        if a - EDGE < dtmf.1 && dtmf.0 < b + EDGE {
            if a >= dtmf.0 + 0.02 && b <= dtmf.1 - 0.02 { Expect::Quiet } else { Expect::Skip }
        } else {
            tone(a, b)
        }
    });
    let found = gaps(&rec, 0, 0.3, START[0] + 0.1, START[0] + 2.9);
    assert_eq!(found.len(), 1, "one silent span in channel 0: {found:?}");
    // Measured from where the stream's audio begins in the file, so that how late the gateway
    // saw the first packets (machine load) does not count.
    let begins = rec.wav.channel(0).first_sound().expect("channel 0 has sound");
    assert_close("DTMF span start after the stream's start (s)", found[0].0 - begins, dtmf.0 - START[0], 0.025);
    assert_close("DTMF span end after the stream's start (s)", found[0].1 - begins, dtmf.1 - START[0], 0.025);
    // Digits go into metaData only when enabled (off by default: they can be card numbers).
    let text = rec.info.to_string();
    assert!(!text.contains("\"digit") && !text.contains("dtmf"), "digits in info by default: {text}");
    check_reference(&rec, 3.0);
}

/// The 25 event packets take sequence numbers of the stream: they are not counted lost.
#[test]
fn dtmf_packets_are_received_not_lost() {
    let (_gw, rec) = record("media-dtmf.pcap", "");
    // 125 audio packets placed; the 25 event packets arrived, none is lost or late.
    assert_eq!(counters(&rec, 0), (125, 0, 0, 0, 0), "(packets, lost, late, duplicates, reanchors)");
}

#[test]
fn hold_and_resume_by_reinvite_is_silence_and_the_rtp_timeout_waits() {
    // rtp_timeout 1 s, held for 2 s: the hold must suspend it (issue 6), or the gateway ends
    // the call in the middle of the hold.
    let (_gw, rec) = record("media-hold-resume.pcap", "[media]\nrtp_timeout = \"1s\"\n");
    check_length(&rec, 2, 5.0);
    // a=inactive at 1.45 s, RTP stops at 1.5 s; a=sendonly at 3.44 s, RTP again from 3.5 s.
    for c in 0..2 {
        let (held, resumed) = (START[c] + 1.5, START[c] + 3.5);
        let tone = tone_between(TONES[c], START[c], START[c] + 5.0);
        check_windows(&rec.wav, c, |a, b| {
            if a - EDGE < resumed && held < b + EDGE {
                if a >= held + EDGE && b <= resumed - EDGE { Expect::Quiet } else { Expect::Skip }
            } else {
                tone(a, b)
            }
        });
        let found = gaps(&rec, c, 0.5, START[c] + 0.1, START[c] + 4.9);
        assert_eq!(found.len(), 1, "channel {c}: one hold, found {found:?}");
        assert_close("hold start (s)", found[0].0, held, EDGE);
        assert_close("hold end (s)", found[0].1, resumed, EDGE);
        assert_eq!(counters(&rec, c).0, 150, "stream {c}: 1.5 s before and after the hold");
    }
}

#[test]
fn codec_change_by_reinvite_keeps_the_tone() {
    let (_gw, rec) = record("media-codec-change.pcap", "");
    check_length(&rec, 2, 3.0);
    // PCMU until 1.5 s, PCMA after (offered by a re-INVITE 50 ms before): decoded with the
    // codec in force, no garbage, no gap.
    for c in 0..2 {
        let change = START[c] + 1.5;
        let tone = tone_between(TONES[c], START[c], START[c] + 3.0);
        check_windows(&rec.wav, c, |a, b| if a - EDGE < change && change < b + EDGE { Expect::Skip } else { tone(a, b) });
        let found = gaps(&rec, c, 0.005, START[c] + 0.05, START[c] + 2.95);
        assert!(found.is_empty(), "channel {c} has holes {found:?}");
        assert_eq!(counters(&rec, c), (150, 0, 0, 0, 0));
    }
}

#[test]
fn g722_streams_are_recorded_wideband() {
    let (_gw, rec) = record("media-g722.pcap", "");
    // The output rate is the highest stream rate: G.722 is 16 kHz audio.
    assert_eq!(rec.wav.spec.sample_rate, 16000);
    check_length(&rec, 2, 3.0);
    check_windows(&rec.wav, 0, tone_between(TONES[0], START[0], START[0] + 3.0));
    check_reference(&rec, 3.0);
    assert_eq!(rec.stream(0)["codec"], "G722");
}

#[cfg(feature = "opus")]
#[test]
fn opus_streams_are_recorded_fullband() {
    let (_gw, rec) = record("media-opus.pcap", "");
    assert_eq!(rec.wav.spec.sample_rate, 48000);
    check_length(&rec, 2, 3.0);
    check_windows(&rec.wav, 0, tone_between(TONES[0], START[0], START[0] + 3.0));
    check_reference(&rec, 3.0);
    assert_eq!(rec.stream(0)["codec"], "opus");
}

#[test]
fn srtp_streams_are_decrypted() {
    // The capture was encrypted with libsrtp (not our code) under the offer's a=crypto keys.
    let (_gw, rec) = record("media-srtp.pcap", "");
    check_length(&rec, 2, 3.0);
    check_windows(&rec.wav, 0, tone_between(TONES[0], START[0], START[0] + 3.0));
    check_reference(&rec, 3.0);
}

/// The SRTP capture itself, without the gateway: every RTP packet of stream 1 decrypts with the
/// key its m-line offers (libsrtp encrypted it, our receiver decrypts it) to the 440 Hz tone, and
/// a tampered packet does not. A check of the capture that runs before the media wiring does.
#[test]
fn srtp_capture_decrypts_with_the_offered_key_to_the_tone() {
    use siprec_gateway::media::g711::{self, Law};
    use siprec_gateway::media::srtp::{SrtpReceiver, parse_crypto};

    let bytes = std::fs::read(gateway::capture("media-srtp.pcap")).expect("read capture");
    let mut reader = pcap_file::pcap::PcapReader::new(&bytes[..]).expect("pcap");
    let mut udp: Vec<(u16, Vec<u8>)> = Vec::new();
    while let Some(frame) = reader.next_packet() {
        let frame = frame.expect("frame");
        let sliced = etherparse::SlicedPacket::from_ethernet(&frame.data).expect("Ethernet frame");
        if let Some(etherparse::TransportSlice::Udp(u)) = sliced.transport {
            udp.push((u.destination_port(), u.payload().to_vec()));
        }
    }
    let invite = udp
        .iter()
        .find_map(|(_, d)| String::from_utf8(d.clone()).ok().filter(|t| t.starts_with("INVITE ")))
        .expect("the INVITE");
    // The first m-line's a=crypto: stream 1's key.
    let crypto = invite
        .lines()
        .find_map(|l| l.strip_prefix("a=crypto:"))
        .expect("a=crypto in the offer");
    let mut rx = SrtpReceiver::new(&parse_crypto(crypto).expect("crypto line")).expect("receiver");
    let mut pcm = Vec::new();
    let mut packets = 0;
    for (port, data) in udp.iter().filter(|(port, _)| *port == 34000) {
        let mut packet = data.clone();
        let n = rx.decrypt_rtp(&mut packet).unwrap_or_else(|e| panic!("packet to {port}: {e}"));
        let mut out = [0i16; 160];
        let got = g711::decode(Law::Mu, &packet[12..n], &mut out);
        pcm.extend_from_slice(&out[..got]);
        packets += 1;
        if packets == 10 {
            let mut tampered = data.clone();
            tampered[20] ^= 1;
            assert!(SrtpReceiver::new(&parse_crypto(crypto).unwrap()).unwrap().decrypt_rtp(&mut tampered).is_err());
        }
    }
    assert_eq!(packets, 150);
    let wav = Wav { spec: hound::WavSpec { channels: 1, sample_rate: 8000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int }, channels: vec![pcm] };
    check_windows(&wav, 0, |_, _| Expect::Tone(TONES[0]));
}

// ---- Output formats, decoded by tools this project did not write ----

/// The delivered audio file and info of the first recording, whatever the format.
fn delivered(gw: &Gateway, ext: &str) -> (PathBuf, Value) {
    let line = gw.wait_for_log("recording delivered", WAIT);
    let name = gateway::log_field(&line, "recording").expect("recording= in the log line");
    let dir = gw.output_dir();
    let info: Value = serde_json::from_slice(&std::fs::read(dir.join(format!("{name}.json"))).expect("info"))
        .expect("info is JSON");
    (dir.join(format!("{name}.{ext}")), info)
}

fn info_seconds(info: &Value) -> f64 {
    let t = |k: &str| info[k].as_str().expect(k).parse::<jiff::Timestamp>().expect(k);
    t("endTime").duration_since(t("startTime")).as_secs_f64()
}

/// Decodes `path` to 16-bit PCM WAV with `tool` (`sox`, `ffmpeg` or `opusdec`) and reads it.
fn decode(tool: &str, path: &Path) -> Wav {
    let out = path.with_extension(format!("{tool}.wav"));
    let (p, o) = (path.to_str().expect("path"), out.to_str().expect("path"));
    let args: Vec<&str> = match tool {
        "sox" => vec![p, "-e", "signed-integer", "-b", "16", o],
        "ffmpeg" => vec!["-v", "error", "-y", "-i", p, "-c:a", "pcm_s16le", o],
        // Ogg Opus decodes at 48 kHz whatever the input rate was.
        _ => vec!["--quiet", "--rate", "48000", p, o],
    };
    let run = Command::new(tool)
        .args(&args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool} ({e}): install sox, ffmpeg and opus-tools"));
    assert!(run.status.success(), "{tool} {args:?}: {}", String::from_utf8_lossy(&run.stderr));
    Wav::read(&out)
}

/// Replays the late-stream capture with `format` and checks the decoded file: channel 0 440 Hz
/// throughout, channel 1 silent until 1.56 s and 1000 Hz after, and the length.
fn check_format(format: &str, ext: &str, tool: &str, audio_format: &str, rate: u32) {
    let gw = Gateway::start(&format!("[recording]\nlayout = \"per-stream\"\nformat = \"{format}\"\n"));
    gateway::replay("media-late-stream.pcap", gw.udp_addr(), false);
    let (path, info) = delivered(&gw, ext);
    assert_eq!(info["audio"]["format"], audio_format, "{info:#}");
    let wav = decode(tool, &path);
    assert_eq!((wav.channels.len(), wav.spec.sample_rate), (2, rate), "{}", path.display());
    // File durations equal endTime − startTime (issue 6).
    assert_close("decoded length against endTime − startTime (s)", wav.seconds(), info_seconds(&info), 0.020);
    assert!(wav.seconds() > 3.0 && wav.seconds() < 3.3, "{} s", wav.seconds());
    check_windows(&wav, 0, tone_between(TONES[0], START[0], START[0] + 3.0));
    check_windows(&wav, 1, tone_between(TONES[1], START[1] + 1.5, START[1] + 3.0));
    // A lossy codec spreads a little energy ahead of an onset (pre-echo): where the level
    // reaches half the tone's is the onset.
    let ch = wav.channel(1);
    let onset = (0..)
        .map(|ms| f64::from(ms) / 1000.0)
        .take_while(|&t| t < wav.seconds())
        .find(|&t| ch.rms(t, t + 0.005) > CAPTURE_RMS / 2.0)
        .expect("channel 1 has the tone");
    assert_close("channel 1 starts (s)", onset, START[1] + 1.5, EDGE);
}

#[test]
fn wav_ulaw_output_decodes_with_sox() {
    check_format("wav-ulaw", "wav", "sox", "wav", 8000);
}

#[cfg(feature = "mp3")]
#[test]
fn mp3_output_decodes_with_ffmpeg() {
    check_format("mp3", "mp3", "ffmpeg", "mp3", 8000);
}

/// Also checks that the channels stay apart: coded jointly as stereo, libopus let channel 0's
/// onset into the silent channel 1 at -14 dB for ~100 ms; src/media/encode/opus.rs now codes
/// each channel as its own stream.
#[cfg(feature = "opus")]
#[test]
fn opus_output_decodes_with_opusdec() {
    check_format("opus", "opus", "opusdec", "opus", 48000);
}

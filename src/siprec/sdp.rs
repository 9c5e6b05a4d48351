//! SDP for the recording server: reads what we need from a SIPREC offer (RFC 7866 §8, SDP per
//! RFC 8866) and writes the answer (RFC 3264 §6).
//!
//! Parsing is delegated to `sdp-types` after a normalisation pass: lines are trimmed (it rejects
//! `v=0 ` with a trailing space), blank lines dropped, runs of spaces in `m=`/`c=` collapsed, and
//! only the `v=`, `c=`, `m=` and `a=` lines are passed on. The others (`o=`, `s=`, `t=`, `b=`,
//! ...) carry nothing the recorder uses, and SBCs get them wrong often enough (missing `t=`,
//! non-numeric session versions, odd `b=` types) that validating them would only turn
//! recordable calls into 488s.
//!
//! Per audio stream it chooses the one codec we record (the best we decode: Opus when built
//! with the `opus` feature, then G.722, L16, G.711) and accepts RFC 4733 telephone-event and
//! RFC 3389 comfort noise at that codec's clock rate, so the SRC neither falls back to in-band
//! DTMF nor stops sending without saying so. It does not negotiate anything else (no `a=fmtp`
//! parameters are read, no `a=ptime`), and it does not support SRTP (`a=crypto`) yet.

use std::fmt::Write as _;
use std::net::IpAddr;

/// Why an SDP body could not be used.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SdpError {
    /// The text is not an SDP session description (`sdp-types` rejected it; the message says
    /// which line and field).
    #[error("invalid SDP: {0}")]
    Syntax(String),
}

/// The parts of a session description the recorder uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// Session-level `c=` address, if present and parseable.
    pub connection: Option<IpAddr>,
    /// The `m=` sections in offer order (the answer must keep this order, RFC 3264 §6).
    pub media: Vec<MediaDescription>,
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// Media type: "audio", "video", ...
    pub media: String,
    /// Transport port (0 = the offerer disabled this stream).
    pub port: u16,
    /// Transport protocol, e.g. "RTP/AVP".
    pub protocol: String,
    /// Format list in offer order (RTP payload types for RTP profiles).
    pub formats: Vec<String>,
    /// Parseable `a=rtpmap` lines.
    pub rtpmaps: Vec<RtpMap>,
    /// `a=label` (RFC 4574), which SIPREC metadata uses to name the stream (RFC 7866 §7.1.1).
    pub label: Option<String>,
    /// Media direction; media-level overrides session-level, default sendrecv (RFC 8866 §6.7).
    pub direction: Direction,
    /// Media-level `c=` address, if present and parseable.
    pub connection: Option<IpAddr>,
    /// Media-level `a=crypto` values (RFC 4568 SDES), in offer order; parsed by
    /// `media::srtp::choose`. They carry keys: never log them.
    pub crypto: Vec<String>,
}

/// One `a=rtpmap` line (RFC 8866 §6.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    /// RTP payload type.
    pub payload_type: u8,
    /// Encoding name as sent (case is not significant).
    pub encoding: String,
    /// Clock rate in Hz.
    pub clock_rate: u32,
    /// Channel count, for audio, when given.
    pub channels: Option<u8>,
}

/// Media direction attribute (RFC 8866 §6.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// `a=sendrecv` (the default).
    #[default]
    SendRecv,
    /// `a=sendonly`: what a SIPREC client normally offers.
    SendOnly,
    /// `a=recvonly`.
    RecvOnly,
    /// `a=inactive`: e.g. a paused recording.
    Inactive,
}

impl Direction {
    fn from_attribute(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "sendrecv" => Some(Self::SendRecv),
            "sendonly" => Some(Self::SendOnly),
            "recvonly" => Some(Self::RecvOnly),
            "inactive" => Some(Self::Inactive),
            _ => None,
        }
    }
}

/// The audio codecs the recorder decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioCodec {
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
    /// G.722 at 64 kbit/s: 16 kHz audio on an 8000 Hz RTP clock (RFC 3551 §4.5.2).
    G722,
    /// Linear 16-bit big-endian PCM (RFC 3551 §4.5.11); stereo is down-mixed when decoded.
    L16 {
        /// Sample rate, which is also the RTP clock rate.
        rate: u32,
        /// 1 or 2.
        channels: u8,
    },
    /// Opus (RFC 7587), decoded at 48 kHz; only chosen when built with the `opus` feature.
    Opus,
}

/// L16 sample rates we accept (the resampler handles each against any other of them).
const L16_RATES: [u32; 7] = [8000, 16000, 22050, 24000, 32000, 44100, 48000];

/// The clock rate of G.711, G.722's RTP clock, and static comfort noise (PT 13).
const NARROWBAND_CLOCK: u32 = 8000;

/// The codecs this build decodes, best first, for messages.
pub const DECODED_CODECS: &str = if cfg!(feature = "opus") {
    "Opus, G722, L16, PCMU, PCMA"
} else {
    "G722, L16, PCMU, PCMA"
};

impl AudioCodec {
    /// Encoding name as written in `a=rtpmap`.
    pub fn encoding_name(self) -> &'static str {
        match self {
            Self::Pcmu => "PCMU",
            Self::Pcma => "PCMA",
            Self::G722 => "G722",
            Self::L16 { .. } => "L16",
            // RFC 7587 §7: the name is lower case by convention.
            Self::Opus => "opus",
        }
    }

    /// The RTP timestamp rate (RFC 3551 §4.5.2: 8000 for G.722 although it samples at 16 kHz;
    /// RFC 7587 §4.1: always 48000 for Opus).
    pub fn rtp_clock_rate(self) -> u32 {
        match self {
            Self::Pcmu | Self::Pcma | Self::G722 => NARROWBAND_CLOCK,
            Self::L16 { rate, .. } => rate,
            Self::Opus => 48000,
        }
    }

    /// The sample rate of the decoded audio.
    pub fn audio_rate(self) -> u32 {
        match self {
            Self::G722 => 16000,
            other => other.rtp_clock_rate(),
        }
    }

    /// The channel count written in `a=rtpmap`, when it is not the default of 1 (RFC 7587 §7:
    /// Opus is always `/2`, whatever the sender sends).
    fn rtpmap_channels(self) -> Option<u8> {
        match self {
            Self::L16 { channels: 2, .. } | Self::Opus => Some(2),
            _ => None,
        }
    }

    /// How much we want this codec: the best-sounding that we decode wins.
    fn preference(self) -> u8 {
        match self {
            Self::Opus => 4,
            Self::G722 => 3,
            Self::L16 { .. } => 2,
            Self::Pcmu | Self::Pcma => 1,
        }
    }

    /// RFC 3551 §6 static payload types of the codecs we decode.
    fn from_static_payload_type(pt: u8) -> Option<Self> {
        match pt {
            0 => Some(Self::Pcmu),
            8 => Some(Self::Pcma),
            9 => Some(Self::G722),
            10 => Some(Self::L16 {
                rate: 44100,
                channels: 2,
            }),
            11 => Some(Self::L16 {
                rate: 44100,
                channels: 1,
            }),
            _ => None,
        }
    }

    /// The codec an `a=rtpmap` names, if we decode it at that rate and channel count.
    fn from_rtpmap(map: &RtpMap) -> Option<Self> {
        let name = map.encoding.as_str();
        let mono = map.channels.is_none_or(|c| c == 1);
        let narrowband = map.clock_rate == NARROWBAND_CLOCK && mono;
        if name.eq_ignore_ascii_case("PCMU") && narrowband {
            Some(Self::Pcmu)
        } else if name.eq_ignore_ascii_case("PCMA") && narrowband {
            Some(Self::Pcma)
        } else if name.eq_ignore_ascii_case("G722") && narrowband {
            Some(Self::G722)
        } else if name.eq_ignore_ascii_case("L16") && L16_RATES.contains(&map.clock_rate) {
            let channels = map.channels.unwrap_or(1);
            (channels == 1 || channels == 2).then_some(Self::L16 {
                rate: map.clock_rate,
                channels,
            })
        } else if name.eq_ignore_ascii_case("opus")
            && map.clock_rate == 48000
            && cfg!(feature = "opus")
        {
            // RFC 7587 §7 requires `/2`; a missing or `/1` count is tolerated.
            map.channels.is_none_or(|c| c <= 2).then_some(Self::Opus)
        } else {
            None
        }
    }
}

/// What the recorder will receive on one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChosenCodec {
    /// Payload type the offerer will use for the codec.
    pub payload_type: u8,
    /// The codec.
    pub codec: AudioCodec,
    /// Payload type of RFC 4733 telephone-event at the codec's clock rate, if offered.
    pub telephone_event: Option<u8>,
    /// Payload type of RFC 3389 comfort noise at the codec's clock rate, if offered.
    pub comfort_noise: Option<u8>,
}

impl MediaDescription {
    /// The connection address for this stream: media-level `c=`, else session-level.
    pub fn connection_or(&self, session: &SessionDescription) -> Option<IpAddr> {
        self.connection.or(session.connection)
    }

    /// The best codec offered that we decode (see [`AudioCodec`]; among equals, the first in
    /// offer order; static payload types count without an rtpmap), plus telephone-event and
    /// comfort noise at its clock rate if offered (RFC 4733 §2.1: the same clock as the audio).
    /// None for non-audio or nothing decodable.
    pub fn choose_codec(&self) -> Option<ChosenCodec> {
        if !self.media.eq_ignore_ascii_case("audio") {
            return None;
        }
        let (payload_type, codec) = self
            .payload_types()
            .filter_map(|pt| self.decodable(pt).map(|codec| (pt, codec)))
            // max_by_key returns the last of equal maxima: the reversed index makes the first
            // in offer order win.
            .enumerate()
            .max_by_key(|(i, (_, codec))| (codec.preference(), std::cmp::Reverse(*i)))
            .map(|(_, chosen)| chosen)?;
        let clock = codec.rtp_clock_rate();
        let named = |name: &str| {
            self.payload_types().find(|&pt| {
                self.rtpmap(pt)
                    .is_some_and(|m| m.encoding.eq_ignore_ascii_case(name) && m.clock_rate == clock)
            })
        };
        let telephone_event = named("telephone-event");
        // RFC 3551 §6: PT 13 is CN/8000 without an rtpmap.
        let static_cn = clock == NARROWBAND_CLOCK
            && self.payload_types().any(|pt| pt == 13)
            && self.rtpmap(13).is_none();
        let comfort_noise = named("CN").or(static_cn.then_some(13));
        Some(ChosenCodec {
            payload_type,
            codec,
            telephone_event,
            comfort_noise,
        })
    }

    /// The formats that are RTP payload types, in offer order.
    fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.formats.iter().filter_map(|f| f.parse::<u8>().ok())
    }

    fn rtpmap(&self, payload_type: u8) -> Option<&RtpMap> {
        self.rtpmaps.iter().find(|m| m.payload_type == payload_type)
    }

    /// The codec this payload type carries, if we decode it. An rtpmap wins over the static
    /// assignment (RFC 3551 §6 allows rebinding, however rare).
    fn decodable(&self, payload_type: u8) -> Option<AudioCodec> {
        match self.rtpmap(payload_type) {
            Some(map) => AudioCodec::from_rtpmap(map),
            None => AudioCodec::from_static_payload_type(payload_type),
        }
    }
}

/// The recorder's decision for one offered `m=` line.
#[derive(Clone, PartialEq, Eq)]
pub struct MediaAnswer {
    /// Local RTP port; 0 rejects the stream.
    pub port: u16,
    /// The codec to answer with; a line without one is rejected.
    pub codec: Option<ChosenCodec>,
    /// Our `a=crypto` value for an accepted `RTP/SAVP` line (RFC 4568 §7.1.2: same tag and
    /// suite as the offer, our key), written as `a=crypto:{value}`.
    pub crypto: Option<String>,
}

// By hand: the crypto value carries our key.
impl std::fmt::Debug for MediaAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaAnswer")
            .field("port", &self.port)
            .field("codec", &self.codec)
            .field("crypto", &self.crypto.as_ref().map(|_| "(redacted)"))
            .finish()
    }
}

/// One m= line per offered m-line, same order and media type; accepted lines: `a=recvonly`, the
/// offer's `a=label`, rtpmap for the chosen codec, telephone-event (with fmtp 0-16) and comfort
/// noise when offered, each with the offer's payload type; rejected lines: port 0 and the
/// offer's first format. CRLF line endings. o= with the given ids, s=-, c=IN IP4/IP6 address,
/// t=0 0.
///
/// An accepted line whose offer is `a=inactive` or `a=recvonly` is answered `a=inactive`, as
/// RFC 3264 §6.1 requires. A missing entry in `answers` rejects the line, and so does a port 0
/// in the offer (RFC 3264 §6: a stream rejected in the offer stays rejected).
pub fn build_answer(
    offer: &SessionDescription,
    answers: &[MediaAnswer],
    address: IpAddr,
    session_id: u64,
    session_version: u64,
) -> String {
    let addrtype = match address {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    };
    let mut sdp = String::new();
    // `write!` into a String cannot fail; the results are ignored for that reason.
    let _ = write!(
        sdp,
        "v=0\r\no=- {session_id} {session_version} IN {addrtype} {address}\r\ns=-\r\nc=IN {addrtype} {address}\r\nt=0 0\r\n"
    );
    for (i, media) in offer.media.iter().enumerate() {
        let accepted = answers
            .get(i)
            .filter(|a| a.port != 0 && media.port != 0)
            .and_then(|a| a.codec.map(|codec| (a.port, codec, a.crypto.as_deref())));
        let Some((port, chosen, crypto)) = accepted else {
            // RFC 3264 §6: a rejected stream keeps its line, with port 0 and at least one format.
            let format = media.formats.first().map_or("0", String::as_str);
            let _ = write!(sdp, "m={} 0 {} {format}\r\n", media.media, media.protocol);
            continue;
        };
        let _ = write!(
            sdp,
            "m={} {port} {} {}",
            media.media, media.protocol, chosen.payload_type
        );
        for pt in [chosen.telephone_event, chosen.comfort_noise]
            .into_iter()
            .flatten()
        {
            let _ = write!(sdp, " {pt}");
        }
        let clock = chosen.codec.rtp_clock_rate();
        let _ = write!(
            sdp,
            "\r\na=rtpmap:{} {}/{clock}",
            chosen.payload_type,
            chosen.codec.encoding_name()
        );
        if let Some(channels) = chosen.codec.rtpmap_channels() {
            let _ = write!(sdp, "/{channels}");
        }
        let _ = write!(sdp, "\r\n");
        if let Some(te) = chosen.telephone_event {
            // RFC 4733 §2.4.1: events 0-15 are the DTMF digits, 16 is flash.
            let _ = write!(
                sdp,
                "a=rtpmap:{te} telephone-event/{clock}\r\na=fmtp:{te} 0-16\r\n"
            );
        }
        if let Some(cn) = chosen.comfort_noise {
            let _ = write!(sdp, "a=rtpmap:{cn} CN/{clock}\r\n");
        }
        if let Some(label) = &media.label {
            let _ = write!(sdp, "a=label:{label}\r\n");
        }
        if let Some(crypto) = crypto {
            let _ = write!(sdp, "a=crypto:{crypto}\r\n");
        }
        let direction = match media.direction {
            Direction::SendOnly | Direction::SendRecv => "recvonly",
            Direction::RecvOnly | Direction::Inactive => "inactive",
        };
        let _ = write!(sdp, "a={direction}\r\n");
    }
    sdp
}

/// Parses an SDP session description (see the module doc for what is tolerated).
pub fn parse(text: &str) -> Result<SessionDescription, SdpError> {
    let session = sdp_types::Session::parse(normalize(text).as_bytes())
        .map_err(|e| SdpError::Syntax(e.to_string()))?;
    let session_direction = direction_of(&session.attributes).unwrap_or_default();
    let media = session
        .medias
        .iter()
        .map(|m| MediaDescription {
            media: m.media.clone(),
            port: m.port,
            protocol: m.proto.clone(),
            formats: m.fmt.split_whitespace().map(str::to_owned).collect(),
            rtpmaps: m
                .attributes_typed::<sdp_types::RtpMap>()
                .filter_map(Result::ok)
                .map(|r| RtpMap {
                    payload_type: r.payload_type,
                    encoding: r.encoding_name,
                    clock_rate: r.clock_rate,
                    channels: r.encoding_params.and_then(|p| p.trim().parse().ok()),
                })
                .collect(),
            label: m
                .attributes
                .iter()
                .find(|a| a.attribute.eq_ignore_ascii_case("label"))
                .and_then(|a| a.value.as_deref())
                .map(str::trim)
                // The label is echoed into the answer: keep only printable text.
                .filter(|l| !l.is_empty() && !l.contains(char::is_control))
                .map(str::to_owned),
            direction: direction_of(&m.attributes).unwrap_or(session_direction),
            connection: m.connections.iter().find_map(connection_ip),
            crypto: m
                .attributes
                .iter()
                .filter(|a| a.attribute.eq_ignore_ascii_case("crypto"))
                .filter_map(|a| a.value.as_deref())
                .map(|v| v.trim().to_owned())
                .collect(),
        })
        .collect();
    Ok(SessionDescription {
        connection: session.connection.as_ref().and_then(connection_ip),
        media,
    })
}

/// The last direction attribute in the list, if any.
fn direction_of(attributes: &[sdp_types::Attribute]) -> Option<Direction> {
    attributes
        .iter()
        .rev()
        .find_map(|a| Direction::from_attribute(&a.attribute))
}

/// The unicast address of a `c=` line; `None` for placeholders SBCs send (e.g. a masked
/// `X.X.X.X`), so the caller falls back to the session level or the packet source.
fn connection_ip(connection: &sdp_types::Connection) -> Option<IpAddr> {
    connection.try_address().ok().map(|a| a.ip)
}

/// Keeps only the lines we read, trimmed, in a form `sdp-types` accepts (see module doc).
fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // A lone CR is taken as a line end too: sdp-types rejects a CR inside a line, and some
    // stacks end lines with CR only. Lines with NUL are dropped for the same reason.
    for line in text.split(['\r', '\n']).map(str::trim) {
        if line.contains('\0') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key {
            "v" | "a" => out.push_str(line),
            "m" | "c" => {
                out.push_str(key);
                out.push('=');
                for (i, word) in value.split_whitespace().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    out.push_str(word);
                }
            }
            _ => continue,
        }
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const TWO_STREAM_OFFER: &str = "v=0\r\n\
o=SRC-Test 4711 2 IN IP4 198.51.100.7\r\n\
s=SIP Call\r\n\
c=IN IP4 198.51.100.7\r\n\
t=0 0\r\n\
m=audio 31000 RTP/AVP 0 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendonly\r\n\
a=label:1\r\n\
m=audio 31002 RTP/AVP 0 101\r\n\
c=IN IP4 198.51.100.9\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=sendonly\r\n\
a=label:2\r\n";

    fn answers_for(offer: &SessionDescription, first_port: u16) -> Vec<MediaAnswer> {
        offer
            .media
            .iter()
            .zip((first_port..).step_by(2))
            .map(|(m, port)| {
                let codec = m.choose_codec();
                MediaAnswer {
                    port: if codec.is_some() { port } else { 0 },
                    codec,
                    crypto: None,
                }
            })
            .collect()
    }

    #[test]
    fn parses_two_stream_siprec_offer() {
        let sdp = parse(TWO_STREAM_OFFER).unwrap();
        assert_eq!(
            sdp.connection,
            Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)))
        );
        assert_eq!(sdp.media.len(), 2);
        let m = &sdp.media[0];
        assert_eq!(
            (m.media.as_str(), m.port, m.protocol.as_str()),
            ("audio", 31000, "RTP/AVP")
        );
        assert_eq!(m.formats, ["0", "101"]);
        assert_eq!(m.label.as_deref(), Some("1"));
        assert_eq!(m.direction, Direction::SendOnly);
        assert_eq!(m.connection, None);
        assert_eq!(
            m.connection_or(&sdp),
            Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)))
        );
        assert_eq!(
            m.rtpmaps[1],
            RtpMap {
                payload_type: 101,
                encoding: "telephone-event".into(),
                clock_rate: 8000,
                channels: None
            }
        );
        assert_eq!(
            sdp.media[1].connection_or(&sdp),
            Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9)))
        );
    }

    #[test]
    fn answer_for_two_stream_offer_has_every_line() {
        let offer = parse(TWO_STREAM_OFFER).unwrap();
        let answers = answers_for(&offer, 40000);
        let answer = build_answer(
            &offer,
            &answers,
            IpAddr::V4(Ipv4Addr::new(203, 0, 113, 5)),
            77,
            1,
        );
        let expected = [
            "v=0",
            "o=- 77 1 IN IP4 203.0.113.5",
            "s=-",
            "c=IN IP4 203.0.113.5",
            "t=0 0",
            "m=audio 40000 RTP/AVP 0 101",
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-16",
            "a=label:1",
            "a=recvonly",
            "m=audio 40002 RTP/AVP 0 101",
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-16",
            "a=label:2",
            "a=recvonly",
        ];
        assert_eq!(answer, expected.map(|l| format!("{l}\r\n")).concat());
        // The answer itself parses back with the same shape.
        let reparsed = parse(&answer).unwrap();
        assert_eq!(reparsed.media.len(), 2);
        assert_eq!(reparsed.media[1].direction, Direction::RecvOnly);
    }

    #[test]
    fn video_line_is_rejected_with_port_zero_and_first_format() {
        let offer = parse(
            "v=0\r\nc=IN IP6 2001:db8::7\r\nm=audio 5004 RTP/AVP 8\r\na=label:a_leg\r\nm=video 5006 RTP/AVP 96 97\r\na=rtpmap:96 H264/90000\r\na=label:v\r\n",
        )
        .unwrap();
        assert_eq!(offer.media[1].choose_codec(), None);
        let answers = answers_for(&offer, 6000);
        let answer = build_answer(&offer, &answers, "2001:db8::1".parse().unwrap(), 1, 2);
        assert!(answer.starts_with(
            "v=0\r\no=- 1 2 IN IP6 2001:db8::1\r\ns=-\r\nc=IN IP6 2001:db8::1\r\nt=0 0\r\n"
        ));
        assert!(
            answer.ends_with("a=label:a_leg\r\na=recvonly\r\nm=video 0 RTP/AVP 96\r\n"),
            "{answer}"
        );
    }

    #[test]
    fn missing_or_portless_answer_rejects_the_line() {
        let offer = parse(TWO_STREAM_OFFER).unwrap();
        let chosen = offer.media[0].choose_codec();
        let answer = build_answer(
            &offer,
            &[MediaAnswer {
                port: 0,
                codec: chosen,
                crypto: None,
            }],
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            1,
            1,
        );
        assert_eq!(
            answer.matches("m=audio 0 RTP/AVP 0\r\n").count(),
            2,
            "{answer}"
        );
    }

    #[test]
    fn line_disabled_in_the_offer_stays_rejected() {
        let offer = parse("v=0\r\nm=audio 0 RTP/AVP 8\r\n").unwrap();
        let answer = MediaAnswer {
            port: 4000,
            codec: offer.media[0].choose_codec(),
            crypto: None,
        };
        let answer = build_answer(&offer, &[answer], IpAddr::V4(Ipv4Addr::LOCALHOST), 1, 1);
        assert!(
            answer.ends_with("t=0 0\r\nm=audio 0 RTP/AVP 8\r\n"),
            "{answer}"
        );
    }

    #[test]
    fn pcma_chosen_when_only_pcma_offered() {
        let sdp = parse("v=0\nm=audio 7000 RTP/AVP 18 8 101\na=rtpmap:18 G729/8000\na=rtpmap:8 PCMA/8000\na=rtpmap:101 telephone-event/8000\n").unwrap();
        assert_eq!(
            sdp.media[0].choose_codec(),
            Some(ChosenCodec {
                payload_type: 8,
                codec: AudioCodec::Pcma,
                telephone_event: Some(101),
                comfort_noise: None,
            })
        );
    }

    #[test]
    fn static_payload_types_count_without_rtpmap_and_offer_order_wins() {
        let sdp = parse("v=0\r\nm=audio 7000 RTP/AVP 8 0\r\n").unwrap();
        let chosen = sdp.media[0].choose_codec().unwrap();
        assert_eq!(
            (chosen.payload_type, chosen.codec, chosen.telephone_event),
            (8, AudioCodec::Pcma, None)
        );
    }

    #[test]
    fn dynamic_payload_type_matched_by_name_case_insensitively_at_8000_only() {
        let sdp = parse("v=0\r\nm=audio 7000 RTP/AVP 110 111 98 97\r\na=rtpmap:110 pcmu/16000\r\na=rtpmap:111 PCMA/8000/2\r\na=rtpmap:98 telephone-event/48000\r\na=rtpmap:97 pcmu/8000\r\n").unwrap();
        assert_eq!(
            sdp.media[0].choose_codec(),
            Some(ChosenCodec {
                payload_type: 97,
                codec: AudioCodec::Pcmu,
                telephone_event: None,
                comfort_noise: None,
            })
        );
    }

    #[test]
    fn telephone_event_is_carried_into_the_answer_with_its_payload_type() {
        let offer = parse("v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 7000 RTP/AVP 0 96\r\na=rtpmap:96 TELEPHONE-EVENT/8000\r\n").unwrap();
        let answers = answers_for(&offer, 9000);
        assert_eq!(answers[0].codec.unwrap().telephone_event, Some(96));
        let answer = build_answer(&offer, &answers, IpAddr::V4(Ipv4Addr::LOCALHOST), 1, 1);
        assert!(answer.contains("m=audio 9000 RTP/AVP 0 96\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-16\r\na=recvonly\r\n"), "{answer}");
    }

    #[test]
    fn undecodable_audio_gives_no_codec() {
        let sdp = parse("v=0\r\nm=audio 7000 RTP/AVP 18 3 96\r\na=rtpmap:18 G729/8000\r\na=rtpmap:96 L16/11025\r\n").unwrap();
        assert_eq!(sdp.media[0].choose_codec(), None);
    }

    #[test]
    fn best_decodable_codec_wins_over_offer_order() {
        let sdp = parse("v=0\r\nm=audio 7000 RTP/AVP 0 8 96 9 97 13 101\r\na=rtpmap:96 L16/16000\r\na=rtpmap:97 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n").unwrap();
        let chosen = sdp.media[0].choose_codec().unwrap();
        let expected = if cfg!(feature = "opus") {
            // telephone-event/8000 and static CN do not match Opus's 48 kHz clock.
            (97, AudioCodec::Opus, None, None)
        } else {
            (9, AudioCodec::G722, Some(101), Some(13))
        };
        assert_eq!(
            (
                chosen.payload_type,
                chosen.codec,
                chosen.telephone_event,
                chosen.comfort_noise
            ),
            expected
        );
    }

    #[test]
    fn l16_accepted_at_wideband_rates_mono_or_stereo() {
        let sdp = parse("v=0\r\nm=audio 7000 RTP/AVP 0 96\r\na=rtpmap:96 L16/48000/2\r\nm=audio 7002 RTP/AVP 11 0\r\nm=audio 7004 RTP/AVP 0 98\r\na=rtpmap:98 L16/16000/6\r\n").unwrap();
        assert_eq!(
            sdp.media[0].choose_codec().unwrap().codec,
            AudioCodec::L16 {
                rate: 48000,
                channels: 2
            }
        );
        assert_eq!(
            sdp.media[1].choose_codec().unwrap().codec,
            AudioCodec::L16 {
                rate: 44100,
                channels: 1
            }
        );
        assert_eq!(sdp.media[2].choose_codec().unwrap().codec, AudioCodec::Pcmu);
    }

    #[test]
    fn events_and_comfort_noise_must_share_the_codec_clock() {
        let sdp = parse("v=0\r\nm=audio 7000 RTP/AVP 96 100 101 102 103\r\na=rtpmap:96 L16/16000\r\na=rtpmap:100 telephone-event/8000\r\na=rtpmap:101 telephone-event/16000\r\na=rtpmap:102 CN/8000\r\na=rtpmap:103 CN/16000\r\n").unwrap();
        let chosen = sdp.media[0].choose_codec().unwrap();
        assert_eq!(
            (chosen.telephone_event, chosen.comfort_noise),
            (Some(101), Some(103))
        );
    }

    #[test]
    fn g722_answer_keeps_the_8000_clock_and_accepts_events_and_cn() {
        let offer = parse("v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 7000 RTP/AVP 9 0 101 19\r\na=rtpmap:9 G722/8000\r\na=rtpmap:101 telephone-event/8000\r\na=rtpmap:19 CN/8000\r\na=sendonly\r\n").unwrap();
        let answers = answers_for(&offer, 9000);
        let answer = build_answer(&offer, &answers, IpAddr::V4(Ipv4Addr::LOCALHOST), 1, 1);
        assert!(answer.contains("m=audio 9000 RTP/AVP 9 101 19\r\na=rtpmap:9 G722/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=rtpmap:19 CN/8000\r\na=recvonly\r\n"), "{answer}");
    }

    #[test]
    fn stereo_l16_answer_names_its_channels() {
        let offer = parse("v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 7000 RTP/AVP 10\r\n").unwrap();
        let answer = build_answer(
            &offer,
            &answers_for(&offer, 9000),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            1,
            1,
        );
        assert!(
            answer.contains("m=audio 9000 RTP/AVP 10\r\na=rtpmap:10 L16/44100/2\r\n"),
            "{answer}"
        );
    }

    #[cfg(feature = "opus")]
    #[test]
    fn opus_answer_uses_48000_and_two_channels() {
        let offer = parse("v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 7000 RTP/AVP 111 0 110\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 useinbandfec=1\r\na=rtpmap:110 telephone-event/48000\r\n").unwrap();
        let answer = build_answer(
            &offer,
            &answers_for(&offer, 9000),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            1,
            1,
        );
        assert!(answer.contains("m=audio 9000 RTP/AVP 111 110\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:110 telephone-event/48000\r\na=fmtp:110 0-16\r\n"), "{answer}");
    }

    #[cfg(not(feature = "opus"))]
    #[test]
    fn opus_is_not_chosen_without_the_feature() {
        let sdp =
            parse("v=0\r\nm=audio 7000 RTP/AVP 111 8\r\na=rtpmap:111 opus/48000/2\r\n").unwrap();
        assert_eq!(sdp.media[0].choose_codec().unwrap().codec, AudioCodec::Pcma);
    }

    #[test]
    fn inactive_offer_is_answered_inactive() {
        let offer = parse("v=0\r\na=inactive\r\nm=audio 7000 RTP/AVP 0\r\nm=audio 7002 RTP/AVP 0\r\na=sendonly\r\n").unwrap();
        assert_eq!(offer.media[0].direction, Direction::Inactive);
        assert_eq!(offer.media[1].direction, Direction::SendOnly);
        let answer = build_answer(
            &offer,
            &answers_for(&offer, 100),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            1,
            1,
        );
        assert!(
            answer.contains("m=audio 100 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=inactive\r\n"),
            "{answer}"
        );
        assert!(answer.ends_with("a=recvonly\r\n"));
    }

    #[test]
    fn tolerates_sbc_quirks() {
        // Trailing spaces (including on v=), no o=/s=/t=, bad o= version, double spaces,
        // masked c= address, blank lines, bare LF.
        let sdp = parse("v=0 \n\no=BW 1 notanumber IN IP4 X\ns=\nc=IN IP4 X.X.X.X\nm=audio  5000  RTP/AVP  0 \na=label: 7 \na=sendonly \n").unwrap();
        assert_eq!(sdp.connection, None);
        let m = &sdp.media[0];
        assert_eq!(
            (m.port, m.formats.as_slice()),
            (5000, ["0".to_owned()].as_slice())
        );
        assert_eq!(m.label.as_deref(), Some("7"));
        assert_eq!(m.direction, Direction::SendOnly);
    }

    #[test]
    fn label_with_control_characters_is_dropped() {
        let sdp =
            parse("v=0\r\nm=audio 5000 RTP/AVP 0\r\na=label:1\x07\r\na=sendonly\0\r\n").unwrap();
        assert_eq!(sdp.media[0].label, None);
        assert_eq!(sdp.media[0].direction, Direction::SendRecv);
    }

    #[test]
    fn lone_cr_ends_a_line() {
        let sdp = parse("v=0\rm=audio 5000 RTP/AVP 0\ra=label:2\r").unwrap();
        assert_eq!(sdp.media[0].label.as_deref(), Some("2"));
    }

    #[test]
    fn rejects_non_sdp() {
        assert!(matches!(parse(""), Err(SdpError::Syntax(_))));
        assert!(matches!(parse("<recording/>"), Err(SdpError::Syntax(_))));
        assert!(matches!(parse("v=1\r\n"), Err(SdpError::Syntax(_))));
        assert!(matches!(
            parse("v=0\r\nm=audio notaport RTP/AVP 0\r\n"),
            Err(SdpError::Syntax(_))
        ));
    }
}

//! SRTP for recorded streams keyed by SDES (RFC 4568): reads an offer's `a=crypto` values,
//! writes our answer line with a fresh key of our own, and decrypts the SRC's SRTP and SRTCP
//! (RFC 3711; AEAD GCM per RFC 7714) in place.
//!
//! Crypto suites: `AES_CM_128_HMAC_SHA1_80`, `AES_CM_128_HMAC_SHA1_32`, `AEAD_AES_128_GCM`, and
//! their 256-bit siblings `AES_256_CM_HMAC_SHA1_80`/`_32` (RFC 6188) and `AEAD_AES_256_GCM`. The
//! cryptography is `rtc-srtp`'s, with `ring` as its provider.
//!
//! What a line may carry and what we do with it:
//! - a lifetime (`|2^31`, `|1048576`) is accepted and ignored: we only receive, and keeping to it
//!   is the sender's duty (RFC 4568 §6.1);
//! - an MKI (`|1:4`), and so several keys in one line, is refused: SBCs rarely send one, and
//!   `rtc-srtp` has no MKI. The offer's next line may still be chosen;
//! - session parameters (RFC 4568 §6.3): `KDR=0` accepted, any other KDR refused (no key
//!   re-derivation); `UNENCRYPTED_SRTP` and `UNAUTHENTICATED_SRTP` refused (`rtc-srtp` has neither
//!   a null cipher nor a null tag); `UNENCRYPTED_SRTCP` accepted and echoed in the answer, but
//!   unencrypted SRTCP packets are then dropped, because `rtc-srtp` passes them on without
//!   checking their tag (RTCP is optional for the recorder); `FEC_ORDER` and `FEC_KEY` accepted
//!   and ignored (we decode no FEC); `WSH` sizes the replay window (64 to 1024 packets); an unknown
//!   parameter refuses the line unless it starts with `-` (RFC 4568 §6.3.7).
//!
//! The receiver keeps one `rtc-srtp` context per SSRC (at most [`MAX_SOURCES`], least recently
//! used evicted), each holding its own rollover counter and replay window (RFC 3711 §3.3.1,
//! §3.3.2). A context is kept only once a packet of its SSRC has authenticated, so forged packets
//! with made-up SSRCs cost CPU but no memory. After [`RESYNC_AFTER`] failures in a row on one SSRC
//! (a sender that restarted its sequence or jumped it by more than 2^15), a fresh context (ROC 0)
//! is tried; a jump while the sender's ROC is not 0 cannot be recovered, as in any RFC 3711
//! receiver.
//!
//! It does no I/O and logs nothing per packet (every outcome is counted in [`SrtpStats`]); no key
//! is ever formatted (`Debug` is written by hand). It does not negotiate anything beyond the one
//! `a=crypto` line: which m-lines are SRTP, and the accept/require/refuse policy, are the
//! session's.
//!
//! Cost (release, 2-core test machine under load): about 0.6 to 1 µs to decrypt a 20 ms PCMU
//! packet with AES-CM/HMAC-SHA1, 0.3 to 0.5 µs with GCM. `rtc-srtp` returns each plain packet in
//! a new buffer, which is copied back over the input: one allocation per packet (about 10 to
//! 30 ns, a few percent of the total), two with an RTP header extension or CSRCs (parsed into a
//! `Vec`).

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use ring::rand::SecureRandom as _;
use rtc_srtp::context::Context;
use rtc_srtp::crypto::providers::RingCrypto;
use rtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use rtc_srtp::protection_profile::ProtectionProfile;
use zeroize::Zeroize as _;

/// Most SSRCs one receiver keeps a context for (SBC failovers and transfers each add one).
pub const MAX_SOURCES: usize = 8;
/// Failures in a row on one SSRC after which a fresh context is tried (about 0.6 s at 20 ms).
pub const RESYNC_AFTER: u32 = 32;
/// Replay window without `WSH` (RFC 3711 §3.3.2 asks for at least 64).
const DEFAULT_WINDOW: usize = 64;
/// Largest replay window a `WSH` may ask for; late packets past our reorder window are dropped
/// by the timeline anyway.
const MAX_WINDOW: usize = 1024;
/// Longest master key plus salt of any suite (AES-256-CM: 32 + 14).
const MAX_KEY_MATERIAL: usize = 46;
/// Longest suite name or parameter name quoted in an error.
const MAX_QUOTED: usize = 40;

/// Why an `a=crypto` line cannot be used, or a packet was dropped.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SrtpError {
    /// The value is not `<tag> <crypto-suite> <key-params> [<session-param> ...]` (RFC 4568 §9.1);
    /// the text says which part is wrong.
    #[error("malformed a=crypto: {0}")]
    Malformed(&'static str),
    /// A crypto suite we do not decrypt (the name, cut to 40 characters).
    #[error("unsupported crypto suite {0}")]
    UnsupportedSuite(String),
    /// The inline key is not base64 of the suite's master key and salt.
    #[error("inline key is not base64 of {expected} bytes (master key and salt)")]
    BadKey {
        /// Master key plus salt length of the suite.
        expected: usize,
    },
    /// The key carries an MKI, or the line several keys (see the module doc).
    #[error("a=crypto with an MKI is not supported")]
    Mki,
    /// A session parameter we cannot honour (its name only, cut to 40 characters).
    #[error("unsupported SRTP session parameter {0}")]
    UnsupportedParameter(String),
    /// The system's random number generator failed.
    #[error("no random bytes for an SRTP key")]
    Random,
    /// `rtc-srtp` refused to set up a context (the message carries no key).
    #[error("cannot set up an SRTP context: {0}")]
    Context(String),
    /// The packet is too short, or not RTP/RTCP version 2, or its header does not parse.
    #[error("not an SRTP/SRTCP packet")]
    NotSrtp,
    /// The authentication tag does not match (tampered, wrong key, or lost ROC sync).
    #[error("SRTP authentication failed")]
    AuthFailed,
    /// The packet was already received, or is older than the replay window.
    #[error("SRTP packet replayed or too old")]
    Replayed,
    /// An SRTCP packet sent unencrypted: dropped, since its tag is not checked (module doc).
    #[error("unencrypted SRTCP dropped")]
    UnencryptedSrtcp,
}

/// An SDES crypto suite we decrypt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// `AES_CM_128_HMAC_SHA1_80` (RFC 4568 §6.2.1), the one every SRC offers.
    AesCm128HmacSha1_80,
    /// `AES_CM_128_HMAC_SHA1_32` (RFC 4568 §6.2.2): 32-bit RTP tag, 80-bit SRTCP tag.
    AesCm128HmacSha1_32,
    /// `AES_256_CM_HMAC_SHA1_80` (RFC 6188 §7.1).
    AesCm256HmacSha1_80,
    /// `AES_256_CM_HMAC_SHA1_32` (RFC 6188 §7.1).
    AesCm256HmacSha1_32,
    /// `AEAD_AES_128_GCM` (RFC 7714 §14.2).
    AeadAes128Gcm,
    /// `AEAD_AES_256_GCM` (RFC 7714 §14.2).
    AeadAes256Gcm,
}

impl Suite {
    const ALL: [Self; 6] = [
        Self::AesCm128HmacSha1_80,
        Self::AesCm128HmacSha1_32,
        Self::AesCm256HmacSha1_80,
        Self::AesCm256HmacSha1_32,
        Self::AeadAes128Gcm,
        Self::AeadAes256Gcm,
    ];

    /// The name in `a=crypto`.
    pub fn name(self) -> &'static str {
        match self {
            Self::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Self::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            Self::AesCm256HmacSha1_80 => "AES_256_CM_HMAC_SHA1_80",
            Self::AesCm256HmacSha1_32 => "AES_256_CM_HMAC_SHA1_32",
            Self::AeadAes128Gcm => "AEAD_AES_128_GCM",
            Self::AeadAes256Gcm => "AEAD_AES_256_GCM",
        }
    }

    /// Suite names are ABNF literals, so case-insensitive (RFC 4568 §9.2, RFC 5234 §2.3).
    fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name))
    }

    fn profile(self) -> ProtectionProfile {
        match self {
            Self::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
            Self::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
            Self::AesCm256HmacSha1_80 => ProtectionProfile::Aes256CmHmacSha1_80,
            Self::AesCm256HmacSha1_32 => ProtectionProfile::Aes256CmHmacSha1_32,
            Self::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
            Self::AeadAes256Gcm => ProtectionProfile::AeadAes256Gcm,
        }
    }

    fn key_len(self) -> usize {
        self.profile().key_len()
    }

    /// Master key plus master salt: what `inline:` carries.
    fn key_material_len(self) -> usize {
        self.key_len() + self.profile().salt_len()
    }

    /// Bytes between an SRTCP packet's end and its E flag: the HMAC tag, if any (RFC 3711 §3.4;
    /// GCM puts its tag before the index, RFC 7714 §9.1).
    fn srtcp_trailer_len(self) -> usize {
        self.profile().rtcp_auth_tag_len() + 4
    }
}

/// A master key and master salt, as one `inline:` value carries them. Never printed; wiped
/// when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyMaterial {
    bytes: [u8; MAX_KEY_MATERIAL],
    len: usize,
}

impl KeyMaterial {
    /// A fresh random key and salt for `suite` (ours, for the answer).
    pub fn generate(suite: Suite) -> Result<Self, SrtpError> {
        let mut key = Self {
            bytes: [0; MAX_KEY_MATERIAL],
            len: suite.key_material_len(),
        };
        ring::rand::SystemRandom::new()
            .fill(&mut key.bytes[..key.len])
            .map_err(|_| SrtpError::Random)?;
        Ok(key)
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Decodes an `inline:` key (RFC 4568 §6.1: base64 of key || salt). Padding may be left out:
    /// some stacks drop it from GCM's 28-byte keys.
    fn from_base64(text: &str, suite: Suite) -> Result<Self, SrtpError> {
        const ENGINE: GeneralPurpose = GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
        );
        let expected = suite.key_material_len();
        // Room for base64's conservative length estimate; anything longer is the wrong key anyway.
        let mut scratch = [0u8; 64];
        let decoded = if text.len() <= 88 {
            ENGINE.decode_slice(text, &mut scratch).ok()
        } else {
            None
        };
        let result = match decoded {
            Some(n) if n == expected => {
                let mut key = Self {
                    bytes: [0; MAX_KEY_MATERIAL],
                    len: n,
                };
                key.bytes[..n].copy_from_slice(&scratch[..n]);
                Ok(key)
            }
            _ => Err(SrtpError::BadKey { expected }),
        };
        scratch.zeroize();
        result
    }

    fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.as_bytes())
    }
}

impl Drop for KeyMaterial {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyMaterial({} bytes, redacted)", self.len)
    }
}

/// One usable `a=crypto` line of an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoOffer {
    /// The line's tag, repeated in the answer (RFC 4568 §5.1: 1 to 9 digits).
    pub tag: u32,
    /// The crypto suite.
    pub suite: Suite,
    /// The SRC's master key and salt (what we decrypt with).
    key: KeyMaterial,
    /// `UNENCRYPTED_SRTCP` was offered (and must be echoed, RFC 4568 §6.3.2).
    unencrypted_srtcp: bool,
    /// Replay window in packets (`WSH`, RFC 4568 §6.3.6).
    window: usize,
}

impl CryptoOffer {
    /// The `a=crypto` value of our answer: same tag and suite, our key (RFC 4568 §7.1.2), and
    /// `UNENCRYPTED_SRTCP` if offered. `our_key` must come from
    /// [`KeyMaterial::generate`]`(self.suite)`; keep it across re-INVITEs that keep the line.
    pub fn answer_line(&self, our_key: &KeyMaterial) -> String {
        let mut line = format!(
            "{} {} inline:{}",
            self.tag,
            self.suite.name(),
            our_key.to_base64()
        );
        if self.unencrypted_srtcp {
            line.push_str(" UNENCRYPTED_SRTCP");
        }
        line
    }

    /// Whether a later offer (re-INVITE) keeps this line's key and parameters, so the stream's
    /// receiver, with its ROC and replay state, must be kept too (RFC 4568 §7.1.4).
    pub fn same_context(&self, other: &CryptoOffer) -> bool {
        self.suite == other.suite
            && self.key == other.key
            && self.unencrypted_srtcp == other.unencrypted_srtcp
    }
}

/// Parses one `a=crypto` attribute value (RFC 4568 §9.1; what is refused: module doc).
pub fn parse_crypto(value: &str) -> Result<CryptoOffer, SrtpError> {
    let mut fields = value.split_ascii_whitespace();
    let tag = fields.next().ok_or(SrtpError::Malformed("empty"))?;
    if tag.is_empty() || tag.len() > 9 || !tag.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SrtpError::Malformed("tag is not 1 to 9 digits"));
    }
    // Nine digits always fit a u32.
    let tag = tag
        .parse()
        .map_err(|_| SrtpError::Malformed("tag is not 1 to 9 digits"))?;
    let suite_name = fields
        .next()
        .ok_or(SrtpError::Malformed("no crypto suite"))?;
    let suite = Suite::from_name(suite_name)
        .ok_or_else(|| SrtpError::UnsupportedSuite(quoted(suite_name)))?;
    let key_params = fields
        .next()
        .ok_or(SrtpError::Malformed("no key parameters"))?;
    // RFC 4568 §6.1: several keys in one line are told apart by their MKI.
    if key_params.contains(';') {
        return Err(SrtpError::Mki);
    }
    let (method, key_info) = key_params
        .split_once(':')
        .ok_or(SrtpError::Malformed("key parameter without a method"))?;
    if !method.eq_ignore_ascii_case("inline") {
        return Err(SrtpError::Malformed("key method is not inline"));
    }
    let mut parts = key_info.split('|');
    let key = parts.next().unwrap_or_default();
    for part in parts {
        if part.contains(':') {
            return Err(SrtpError::Mki);
        }
        if !is_lifetime(part) {
            return Err(SrtpError::Malformed("lifetime is not a number or 2^n"));
        }
    }
    let key = KeyMaterial::from_base64(key, suite)?;
    let mut offer = CryptoOffer {
        tag,
        suite,
        key,
        unencrypted_srtcp: false,
        window: DEFAULT_WINDOW,
    };
    for param in fields {
        apply_session_parameter(&mut offer, param)?;
    }
    Ok(offer)
}

/// The first line we can use, in the offer's order (RFC 4568 §7.1.2: the offerer lists its
/// preference first).
pub fn choose(offers: &[&str]) -> Option<CryptoOffer> {
    offers.iter().find_map(|value| match parse_crypto(value) {
        Ok(offer) => Some(offer),
        Err(e) => {
            tracing::debug!(error = %e, "a=crypto line skipped");
            None
        }
    })
}

/// `text` with every `inline:` key replaced by `REDACTED`, for writing an SDP (or a SIP message
/// carrying one) to a log or to disk. Borrowed when there is no key.
pub fn redact_inline_keys(text: &str) -> Cow<'_, str> {
    const MARK: &str = "inline:";
    let lower = text.to_ascii_lowercase();
    if !lower.contains(MARK) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = 0;
    for (at, _) in lower.match_indices(MARK) {
        let start = at + MARK.len();
        if start < rest {
            continue;
        }
        // The key ends where its lifetime, MKI, next key or parameters start.
        let end = text[start..]
            .find(|c: char| matches!(c, '|' | ';') || c.is_whitespace())
            .map_or(text.len(), |n| start + n);
        out.push_str(&text[rest..start]);
        out.push_str("REDACTED");
        rest = end;
    }
    out.push_str(&text[rest..]);
    Cow::Owned(out)
}

/// RFC 4568 §6.1: `lifetime = ["2^"] 1*(DIGIT)`.
fn is_lifetime(text: &str) -> bool {
    let digits = text.strip_prefix("2^").unwrap_or(text);
    !digits.is_empty() && digits.len() <= 20 && digits.bytes().all(|b| b.is_ascii_digit())
}

/// RFC 4568 §6.3 session parameters (what each does here: module doc).
fn apply_session_parameter(offer: &mut CryptoOffer, param: &str) -> Result<(), SrtpError> {
    let (name, value) = param.split_once('=').unwrap_or((param, ""));
    let unsupported = || Err(SrtpError::UnsupportedParameter(quoted(name)));
    match name.to_ascii_uppercase().as_str() {
        // §6.3.1: KDR=0 (or absent) derives the session keys once, which is all rtc-srtp does.
        "KDR" if value == "0" => Ok(()),
        "KDR" => unsupported(),
        "UNENCRYPTED_SRTCP" => {
            offer.unencrypted_srtcp = true;
            Ok(())
        }
        "UNENCRYPTED_SRTP" | "UNAUTHENTICATED_SRTP" => unsupported(),
        // §6.3.4, §6.3.5: only matter for an FEC stream, which we do not decode.
        "FEC_ORDER" | "FEC_KEY" => Ok(()),
        // §6.3.6: the window size the sender suggests, in packets.
        "WSH" => {
            let wsh: usize = value
                .parse()
                .map_err(|_| SrtpError::Malformed("WSH is not a number"))?;
            offer.window = wsh.clamp(DEFAULT_WINDOW, MAX_WINDOW);
            Ok(())
        }
        // §6.3.7: a parameter starting with '-' is optional.
        _ if name.starts_with('-') => Ok(()),
        _ => unsupported(),
    }
}

/// At most [`MAX_QUOTED`] characters of untrusted text, for an error message.
fn quoted(text: &str) -> String {
    text.chars().take(MAX_QUOTED).collect()
}

/// What one stream's receiver has seen; every count is packets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SrtpStats {
    /// SRTP packets that authenticated and were decrypted.
    pub decrypted: u64,
    /// SRTP packets whose tag did not match (dropped).
    pub auth_failures: u64,
    /// SRTP packets already received or older than the replay window (dropped).
    pub replayed: u64,
    /// Datagrams that were not SRTP at all (dropped).
    pub malformed: u64,
    /// Times an SSRC's context was started afresh after [`RESYNC_AFTER`] failures in a row.
    pub resyncs: u64,
    /// SRTCP packets decrypted.
    pub rtcp_decrypted: u64,
    /// SRTCP packets dropped: tag mismatch, replay, unencrypted, or malformed.
    pub rtcp_dropped: u64,
}

/// One SSRC's context.
struct Source {
    ssrc: u32,
    context: Context,
    /// Value of the receiver's use counter when last used (for eviction).
    last_used: u64,
    failures_in_a_row: u32,
}

/// The contexts of one direction (RTP or RTCP), by SSRC.
#[derive(Default)]
struct Sources {
    list: Vec<Source>,
    uses: u64,
}

/// A stream's SRTP/SRTCP decryption. Keep it for the stream's life; a re-INVITE with a new key
/// (see [`CryptoOffer::same_context`]) replaces it.
pub struct SrtpReceiver {
    suite: Suite,
    key: KeyMaterial,
    window: usize,
    rtp: Sources,
    rtcp: Sources,
    stats: SrtpStats,
}

impl fmt::Debug for SrtpReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpReceiver")
            .field("suite", &self.suite)
            .field(
                "ssrcs",
                &self.rtp.list.iter().map(|s| s.ssrc).collect::<Vec<_>>(),
            )
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Which of a context's two halves a packet goes through.
#[derive(Clone, Copy)]
enum Kind {
    Rtp,
    Rtcp,
}

impl SrtpReceiver {
    /// The receiver for the chosen line; fails only if `rtc-srtp` refuses the key.
    pub fn new(offer: &CryptoOffer) -> Result<Self, SrtpError> {
        let receiver = Self {
            suite: offer.suite,
            key: offer.key.clone(),
            window: offer.window,
            rtp: Sources::default(),
            rtcp: Sources::default(),
            stats: SrtpStats::default(),
        };
        // Set one context up now, so a key rtc-srtp refuses fails the offer, not every packet.
        receiver.new_context()?;
        Ok(receiver)
    }

    /// Decrypts one SRTP packet in place; returns the length of the plain RTP packet now at the
    /// start of `packet`. On an error `packet` is unchanged and the packet must be dropped.
    pub fn decrypt_rtp(&mut self, packet: &mut [u8]) -> Result<usize, SrtpError> {
        let result = if packet.len() < 12 || packet[0] >> 6 != 2 {
            Err(SrtpError::NotSrtp)
        } else {
            let ssrc = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
            self.decrypt(Kind::Rtp, ssrc, packet)
        };
        match &result {
            Ok(_) => self.stats.decrypted += 1,
            Err(SrtpError::AuthFailed) => self.stats.auth_failures += 1,
            Err(SrtpError::Replayed) => self.stats.replayed += 1,
            Err(_) => self.stats.malformed += 1,
        }
        result
    }

    /// Decrypts one SRTCP packet in place (RFC 3711 §3.4); returns the length of the plain
    /// compound RTCP packet now at the start of `packet`. Unencrypted SRTCP is refused.
    pub fn decrypt_rtcp(&mut self, packet: &mut [u8]) -> Result<usize, SrtpError> {
        let trailer = self.suite.srtcp_trailer_len();
        let result = if packet.len() < 8 + trailer || packet[0] >> 6 != 2 {
            Err(SrtpError::NotSrtp)
        } else if packet[packet.len() - trailer] & 0x80 == 0 {
            Err(SrtpError::UnencryptedSrtcp)
        } else {
            let ssrc = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
            self.decrypt(Kind::Rtcp, ssrc, packet)
        };
        match result {
            Ok(_) => self.stats.rtcp_decrypted += 1,
            Err(_) => self.stats.rtcp_dropped += 1,
        }
        result
    }

    /// What this stream has seen so far.
    /// The suite this receiver decrypts.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    pub fn stats(&self) -> SrtpStats {
        self.stats
    }

    fn new_context(&self) -> Result<Context, SrtpError> {
        let (key, salt) = self.key.as_bytes().split_at(self.suite.key_len());
        Context::new(
            key,
            salt,
            self.suite.profile(),
            Some(srtp_replay_protection(self.window)),
            Some(srtcp_replay_protection(self.window)),
            &RingCrypto,
        )
        .map_err(|e| SrtpError::Context(e.to_string()))
    }

    fn decrypt(&mut self, kind: Kind, ssrc: u32, packet: &mut [u8]) -> Result<usize, SrtpError> {
        let sources = match kind {
            Kind::Rtp => &mut self.rtp,
            Kind::Rtcp => &mut self.rtcp,
        };
        sources.uses += 1;
        let uses = sources.uses;
        let Some(i) = sources.list.iter().position(|s| s.ssrc == ssrc) else {
            // A new SSRC: its context is kept only if this packet authenticates.
            let mut context = self.new_context()?;
            let n = run(&mut context, kind, packet)?;
            let source = Source {
                ssrc,
                context,
                last_used: uses,
                failures_in_a_row: 0,
            };
            let sources = match kind {
                Kind::Rtp => &mut self.rtp,
                Kind::Rtcp => &mut self.rtcp,
            };
            if sources.list.len() < MAX_SOURCES {
                sources.list.push(source);
            } else if let Some(oldest) = sources.list.iter_mut().min_by_key(|s| s.last_used) {
                *oldest = source;
            }
            return Ok(n);
        };
        let source = &mut sources.list[i];
        match run(&mut source.context, kind, packet) {
            Ok(n) => {
                source.last_used = uses;
                source.failures_in_a_row = 0;
                Ok(n)
            }
            Err(e @ (SrtpError::AuthFailed | SrtpError::Replayed)) => {
                source.failures_in_a_row += 1;
                if source.failures_in_a_row % RESYNC_AFTER != 0 {
                    return Err(e);
                }
                // RFC 3711 §3.3.1 cannot follow a jump of 2^15 or more: start this SSRC over
                // (ROC 0, empty replay window) if that authenticates.
                let mut context = self.new_context()?;
                let n = run(&mut context, kind, packet).map_err(|_| e)?;
                let sources = match kind {
                    Kind::Rtp => &mut self.rtp,
                    Kind::Rtcp => &mut self.rtcp,
                };
                sources.list[i] = Source {
                    ssrc,
                    context,
                    last_used: uses,
                    failures_in_a_row: 0,
                };
                // Counted, not logged: this runs on the media thread outside the call's span;
                // the caller reports `stats().resyncs`.
                self.stats.resyncs += 1;
                Ok(n)
            }
            Err(e) => Err(e),
        }
    }
}

/// Runs one packet through a context and copies the plain packet back to its start.
fn run(context: &mut Context, kind: Kind, packet: &mut [u8]) -> Result<usize, SrtpError> {
    // rtc-srtp returns a new buffer per packet (one allocation: module doc).
    let plain = match kind {
        Kind::Rtp => context.decrypt_rtp(packet),
        Kind::Rtcp => context.decrypt_rtcp(packet),
    }
    .map_err(|e| {
        use rtc_shared::error::Error;
        match e {
            Error::RtpFailedToVerifyAuthTag
            | Error::RtcpFailedToVerifyAuthTag
            | Error::ErrFailedToVerifyAuthTag => SrtpError::AuthFailed,
            Error::SrtpSsrcDuplicated(..) | Error::SrtcpSsrcDuplicated(..) => SrtpError::Replayed,
            _ => SrtpError::NotSrtp,
        }
    })?;
    let n = plain.len();
    // The plain packet is never longer than the protected one (the tag and index are removed).
    packet
        .get_mut(..n)
        .ok_or(SrtpError::NotSrtp)?
        .copy_from_slice(&plain);
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 30 bytes: 0x00..0x1d.
    const KEY_80: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd";

    fn offer(value: &str) -> CryptoOffer {
        parse_crypto(value).unwrap()
    }

    #[test]
    fn parses_the_common_line() {
        let o = offer(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}"));
        assert_eq!(
            (o.tag, o.suite, o.unencrypted_srtcp, o.window),
            (1, Suite::AesCm128HmacSha1_80, false, 64)
        );
        assert_eq!(o.key.as_bytes(), (0u8..30).collect::<Vec<_>>());
    }

    #[test]
    fn lifetime_is_accepted_in_both_forms() {
        for suffix in ["|2^31", "|1048576", "|2^20"] {
            let o = offer(&format!(
                "7 AES_CM_128_HMAC_SHA1_32 inline:{KEY_80}{suffix}"
            ));
            assert_eq!((o.tag, o.suite), (7, Suite::AesCm128HmacSha1_32));
        }
        assert_eq!(
            parse_crypto(&format!("7 AES_CM_128_HMAC_SHA1_32 inline:{KEY_80}|2^")),
            Err(SrtpError::Malformed("lifetime is not a number or 2^n"))
        );
    }

    #[test]
    fn mki_and_multiple_keys_are_refused() {
        for key_params in [
            format!("inline:{KEY_80}|2^20|1:4"),
            format!("inline:{KEY_80}|1:4"),
            format!("inline:{KEY_80}|2^20|1:4;inline:{KEY_80}|2^20|2:4"),
        ] {
            assert_eq!(
                parse_crypto(&format!("1 AES_CM_128_HMAC_SHA1_80 {key_params}")),
                Err(SrtpError::Mki)
            );
        }
    }

    #[test]
    fn suite_and_key_method_are_case_insensitive() {
        let o = offer(&format!("2 aes_cm_128_hmac_sha1_80 INLINE:{KEY_80}"));
        assert_eq!(o.suite, Suite::AesCm128HmacSha1_80);
    }

    #[test]
    fn gcm_key_is_28_bytes_with_or_without_padding() {
        let padded = base64::engine::general_purpose::STANDARD.encode([9u8; 28]);
        assert!(padded.ends_with('='));
        for key in [padded.as_str(), padded.trim_end_matches('=')] {
            let o = offer(&format!("3 AEAD_AES_128_GCM inline:{key}"));
            assert_eq!(
                (o.suite, o.key.as_bytes()),
                (Suite::AeadAes128Gcm, &[9u8; 28][..])
            );
        }
        assert_eq!(
            parse_crypto(&format!("3 AEAD_AES_128_GCM inline:{KEY_80}")),
            Err(SrtpError::BadKey { expected: 28 })
        );
    }

    #[test]
    fn aes_256_key_is_46_bytes() {
        let key = base64::engine::general_purpose::STANDARD.encode([5u8; 46]);
        assert_eq!(
            offer(&format!("1 AES_256_CM_HMAC_SHA1_80 inline:{key}"))
                .key
                .as_bytes(),
            [5u8; 46]
        );
        assert_eq!(
            parse_crypto(&format!("1 AES_256_CM_HMAC_SHA1_80 inline:{KEY_80}")),
            Err(SrtpError::BadKey { expected: 46 })
        );
    }

    #[test]
    fn bad_keys_are_refused() {
        for key in [
            "",
            "not base64!",
            &KEY_80[..36],
            &format!("{KEY_80}AAAA"),
            &"A".repeat(200),
        ] {
            assert_eq!(
                parse_crypto(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key}")),
                Err(SrtpError::BadKey { expected: 30 }),
                "{key}"
            );
        }
    }

    #[test]
    fn malformed_lines_are_refused() {
        for (value, why) in [
            ("", "empty"),
            (
                "x AES_CM_128_HMAC_SHA1_80 inline:AAAA",
                "tag is not 1 to 9 digits",
            ),
            (
                "1234567890 AES_CM_128_HMAC_SHA1_80 inline:AAAA",
                "tag is not 1 to 9 digits",
            ),
            ("1", "no crypto suite"),
            ("1 AES_CM_128_HMAC_SHA1_80", "no key parameters"),
            (
                "1 AES_CM_128_HMAC_SHA1_80 AAAA",
                "key parameter without a method",
            ),
            (
                "1 AES_CM_128_HMAC_SHA1_80 uri:sip:x",
                "key method is not inline",
            ),
        ] {
            assert_eq!(
                parse_crypto(value),
                Err(SrtpError::Malformed(why)),
                "{value}"
            );
        }
        assert_eq!(
            parse_crypto(&format!("1 F8_128_HMAC_SHA1_80 inline:{KEY_80}")),
            Err(SrtpError::UnsupportedSuite("F8_128_HMAC_SHA1_80".into()))
        );
    }

    #[test]
    fn session_parameters_are_honoured_or_refuse_the_line() {
        let line = |params: &str| {
            parse_crypto(&format!(
                "1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80} {params}"
            ))
        };
        assert!(line("KDR=0").is_ok());
        assert!(line("FEC_ORDER=FEC_SRTP FEC_KEY=inline:AAAA -X_VENDOR=1").is_ok());
        assert!(line("UNENCRYPTED_SRTCP").unwrap().unencrypted_srtcp);
        assert_eq!(line("WSH=128").unwrap().window, 128);
        assert_eq!(line("WSH=1").unwrap().window, 64);
        assert_eq!(line("WSH=100000").unwrap().window, 1024);
        assert_eq!(
            line("WSH=x"),
            Err(SrtpError::Malformed("WSH is not a number"))
        );
        for (params, name) in [
            ("KDR=10", "KDR"),
            ("UNENCRYPTED_SRTP", "UNENCRYPTED_SRTP"),
            ("UNAUTHENTICATED_SRTP", "UNAUTHENTICATED_SRTP"),
            ("NEW_THING=secret", "NEW_THING"),
        ] {
            assert_eq!(
                line(params),
                Err(SrtpError::UnsupportedParameter(name.into())),
                "{params}"
            );
        }
    }

    #[test]
    fn choose_takes_the_first_usable_line_in_offer_order() {
        let mki = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}|2^20|1:4");
        let f8 = format!("2 F8_128_HMAC_SHA1_80 inline:{KEY_80}");
        let ok32 = format!("3 AES_CM_128_HMAC_SHA1_32 inline:{KEY_80}");
        let ok80 = format!("4 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}");
        let chosen = choose(&[&mki, &f8, &ok32, &ok80]).unwrap();
        assert_eq!((chosen.tag, chosen.suite), (3, Suite::AesCm128HmacSha1_32));
        assert_eq!(choose(&[&mki, &f8]), None);
        assert_eq!(choose(&[]), None);
    }

    #[test]
    fn answer_repeats_tag_and_suite_with_our_key_and_parses_back() {
        for suite in Suite::ALL {
            let key =
                base64::engine::general_purpose::STANDARD
                    .encode(vec![1u8; suite.key_material_len()]);
            let theirs = offer(&format!(
                "42 {} inline:{key}|2^31 UNENCRYPTED_SRTCP",
                suite.name()
            ));
            let ours = KeyMaterial::generate(suite).unwrap();
            let line = theirs.answer_line(&ours);
            assert!(
                line.starts_with(&format!("42 {} inline:", suite.name())),
                "{line}"
            );
            assert!(line.ends_with(" UNENCRYPTED_SRTCP"), "{line}");
            let back = parse_crypto(&line).unwrap();
            assert_eq!((back.tag, back.suite, &back.key), (42, suite, &ours));
        }
        let plain = offer(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}"));
        let line = plain.answer_line(&KeyMaterial::generate(plain.suite).unwrap());
        assert_eq!(line.split(' ').count(), 3, "{line}");
    }

    #[test]
    fn generated_keys_differ_and_fit_the_suite() {
        let a = KeyMaterial::generate(Suite::AesCm128HmacSha1_80).unwrap();
        let b = KeyMaterial::generate(Suite::AesCm128HmacSha1_80).unwrap();
        assert_eq!(a.as_bytes().len(), 30);
        assert_ne!(a, b);
        assert_eq!(
            KeyMaterial::generate(Suite::AeadAes128Gcm)
                .unwrap()
                .as_bytes()
                .len(),
            28
        );
    }

    #[test]
    fn keys_never_appear_in_debug_output() {
        let o = offer(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}"));
        let receiver = SrtpReceiver::new(&o).unwrap();
        let shown = format!("{o:?} {receiver:?} {:?} {:#?}", o.key, o);
        assert!(
            !shown.contains(KEY_80) && !shown.contains(&KEY_80[..8]),
            "{shown}"
        );
        // Neither as a byte list (0..30 starts "[0, 1, 2").
        assert!(!shown.contains("0, 1, 2"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }

    #[test]
    fn same_context_compares_key_and_parameters_not_tag() {
        let a = offer(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}"));
        let retagged = offer(&format!("2 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}|2^31"));
        let other_key =
            offer("1 AES_CM_128_HMAC_SHA1_80 inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwe");
        assert!(a.same_context(&retagged));
        assert!(!a.same_context(&other_key));
    }

    #[test]
    fn redaction_hides_every_inline_key_and_keeps_the_rest() {
        let sdp = format!(
            "m=audio 4000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}|2^20|1:4;INLINE:{KEY_80} KDR=0\r\na=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{KEY_80}\r\n"
        );
        let redacted = redact_inline_keys(&sdp);
        assert!(!redacted.contains(&KEY_80[..8]), "{redacted}");
        assert_eq!(
            redacted,
            "m=audio 4000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:REDACTED|2^20|1:4;INLINE:REDACTED KDR=0\r\na=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:REDACTED\r\n"
        );
        assert!(matches!(
            redact_inline_keys("m=audio 4000 RTP/AVP 0"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn short_or_non_rtp_datagrams_are_counted_as_malformed() {
        let mut r = SrtpReceiver::new(&offer(&format!(
            "1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}"
        )))
        .unwrap();
        assert_eq!(r.decrypt_rtp(&mut [0x80; 11]), Err(SrtpError::NotSrtp));
        assert_eq!(r.decrypt_rtp(&mut [0x00; 40]), Err(SrtpError::NotSrtp));
        // A well-formed header with no room for the tag.
        assert_eq!(
            r.decrypt_rtp(&mut [0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xff]),
            Err(SrtpError::NotSrtp)
        );
        assert_eq!(r.decrypt_rtcp(&mut [0x80; 10]), Err(SrtpError::NotSrtp));
        let s = r.stats();
        assert_eq!(
            (s.malformed, s.decrypted, s.auth_failures, s.rtcp_dropped),
            (3, 0, 0, 1)
        );
    }
    /// Encrypts with rtc-srtp itself: enough for the receiver's bookkeeping (interop is in
    /// tests/srtp_interop.rs).
    fn protect(context: &mut Context, ssrc: u32, seq: u16) -> Vec<u8> {
        let mut plain = vec![0x80, 0];
        plain.extend_from_slice(&seq.to_be_bytes());
        plain.extend_from_slice(&[0, 0, 0, 0]);
        plain.extend_from_slice(&ssrc.to_be_bytes());
        plain.extend_from_slice(&[0xd5; 160]);
        context.encrypt_rtp(&plain).unwrap().to_vec()
    }

    #[test]
    fn contexts_are_kept_only_for_authenticated_ssrcs_and_at_most_max_sources() {
        let o = offer(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}"));
        let mut r = SrtpReceiver::new(&o).unwrap();
        let mut tx = r.new_context().unwrap();
        for ssrc in 100..200 {
            let mut forged = protect(&mut tx, ssrc, 1);
            forged[20] ^= 1;
            assert_eq!(r.decrypt_rtp(&mut forged), Err(SrtpError::AuthFailed));
        }
        assert!(r.rtp.list.is_empty());
        for ssrc in 1..=MAX_SOURCES as u32 + 1 {
            r.decrypt_rtp(&mut protect(&mut tx, ssrc, 10)).unwrap();
            // SSRC 2 stays in use, so SSRC 1 is the least recently used.
            r.decrypt_rtp(&mut protect(&mut tx, 2, 10 + ssrc as u16))
                .unwrap();
        }
        let kept: Vec<u32> = r.rtp.list.iter().map(|s| s.ssrc).collect();
        assert_eq!(kept.len(), MAX_SOURCES);
        assert!(
            !kept.contains(&1) && kept.contains(&2) && kept.contains(&(MAX_SOURCES as u32 + 1)),
            "{kept:?}"
        );
    }
    #[test]
    fn receiver_can_move_to_the_media_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<SrtpReceiver>();
    }

    #[test]
    fn no_prefix_of_a_line_panics() {
        let line = format!(
            "12 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}|2^20|1:4 KDR=0 WSH=128 UNENCRYPTED_SRTCP -X"
        );
        for end in 0..=line.len() {
            let _ = parse_crypto(&line[..end]);
        }
    }
}

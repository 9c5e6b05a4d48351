//! Just enough SIP for the replay tool: framing on a byte stream, a lenient message model that
//! keeps header order and spelling, and the SDP/multipart views the replay needs.
//!
//! This is not the gateway's SIP stack: it validates almost nothing, knows no transactions or
//! dialogs, and only looks at the headers a replaying SRC must read or rewrite. Bodies are kept
//! as bytes; SDP is only looked at as text when it is UTF-8.

use std::net::IpAddr;
use std::ops::Range;

/// RFC 3261 §7.3.3 compact forms of the headers the replay touches.
const COMPACT: [(&str, &str); 7] = [
    ("call-id", "i"),
    ("from", "f"),
    ("to", "t"),
    ("via", "v"),
    ("contact", "m"),
    ("content-length", "l"),
    ("content-type", "c"),
];

/// Does header `name` (as written in a message) mean `canonical` (lower-case long form)?
fn header_is(name: &str, canonical: &str) -> bool {
    name.eq_ignore_ascii_case(canonical)
        || COMPACT
            .iter()
            .any(|&(long, short)| long == canonical && name.eq_ignore_ascii_case(short))
}

/// End of the header section: index just past the blank line, for CRLF or bare-LF messages.
fn header_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Content-Length of a header section, or 0 when absent (RFC 3261 §18.3 requires it on streams;
/// a message without one is taken to have no body).
fn content_length(head: &str) -> Option<usize> {
    for line in head.lines() {
        if let Some((name, value)) = line.split_once(':')
            && header_is(name.trim(), "content-length")
        {
            return value.trim().parse().ok();
        }
    }
    Some(0)
}

/// Length of the first complete SIP message in a stream buffer (RFC 3261 §18.3: framed by
/// Content-Length), or `None` if more bytes are needed. Leading CRLF keep-alives must be removed
/// by the caller first. A malformed Content-Length counts as 0 so the stream keeps moving.
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    let end = header_end(buf)?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let total = end + content_length(&head).unwrap_or(0);
    (buf.len() >= total).then_some(total)
}

/// Number of leading CR/LF bytes (RFC 5626 §3.5.1 keep-alives between messages on a stream).
pub fn keepalive_len(buf: &[u8]) -> usize {
    buf.iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count()
}

/// A SIP request or response with its headers in wire order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipMessage {
    /// Request-Line or Status-Line, without the line ending.
    pub start_line: String,
    /// Header fields as (name as written, value), folded lines joined.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl SipMessage {
    /// Parses one message (a UDP datagram or a framed stream message). `None` when the bytes do
    /// not look like SIP; the body is cut to Content-Length when it is shorter than the bytes.
    pub fn parse(bytes: &[u8]) -> Option<SipMessage> {
        let end = header_end(bytes).unwrap_or(bytes.len());
        let head = std::str::from_utf8(&bytes[..end]).ok()?;
        let mut lines = head.lines();
        let start_line = lines.next()?.trim_end().to_string();
        let is_response = start_line.starts_with("SIP/2.0 ");
        let is_request = start_line.ends_with(" SIP/2.0")
            && start_line.split(' ').count() == 3
            && start_line
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic());
        if !is_response && !is_request {
            return None;
        }
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.trim().is_empty() {
                break;
            }
            if line.starts_with([' ', '\t']) {
                // RFC 3261 §7.3.1: a continuation line belongs to the previous header.
                if let Some(last) = headers.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                }
                continue;
            }
            let (name, value) = line.split_once(':')?;
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        let mut body = bytes.get(end..).unwrap_or_default().to_vec();
        let declared = headers
            .iter()
            .find(|(n, _)| header_is(n, "content-length"))
            .and_then(|(_, v)| v.parse::<usize>().ok());
        if let Some(len) = declared
            && len < body.len()
        {
            body.truncate(len);
        }
        Some(SipMessage {
            start_line,
            headers,
            body,
        })
    }

    /// Wire bytes with CRLF line endings and Content-Length recomputed from the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::with_capacity(512 + self.body.len());
        out.push_str(&self.start_line);
        out.push_str("\r\n");
        for (name, value) in &self.headers {
            if header_is(name, "content-length") {
                continue;
            }
            out.push_str(name);
            out.push_str(": ");
            out.push_str(value);
            out.push_str("\r\n");
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n", self.body.len()));
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }

    pub fn is_request(&self) -> bool {
        !self.start_line.starts_with("SIP/2.0 ")
    }

    /// Request method (`None` for responses).
    pub fn method(&self) -> Option<&str> {
        if self.is_request() {
            self.start_line.split(' ').next()
        } else {
            None
        }
    }

    /// Response status code (`None` for requests).
    pub fn status(&self) -> Option<u16> {
        self.start_line
            .strip_prefix("SIP/2.0 ")?
            .split(' ')
            .next()?
            .parse()
            .ok()
    }

    /// First value of a header, by long lower-case name; compact forms match too.
    pub fn header(&self, canonical: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| header_is(n, canonical))
            .map(|(_, v)| v.as_str())
    }

    /// Every header `canonical` (long lower-case name; compact forms match too), in order.
    pub fn headers_named<'a>(
        &'a self,
        canonical: &'a str,
    ) -> impl Iterator<Item = &'a (String, String)> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| header_is(n, canonical))
    }

    /// Replaces the value of every header `canonical` by `value`, or appends it when absent.
    pub fn set_header(&mut self, canonical: &str, value: String) {
        let mut found = false;
        for (name, v) in self.headers.iter_mut() {
            if header_is(name, canonical) {
                *v = value.clone();
                found = true;
            }
        }
        if !found {
            self.headers.push((display_name(canonical), value));
        }
    }

    /// Removes every `canonical` header, then puts one with `value` where the first one was.
    pub fn replace_all(&mut self, canonical: &str, value: String) {
        let at = self
            .headers
            .iter()
            .position(|(n, _)| header_is(n, canonical));
        self.headers.retain(|(n, _)| !header_is(n, canonical));
        let at = at.unwrap_or(self.headers.len()).min(self.headers.len());
        self.headers.insert(at, (display_name(canonical), value));
    }

    pub fn call_id(&self) -> Option<&str> {
        self.header("call-id")
    }

    /// CSeq number and method.
    pub fn cseq(&self) -> Option<(u32, &str)> {
        let (num, method) = self.header("cseq")?.split_once(char::is_whitespace)?;
        Some((num.trim().parse().ok()?, method.trim()))
    }

    /// `branch` parameter of the topmost Via.
    pub fn top_via_branch(&self) -> Option<&str> {
        let top = self.header("via")?.split(',').next()?;
        param(top, "branch")
    }

    /// Does the body carry SDP, alone or as a multipart part?
    pub fn has_sdp(&self) -> bool {
        self.sdp_range().is_some()
    }

    /// Byte range of the SDP within the body: the whole body for `application/sdp`, the part's
    /// content for `multipart/*` (RFC 7866 §9.1: SIPREC offers are multipart/mixed with SDP and
    /// `application/rs-metadata+xml`).
    pub fn sdp_range(&self) -> Option<Range<usize>> {
        let ctype = self.header("content-type")?;
        let mime = ctype.split(';').next()?.trim();
        if mime.eq_ignore_ascii_case("application/sdp") {
            return (!self.body.is_empty()).then_some(0..self.body.len());
        }
        if !mime.to_ascii_lowercase().starts_with("multipart/") {
            return None;
        }
        let boundary = ctype.split(';').skip(1).find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("boundary")
                .then(|| v.trim().trim_matches('"').to_string())
        })?;
        multipart_sdp(&self.body, &boundary)
    }

    /// The SDP text, when present and UTF-8.
    pub fn sdp(&self) -> Option<&str> {
        std::str::from_utf8(&self.body[self.sdp_range()?]).ok()
    }
}

/// `Call-ID` rather than `call-id` when we add a header ourselves.
fn display_name(canonical: &str) -> String {
    match canonical {
        "call-id" => "Call-ID".into(),
        "cseq" => "CSeq".into(),
        other => other
            .split('-')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("-"),
    }
}

/// Value of `;name=value` in a header value (parameters after the URI or sent-by).
pub fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    // Skip a `<...>` URI so its own parameters are not mistaken for header parameters.
    let after_uri = value.rfind('>').map_or(value, |i| &value[i..]);
    after_uri.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Replaces (or adds) the `;tag=` header parameter of a From/To value.
pub fn with_tag(value: &str, tag: &str) -> String {
    let cut = value.rfind('>').map_or(0, |i| i + 1);
    let (uri, params) = value.split_at(cut);
    let kept: Vec<&str> = params
        .split(';')
        .filter(|p| !p.trim().is_empty())
        .filter(|p| !p.trim().to_ascii_lowercase().starts_with("tag="))
        .collect();
    let mut out = uri.to_string();
    for p in kept {
        out.push(';');
        out.push_str(p.trim());
    }
    out.push_str(";tag=");
    out.push_str(tag);
    out
}

/// Content range of the first `application/sdp` part of a multipart body (RFC 2046 §5.1.1).
fn multipart_sdp(body: &[u8], boundary: &str) -> Option<Range<usize>> {
    let delim = format!("--{boundary}");
    let starts: Vec<usize> = find_all(body, delim.as_bytes())
        .into_iter()
        .filter(|&i| i == 0 || body[i - 1] == b'\n')
        .collect();
    for pair in starts.windows(2) {
        let (from, to) = (pair[0] + delim.len(), pair[1]);
        let part = &body[from..to];
        let head_end = header_end(part)?;
        let head = String::from_utf8_lossy(&part[..head_end]);
        let is_sdp = head.lines().any(|l| {
            l.split_once(':').is_some_and(|(n, v)| {
                header_is(n.trim(), "content-type")
                    && v.trim().to_ascii_lowercase().starts_with("application/sdp")
            })
        });
        if is_sdp {
            // The CRLF before the next delimiter belongs to the delimiter (RFC 2046 §5.1.1).
            let mut end = to;
            if end > from + head_end && body[end - 1] == b'\n' {
                end -= 1;
                if end > from + head_end && body[end - 1] == b'\r' {
                    end -= 1;
                }
            }
            return Some(from + head_end..end);
        }
    }
    None
}

fn find_all(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return Vec::new();
    }
    (0..=hay.len() - needle.len())
        .filter(|&i| &hay[i..i + needle.len()] == needle)
        .collect()
}

/// One `m=` line of an SDP: its port and the connection address in force for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaLine {
    pub port: u16,
    /// Media-level `c=`, else session-level `c=`, if any (RFC 4566 §5.7).
    pub addr: Option<IpAddr>,
}

/// The m-lines of an SDP in order.
pub fn media_lines(sdp: &str) -> Vec<MediaLine> {
    let mut session_addr = None;
    let mut out: Vec<MediaLine> = Vec::new();
    for line in sdp.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("c=") {
            let addr = rest
                .split_whitespace()
                .nth(2)
                .and_then(|a| a.split('/').next()?.parse().ok());
            match out.last_mut() {
                Some(m) => m.addr = addr,
                None => session_addr = addr,
            }
        } else if let Some(rest) = line.strip_prefix("m=") {
            let port = rest
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.split('/').next()?.parse().ok())
                .unwrap_or(0);
            out.push(MediaLine {
                port,
                addr: session_addr,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "INVITE sip:srs@10.0.0.20 SIP/2.0\r\n\
        v: SIP/2.0/UDP 10.0.0.10:5060;branch=z9hG4bKabc;rport\r\n\
        Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKdef\r\n\
        f: <sip:src@10.0.0.10>;tag=111\r\n\
        To: <sip:srs@10.0.0.20>\r\n\
        i: call-1\r\n\
        CSeq: 7 INVITE\r\n\
        Subject: folded\r\n  continuation\r\n\
        c: multipart/mixed;boundary=\"b1\"\r\n\
        l: 207\r\n\r\n\
        --b1\r\nContent-Type: application/sdp\r\n\r\n\
        v=0\r\nc=IN IP4 10.0.0.10\r\nm=audio 2000 RTP/AVP 0\r\nm=audio 2002 RTP/AVP 0\r\nc=IN IP4 10.0.0.11\r\n\
        \r\n--b1\r\nContent-Type: application/rs-metadata+xml\r\n\r\n<recording/>\r\n--b1--\r\nEXTRA";

    #[test]
    fn parse_reads_compact_headers_folding_and_cuts_body_at_content_length() {
        let m = SipMessage::parse(OFFER.as_bytes()).unwrap();
        assert_eq!(m.method(), Some("INVITE"));
        assert_eq!(m.call_id(), Some("call-1"));
        assert_eq!(m.cseq(), Some((7, "INVITE")));
        assert_eq!(m.top_via_branch(), Some("z9hG4bKabc"));
        assert_eq!(m.header("subject"), Some("folded continuation"));
        assert_eq!(param(m.header("from").unwrap(), "tag"), Some("111"));
        assert_eq!(m.body.len(), 207);
        assert!(!m.body.ends_with(b"EXTRA"));
    }

    #[test]
    fn multipart_sdp_part_is_found_and_its_media_lines_read() {
        let m = SipMessage::parse(OFFER.as_bytes()).unwrap();
        let sdp = m.sdp().unwrap();
        assert!(
            sdp.starts_with("v=0") && sdp.ends_with("c=IN IP4 10.0.0.11\r\n"),
            "{sdp:?}"
        );
        let ml = media_lines(sdp);
        assert_eq!(
            ml,
            vec![
                MediaLine {
                    port: 2000,
                    addr: Some("10.0.0.10".parse().unwrap())
                },
                MediaLine {
                    port: 2002,
                    addr: Some("10.0.0.11".parse().unwrap())
                },
            ]
        );
    }

    #[test]
    fn to_bytes_recomputes_content_length_and_frame_len_agrees() {
        let mut m = SipMessage::parse(OFFER.as_bytes()).unwrap();
        m.body.extend_from_slice(b"more");
        let bytes = m.to_bytes();
        assert_eq!(frame_len(&bytes), Some(bytes.len()));
        assert_eq!(SipMessage::parse(&bytes).unwrap().body.len(), 211);
        assert_eq!(frame_len(&bytes[..bytes.len() - 1]), None);
    }

    #[test]
    fn responses_and_non_sip_are_told_apart() {
        let r = SipMessage::parse(b"SIP/2.0 180 Ringing\r\nCSeq: 1 INVITE\r\n\r\n").unwrap();
        assert_eq!(r.status(), Some(180));
        assert!(!r.is_request());
        assert!(SipMessage::parse(&[0x80, 0x00, 0x01, 0x02]).is_none());
        assert!(SipMessage::parse(b"hello world\r\n\r\n").is_none());
    }

    #[test]
    fn with_tag_replaces_only_the_header_tag() {
        assert_eq!(
            with_tag("<sip:a@b;tag=uri>;tag=old;x=1", "new"),
            "<sip:a@b;tag=uri>;x=1;tag=new"
        );
        assert_eq!(with_tag("<sip:a@b>", "t"), "<sip:a@b>;tag=t");
    }
}

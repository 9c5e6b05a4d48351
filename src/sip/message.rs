//! SIP message model, parser and serializer (RFC 3261 §7, §20).
//!
//! Messages are kept close to the wire: headers stay an ordered list of (name, value) pairs as
//! received, so a response can copy Via/From/To/Call-ID/CSeq verbatim and configured headers can
//! be carried into `info` under the names the SRC used. Compact header forms (§7.3.3) are
//! understood by every lookup. This module does no I/O and does not decide anything about
//! transactions or dialogs.
//!
//! Why not a crate: `rsip` has had no release since 2022 and does not accept compact forms; the
//! maintained fork lives inside `rsipstack`, whose parser cannot be had without its async
//! transport (which truncates UDP at 8 KB). See docs/architecture.md.

use std::fmt::Write as _;

/// Upper bound on a message we parse (UDP datagrams cannot exceed it; TCP framing enforces it).
pub const MAX_MESSAGE_SIZE: usize = 65_535;

/// Why bytes were not a SIP message. Small and `Copy`: it is produced on the receive path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// No blank line separates the header from the body.
    #[error("message has no end of header")]
    Incomplete,
    /// The start line is neither a request line nor a status line.
    #[error("bad start line")]
    BadStartLine,
    /// A header line has no colon or an empty name.
    #[error("bad header line")]
    BadHeader,
    /// The message is not valid UTF-8 in its header section.
    #[error("header is not UTF-8")]
    NotUtf8,
    /// Content-Length is not a number.
    #[error("bad Content-Length")]
    BadContentLength,
    /// Content-Length says more bytes than the datagram carries (RFC 3261 §18.3: malformed).
    #[error("body shorter than Content-Length")]
    BodyTruncated,
    /// A header required by RFC 3261 §8.1.1 (Via, From, To, Call-ID, CSeq) is missing or unusable.
    #[error("missing or bad mandatory header {0}")]
    MissingHeader(&'static str),
    /// The message is larger than [`MAX_MESSAGE_SIZE`].
    #[error("message too large")]
    TooLarge,
}

/// First line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: String, uri: String },
    Response { code: u16, reason: String },
}

/// A parsed SIP message. Headers keep their order and spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub start: StartLine,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Full names of the compact forms (RFC 3261 §7.3.3, RFC 4028 `x`, RFC 3515 `r`, …).
fn expand_compact(name: &str) -> &str {
    if name.len() != 1 {
        return name;
    }
    match name.as_bytes()[0].to_ascii_lowercase() {
        b'i' => "Call-ID",
        b'm' => "Contact",
        b'e' => "Content-Encoding",
        b'l' => "Content-Length",
        b'c' => "Content-Type",
        b'f' => "From",
        b's' => "Subject",
        b'k' => "Supported",
        b't' => "To",
        b'v' => "Via",
        b'x' => "Session-Expires",
        b'o' => "Event",
        b'r' => "Refer-To",
        b'b' => "Referred-By",
        b'u' => "Allow-Events",
        b'a' => "Accept-Contact",
        b'j' => "Reject-Contact",
        b'd' => "Request-Disposition",
        b'y' => "Identity",
        _ => name,
    }
}

/// True when a header name as received means `canonical` (case-insensitive, compact forms).
pub fn header_is(received: &str, canonical: &str) -> bool {
    expand_compact(received).eq_ignore_ascii_case(canonical)
}

/// Index of the end of the header section and the length of its terminator.
fn header_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 1 < buf.len() {
        if buf[i] == b'\n' {
            if buf[i + 1] == b'\n' {
                return Some((i + 1, 1));
            }
            if buf[i + 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') {
                return Some((i + 1, 2));
            }
        }
        i += 1;
    }
    None
}

/// For stream transports: the length of the first complete message in `buf`, `Ok(None)` if more
/// bytes are needed. Leading CRLFs (RFC 5626 keep-alives) are part of no message and are reported
/// as `Ok(Some(n))` with [`Framed::KeepAlive`].
pub fn frame(buf: &[u8]) -> Result<Option<Framed>, ParseError> {
    let crlf = buf.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
    if crlf > 0 {
        return Ok(Some(Framed::KeepAlive(crlf)));
    }
    let Some((end, term)) = header_end(buf) else {
        if buf.len() > MAX_MESSAGE_SIZE {
            return Err(ParseError::TooLarge);
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| ParseError::NotUtf8)?;
    let mut length = 0usize;
    for line in head.lines() {
        if let Some((name, value)) = line.split_once(':')
            && header_is(name.trim(), "Content-Length") {
                length = value.trim().parse().map_err(|_| ParseError::BadContentLength)?;
            }
    }
    let total = end + term + length;
    if total > MAX_MESSAGE_SIZE {
        return Err(ParseError::TooLarge);
    }
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some(Framed::Message(total)))
}

/// What [`frame`] found at the start of a stream buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framed {
    /// `n` bytes of CR/LF keep-alive.
    KeepAlive(usize),
    /// A whole message of `n` bytes.
    Message(usize),
}

impl Message {
    /// Parses one message. On a datagram transport a body longer than Content-Length is cut to
    /// it (RFC 3261 §18.3) and a shorter one is an error.
    pub fn parse(buf: &[u8]) -> Result<Message, ParseError> {
        let msg = Self::parse_unchecked(buf)?;
        if let Some(v) = msg.header("Content-Length") {
            // parse_unchecked already rejected a non-numeric value.
            if v.trim().parse::<usize>().is_ok_and(|n| n > msg.body.len()) {
                return Err(ParseError::BodyTruncated);
            }
        }
        msg.check_mandatory()?;
        Ok(msg)
    }

    /// Like [`Message::parse`] but without the mandatory-header check: used to answer a broken
    /// request with 400 when it still carries enough to address a response.
    pub fn parse_unchecked(buf: &[u8]) -> Result<Message, ParseError> {
        if buf.len() > MAX_MESSAGE_SIZE {
            return Err(ParseError::TooLarge);
        }
        // RFC 3261 §7.5: ignore CRLFs before the start line.
        let start = buf.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
        let buf = &buf[start..];
        let (end, term) = header_end(buf).ok_or(ParseError::Incomplete)?;
        let head = std::str::from_utf8(&buf[..end]).map_err(|_| ParseError::NotUtf8)?;
        let rest = &buf[end + term..];

        let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let first = lines.next().ok_or(ParseError::BadStartLine)?;
        let start = parse_start_line(first)?;

        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.is_empty() {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                // §7.3.1 folding: a continuation line belongs to the previous header.
                let (_, value) = headers.last_mut().ok_or(ParseError::BadHeader)?;
                value.push(' ');
                value.push_str(line.trim());
                continue;
            }
            let (name, value) = line.split_once(':').ok_or(ParseError::BadHeader)?;
            let name = name.trim_end();
            if name.is_empty() || name.contains([' ', '\t']) {
                return Err(ParseError::BadHeader);
            }
            headers.push((name.to_string(), value.trim().to_string()));
        }

        let mut msg = Message { start, headers, body: Vec::new() };
        let body = match msg.header("Content-Length") {
            Some(v) => {
                let n: usize = v.trim().parse().map_err(|_| ParseError::BadContentLength)?;
                &rest[..n.min(rest.len())]
            }
            None => rest,
        };
        msg.body = body.to_vec();
        Ok(msg)
    }

    fn check_mandatory(&self) -> Result<(), ParseError> {
        for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
            if self.header(name).is_none_or(|v| v.trim().is_empty()) {
                return Err(ParseError::MissingHeader(name));
            }
        }
        if self.cseq().is_none() {
            return Err(ParseError::MissingHeader("CSeq"));
        }
        Ok(())
    }

    /// First value of a header (case-insensitive, compact forms understood).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| header_is(n, name)).map(|(_, v)| v.as_str())
    }

    /// All values of a header, in order, each comma-separated element of a list header apart
    /// only where the caller splits them.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers.iter().filter(move |(n, _)| header_is(n, name)).map(|(_, v)| v.as_str())
    }

    /// Option tags of a list header such as Require or Supported (`Require: a, b` and repeated
    /// headers alike).
    pub fn option_tags<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers_named(name).flat_map(|v| v.split(',')).map(str::trim).filter(|t| !t.is_empty())
    }

    pub fn method(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The Request-URI (`None` for responses).
    pub fn request_uri(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    pub fn call_id(&self) -> &str {
        self.header("Call-ID").unwrap_or("")
    }

    /// CSeq number and method.
    pub fn cseq(&self) -> Option<(u32, &str)> {
        let v = self.header("CSeq")?;
        let mut it = v.split_whitespace();
        let n = it.next()?.parse().ok()?;
        let m = it.next()?;
        Some((n, m))
    }

    /// The `tag` parameter of From or To.
    pub fn tag(&self, header: &str) -> Option<&str> {
        self.header(header).and_then(|v| param(name_addr_params(v), "tag"))
    }

    /// The top Via, parsed.
    pub fn top_via(&self) -> Option<Via<'_>> {
        let v = self.header("Via")?;
        // A Via header may carry several comma-separated values; the first is the top one.
        Via::parse(split_list(v).next()?)
    }

    /// Serializes the message with a correct Content-Length.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = String::with_capacity(512 + self.body.len());
        match &self.start {
            StartLine::Request { method, uri } => {
                let _ = write!(s, "{method} {uri} SIP/2.0\r\n");
            }
            StartLine::Response { code, reason } => {
                let _ = write!(s, "SIP/2.0 {code} {reason}\r\n");
            }
        }
        for (n, v) in &self.headers {
            if header_is(n, "Content-Length") {
                continue;
            }
            let _ = write!(s, "{n}: {v}\r\n");
        }
        let _ = write!(s, "Content-Length: {}\r\n\r\n", self.body.len());
        let mut out = s.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }

    /// A response to this request per RFC 3261 §8.2.6.2: Via, From, To, Call-ID and CSeq copied
    /// (To gets `to_tag` if it has none and one is given).
    pub fn response(&self, code: u16, reason: &str, to_tag: Option<&str>) -> Message {
        let mut headers = Vec::with_capacity(8);
        for (n, v) in &self.headers {
            if header_is(n, "Via") || header_is(n, "From") || header_is(n, "Call-ID") || header_is(n, "CSeq") {
                headers.push((n.clone(), v.clone()));
            } else if header_is(n, "To") {
                let mut v = v.clone();
                if let Some(tag) = to_tag
                    && param(name_addr_params(&v), "tag").is_none() && code != 100 {
                        let _ = write!(v, ";tag={tag}");
                    }
                headers.push((n.clone(), v));
            }
        }
        Message { start: StartLine::Response { code, reason: reason.to_string() }, headers, body: Vec::new() }
    }

    pub fn push_header(&mut self, name: &str, value: impl Into<String>) {
        self.headers.push((name.to_string(), value.into()));
    }

    /// Leaves exactly one `name` header (compact forms match), carrying `value`: the first one
    /// keeps its place and spelling and any later ones are removed; appended when there is none.
    pub fn set_header(&mut self, name: &str, value: impl Into<String>) {
        let Some(first) = self.headers.iter().position(|(n, _)| header_is(n, name)) else {
            self.push_header(name, value);
            return;
        };
        self.headers[first].1 = value.into();
        let mut index = 0;
        self.headers.retain(|(n, _)| {
            let keep = index <= first || !header_is(n, name);
            index += 1;
            keep
        });
    }
}

fn parse_start_line(line: &str) -> Result<StartLine, ParseError> {
    let line = line.trim_end();
    if let Some(rest) = line.strip_prefix("SIP/2.0 ") {
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let code: u16 = code.parse().map_err(|_| ParseError::BadStartLine)?;
        if !(100..700).contains(&code) {
            return Err(ParseError::BadStartLine);
        }
        return Ok(StartLine::Response { code, reason: reason.to_string() });
    }
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::BadStartLine);
    };
    // §25.1: method is a token; the version must be SIP/2.0 (case-insensitive per §7.1).
    if method.is_empty() || !method.bytes().all(is_token_char) || uri.is_empty() {
        return Err(ParseError::BadStartLine);
    }
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return Err(ParseError::BadStartLine);
    }
    Ok(StartLine::Request { method: method.to_string(), uri: uri.to_string() })
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// Splits a header value on commas that are not inside quotes or angle brackets.
pub fn split_list(v: &str) -> impl Iterator<Item = &str> {
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0usize);
    let bytes = v.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b'<' if !quoted => depth += 1,
            b'>' if !quoted => depth -= 1,
            b',' if !quoted && depth <= 0 => {
                out.push(v[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(v[start..].trim());
    out.into_iter().filter(|s| !s.is_empty())
}

/// The header parameters of a name-addr or addr-spec value (after `>` if there is one).
pub fn name_addr_params(v: &str) -> &str {
    match v.rfind('>') {
        Some(i) => &v[i + 1..],
        // addr-spec without brackets: parameters after the first ';' belong to the header.
        None => v.find(';').map_or("", |i| &v[i..]),
    }
}

/// The URI inside a name-addr (`"Bob" <sip:bob@x>;tag=1` → `sip:bob@x`) or an addr-spec.
pub fn name_addr_uri(v: &str) -> &str {
    if let (Some(a), Some(b)) = (v.find('<'), v.rfind('>'))
        && a < b {
            return v[a + 1..b].trim();
        }
    v.split(';').next().unwrap_or(v).trim()
}

/// The display name of a name-addr, unquoted.
pub fn name_addr_display(v: &str) -> Option<&str> {
    let i = v.find('<')?;
    let d = v[..i].trim().trim_matches('"').trim();
    (!d.is_empty()).then_some(d)
}

/// Value of `name` in a `;a=b;c` parameter list (case-insensitive name). A flag yields `""`.
pub fn param<'a>(params: &'a str, name: &str) -> Option<&'a str> {
    params.split(';').map(str::trim).find_map(|p| {
        let (n, v) = p.split_once('=').unwrap_or((p, ""));
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim().trim_matches('"'))
    })
}

/// A parsed Via value (RFC 3261 §20.42).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via<'a> {
    pub transport: &'a str,
    pub host: &'a str,
    pub port: Option<u16>,
    pub params: &'a str,
}

impl<'a> Via<'a> {
    pub fn parse(v: &'a str) -> Option<Via<'a>> {
        let v = v.trim();
        let (proto, rest) = v.split_once(|c: char| c.is_whitespace())?;
        let transport = proto.rsplit('/').next()?.trim();
        let rest = rest.trim_start();
        let (sent_by, params) = match rest.find(';') {
            Some(i) => (rest[..i].trim(), &rest[i..]),
            None => (rest, ""),
        };
        let (host, port) = split_host_port(sent_by)?;
        Some(Via { transport, host, port, params })
    }

    pub fn branch(&self) -> Option<&'a str> {
        param(self.params, "branch")
    }

    /// `rport` present (RFC 3581), with or without a value.
    pub fn has_rport(&self) -> bool {
        param(self.params, "rport").is_some()
    }

    /// The sent-by as text (`host:port`), the transaction key's second half (§17.2.3).
    pub fn sent_by(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.to_string(),
        }
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
pub fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = &rest[..end];
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.trim().parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host, port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h, Some(p.trim().parse().ok()?))),
        _ if s.is_empty() => None,
        _ => Some((s, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:srs@192.0.2.10:5060 SIP/2.0\r\n\
v: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK-1;rport\r\n\
f: \"SBC\" <sip:src@192.0.2.1>;tag=abc\r\n\
t: <sip:srs@192.0.2.10>\r\n\
i: call-1@192.0.2.1\r\n\
CSeq: 1 INVITE\r\n\
Require: siprec\r\n\
Subject: a\r\n  folded\r\n\
c: application/sdp\r\n\
l: 4\r\n\r\nv=0\r\nEXTRA";

    #[test]
    fn compact_forms_and_folding() {
        let m = Message::parse(INVITE.as_bytes()).unwrap();
        assert_eq!(m.method(), Some("INVITE"));
        assert_eq!(m.call_id(), "call-1@192.0.2.1");
        assert_eq!(m.tag("From"), Some("abc"));
        assert_eq!(m.tag("To"), None);
        assert_eq!(m.header("Subject"), Some("a folded"));
        assert_eq!(m.body, b"v=0\r");
        let via = m.top_via().unwrap();
        assert_eq!((via.transport, via.host, via.port), ("UDP", "192.0.2.1", Some(5070)));
        assert_eq!(via.branch(), Some("z9hG4bK-1"));
        assert!(via.has_rport());
        assert_eq!(m.cseq(), Some((1, "INVITE")));
    }

    #[test]
    fn content_length_longer_than_datagram_is_malformed() {
        let msg = INVITE.replace("l: 4", "l: 400");
        assert_eq!(Message::parse(msg.as_bytes()), Err(ParseError::BodyTruncated));
    }

    #[test]
    fn missing_call_id_is_rejected() {
        let msg = INVITE.replace("i: call-1@192.0.2.1\r\n", "");
        assert_eq!(Message::parse(msg.as_bytes()), Err(ParseError::MissingHeader("Call-ID")));
    }

    #[test]
    fn response_copies_dialog_headers_and_adds_tag() {
        let m = Message::parse(INVITE.as_bytes()).unwrap();
        let r = m.response(200, "OK", Some("srs1"));
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert!(text.starts_with("SIP/2.0 200 OK\r\n"));
        assert!(text.contains("t: <sip:srs@192.0.2.10>;tag=srs1\r\n"));
        assert!(text.contains("v: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK-1;rport\r\n"));
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
        let again = Message::parse(text.as_bytes()).unwrap();
        assert_eq!(again.status(), Some(200));
        assert_eq!(again.tag("To"), Some("srs1"));
    }

    #[test]
    fn stream_framing() {
        let msg = INVITE.replace("EXTRA", "").replace("l: 4", "l: 5");
        let mut buf = b"\r\n\r\n".to_vec();
        buf.extend_from_slice(msg.as_bytes());
        assert_eq!(frame(&buf), Ok(Some(Framed::KeepAlive(4))));
        let rest = &buf[4..];
        assert_eq!(frame(&rest[..rest.len() - 1]), Ok(None));
        assert_eq!(frame(rest), Ok(Some(Framed::Message(rest.len()))));
    }

    #[test]
    fn list_and_name_addr_helpers() {
        let v: Vec<_> = split_list("\"a, b\" <sip:x>;p=1, <sip:y,z>").collect();
        assert_eq!(v, vec!["\"a, b\" <sip:x>;p=1", "<sip:y,z>"]);
        assert_eq!(name_addr_uri("\"Bob\" <sip:bob@x>;tag=1"), "sip:bob@x");
        assert_eq!(name_addr_display("\"Bob\" <sip:bob@x>;tag=1"), Some("Bob"));
        assert_eq!(split_host_port("[2001:db8::1]:5060"), Some(("2001:db8::1", Some(5060))));
        assert_eq!(split_host_port("host"), Some(("host", None)));
    }

    #[test]
    fn request_uri_is_read_from_requests_only() {
        let m = Message::parse(INVITE.as_bytes()).unwrap();
        assert_eq!(m.request_uri(), Some("sip:srs@192.0.2.10:5060"));
        assert_eq!(m.response(200, "OK", None).request_uri(), None);
    }

    #[test]
    fn set_header_keeps_one_field_in_place_of_the_first() {
        let mut m = Message::parse(INVITE.as_bytes()).unwrap();
        m.push_header("Via", "SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK-2");
        m.set_header("Via", "SIP/2.0/TCP 192.0.2.5;branch=z9hG4bK-3");
        let vias: Vec<_> = m.headers.iter().filter(|(n, _)| header_is(n, "Via")).collect();
        assert_eq!(vias.len(), 1);
        assert_eq!(m.headers[0], ("v".to_string(), "SIP/2.0/TCP 192.0.2.5;branch=z9hG4bK-3".to_string()));
        m.set_header("Call-ID", "other");
        assert_eq!(m.call_id(), "other");
        assert_eq!(m.headers.len(), 9, "replaced, not added");
        m.set_header("Contact", "<sip:src@192.0.2.5>");
        assert_eq!(m.headers.last().map(|(n, v)| (n.as_str(), v.as_str())), Some(("Contact", "<sip:src@192.0.2.5>")));
    }

    #[test]
    fn to_bytes_after_a_body_change_frames_to_the_new_length() {
        let mut m = Message::parse(INVITE.as_bytes()).unwrap();
        m.body.extend_from_slice(b"more");
        let bytes = m.to_bytes();
        assert_eq!(frame(&bytes), Ok(Some(Framed::Message(bytes.len()))));
        assert_eq!(frame(&bytes[..bytes.len() - 1]), Ok(None));
        assert_eq!(Message::parse(&bytes).unwrap().body, b"v=0\rmore");
    }

    #[test]
    fn rtp_and_text_that_is_not_sip_are_rejected() {
        let rtp = [0x80, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 1, b'\n', b'\n'];
        assert!(Message::parse_unchecked(&rtp).is_err());
        assert_eq!(Message::parse_unchecked(b"hello world\r\n\r\n"), Err(ParseError::BadStartLine));
    }

    #[test]
    fn garbage_never_panics() {
        for len in 0..INVITE.len() {
            let _ = Message::parse(&INVITE.as_bytes()[..len]);
            let _ = frame(&INVITE.as_bytes()[..len]);
        }
        let _ = Message::parse(&[0xff, 0xfe, b'\r', b'\n', b'\r', b'\n']);
    }
}

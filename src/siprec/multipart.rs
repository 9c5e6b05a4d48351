//! Splitter for `multipart/*` SIP message bodies (RFC 2046 §5.1), as sent by SIPREC
//! recording clients (RFC 7866 §9: SDP part plus `application/rs-metadata+xml` part).
//!
//! It borrows the body and returns each part's headers and bytes. It is lenient in the ways
//! real session recording clients need: CRLF or bare-LF line ends, a quoted or unquoted
//! `boundary` parameter, part headers with or without a space after the colon, transport
//! padding after a delimiter, and a missing close delimiter when the last part is otherwise
//! complete. Per-part `Content-Length` headers are ignored: some SBCs send wrong values, and
//! RFC 2046 delimits parts by boundary only.
//!
//! It does not decode `Content-Transfer-Encoding`, does not recurse into nested multiparts,
//! does not unfold folded part headers (continuation lines are dropped; none of the headers a
//! SIPREC body part carries is folded in practice) and does not interpret part contents.

use tracing::debug;

/// Why a multipart body could not be split.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MultipartError {
    /// The Content-Type header carries no usable `boundary` parameter.
    #[error("multipart Content-Type has no boundary parameter")]
    NoBoundary,
    /// No line in the body starts with the boundary delimiter.
    #[error("no boundary delimiter found in the multipart body")]
    NoDelimiter,
    /// The close delimiter is missing and the last part ends inside its headers, so the body
    /// was most likely cut short (for example a UDP datagram truncated by the transport).
    #[error("multipart body ends inside the headers of its last part")]
    Truncated,
}

/// One body part, borrowing the message body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part<'a> {
    /// Header fields as received (name, value), names in their original case, values trimmed.
    pub headers: Vec<(&'a str, &'a str)>,
    /// The part's MIME type from its Content-Type header: lowercased, without parameters.
    /// `None` when the part has no Content-Type (RFC 2046 §5.1 would default to text/plain).
    pub content_type: Option<String>,
    /// The part body: everything after the blank line that ends the headers, up to (not
    /// including) the line break that precedes the next delimiter.
    pub body: &'a [u8],
}

impl<'a> Part<'a> {
    /// The first header with this name (compared case-insensitively), if any.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, v)| v)
    }
}

/// Splits `body` into its parts, using the boundary from `content_type` (the message's whole
/// Content-Type header value, e.g. `multipart/mixed;boundary="abc"`). The preamble before the
/// first delimiter and the epilogue after the close delimiter are dropped.
pub fn split<'a>(content_type: &str, body: &'a [u8]) -> Result<Vec<Part<'a>>, MultipartError> {
    let boundary = boundary_param(content_type).ok_or(MultipartError::NoBoundary)?;
    let delimiter = format!("--{boundary}");

    let mut parts = Vec::new();
    // Start offset of the part currently being read (just after its delimiter line).
    let mut current: Option<usize> = None;
    let mut pos = 0;
    while pos < body.len() {
        let line_end = body[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |i| pos + i);
        let next = (line_end + 1).min(body.len());
        if let Some(kind) = delimiter_kind(&body[pos..line_end], delimiter.as_bytes()) {
            if let Some(start) = current {
                // RFC 2046 §5.1.1: the line break before a delimiter belongs to the delimiter.
                let end = strip_line_break(body, start, pos);
                parts.push(parse_part(&body[start..end]).0);
            }
            match kind {
                Delimiter::Close => return Ok(parts),
                Delimiter::Open => current = Some(next),
            }
        }
        pos = next;
    }

    match current {
        None => Err(MultipartError::NoDelimiter),
        Some(start) => {
            let (part, headers_complete) = parse_part(&body[start..]);
            if !headers_complete {
                return Err(MultipartError::Truncated);
            }
            debug!(
                parts = parts.len() + 1,
                "multipart body has no close delimiter; last part kept"
            );
            parts.push(part);
            Ok(parts)
        }
    }
}

/// What a delimiter line does.
enum Delimiter {
    /// `--boundary`: a new part starts on the next line.
    Open,
    /// `--boundary--`: the last part has ended.
    Close,
}

/// Classifies one line (without its `\n`) as a delimiter line, if it is one.
fn delimiter_kind(line: &[u8], delimiter: &[u8]) -> Option<Delimiter> {
    let rest = line.strip_prefix(delimiter)?;
    if rest.starts_with(b"--") {
        return Some(Delimiter::Close);
    }
    // RFC 2046 §5.1.1 allows "transport padding" (linear whitespace) after the delimiter.
    // Anything else means the line only starts with the boundary text and is content.
    rest.iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r'))
        .then_some(Delimiter::Open)
}

/// Returns `end` moved back over one `\n` or `\r\n`, never before `start`.
fn strip_line_break(body: &[u8], start: usize, mut end: usize) -> usize {
    if end > start && body[end - 1] == b'\n' {
        end -= 1;
        if end > start && body[end - 1] == b'\r' {
            end -= 1;
        }
    }
    end
}

/// Parses one part; the flag says whether the blank line ending its headers was found.
/// Without it every line is read as a header and the body is empty.
fn parse_part(bytes: &[u8]) -> (Part<'_>, bool) {
    let mut headers: Vec<(&str, &str)> = Vec::new();
    let mut pos = 0;
    let mut body_start = None;
    while pos < bytes.len() {
        let line_end = bytes[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| pos + i);
        let next = (line_end + 1).min(bytes.len());
        let raw = &bytes[pos..line_end];
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.is_empty() {
            body_start = Some(next);
            break;
        }
        // Lines that are not UTF-8 or have no colon are not headers we can use; skip them
        // rather than losing the whole part.
        if let Some((name, value)) = std::str::from_utf8(line)
            .ok()
            .and_then(|l| l.split_once(':'))
        {
            let name = name.trim();
            if !name.is_empty() && !name.contains(char::is_whitespace) {
                headers.push((name, value.trim()));
            }
        }
        pos = next;
    }

    let content_type = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| mime_type(v))
        .filter(|m| !m.is_empty());
    let body = body_start.map_or(&bytes[bytes.len()..], |s| &bytes[s..]);
    (
        Part {
            headers,
            content_type,
            body,
        },
        body_start.is_some(),
    )
}

/// The MIME type of a Content-Type value: lowercased, parameters removed.
pub fn mime_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The `boundary` parameter of a Content-Type value (RFC 2046 §5.1.1), quoted or not.
fn boundary_param(content_type: &str) -> Option<&str> {
    content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let value = value.trim();
        // A quoted boundary cannot contain `"` (it is not in the bchars set), so the closing
        // quote is the next one; a `;` inside quotes is legal but splits the parameter above,
        // which no SIPREC client has been seen to send.
        let value = match value.strip_prefix('"') {
            Some(quoted) => quoted.split('"').next().unwrap_or_default(),
            None => value,
        };
        (!value.is_empty()).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDP: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    const XML: &str =
        "<?xml version=\"1.0\"?>\r\n<recording xmlns=\"urn:ietf:params:xml:ns:recording:1\"/>";

    fn crlf_body(boundary: &str) -> String {
        format!(
            "preamble to ignore\r\n--{boundary}\r\nContent-Type: application/sdp\r\n\r\n{SDP}\r\n--{boundary}\r\nContent-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n{XML}\r\n--{boundary}--\r\nepilogue\r\n"
        )
    }

    #[test]
    fn splits_crlf_body_with_unquoted_boundary() {
        let body = crlf_body("b0undary-7");
        let parts = split("multipart/mixed;boundary=b0undary-7", body.as_bytes()).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].content_type.as_deref(), Some("application/sdp"));
        assert_eq!(parts[0].body, SDP.as_bytes());
        assert_eq!(
            parts[1].content_type.as_deref(),
            Some("application/rs-metadata+xml")
        );
        assert_eq!(
            parts[1].header("content-disposition"),
            Some("recording-session")
        );
        assert_eq!(parts[1].body, XML.as_bytes());
    }

    #[test]
    fn splits_with_quoted_boundary_and_other_parameters() {
        // The boundary contains a space, which RFC 2046 §5.1.1 allows (not as the last char).
        let body = crlf_body("q b");
        let ct = "Multipart/Mixed; charset=utf-8; BOUNDARY=\"q b\" ;x=y";
        let parts = split(ct, body.as_bytes()).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].body, SDP.as_bytes());
    }

    #[test]
    fn splits_bare_lf_body() {
        let body = crlf_body("lf").replace("\r\n", "\n");
        let parts = split("multipart/mixed;boundary=lf", body.as_bytes()).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].body, SDP.replace("\r\n", "\n").as_bytes());
        assert_eq!(parts[1].body, XML.replace("\r\n", "\n").as_bytes());
    }

    #[test]
    fn headers_without_space_after_colon_and_mixed_case_names() {
        let body = "--z\r\ncontent-TYPE:Application/SDP;charset=x\r\nContent-Length:9999\r\n\r\nv=0\r\n--z--\r\n";
        let parts = split("multipart/mixed;boundary=z", body.as_bytes()).unwrap();
        assert_eq!(parts[0].content_type.as_deref(), Some("application/sdp"));
        assert_eq!(parts[0].header("Content-Length"), Some("9999"));
        assert_eq!(parts[0].body, b"v=0");
    }

    #[test]
    fn missing_close_delimiter_keeps_complete_last_part() {
        let body = format!(
            "--m\nContent-Type: application/sdp\n\n{SDP}\n--m\nContent-Type: application/rs-metadata\n\n{XML}\n"
        );
        let parts = split("multipart/mixed;boundary=m", body.as_bytes()).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(
            parts[1].content_type.as_deref(),
            Some("application/rs-metadata")
        );
        assert_eq!(parts[1].body, format!("{XML}\n").as_bytes());
    }

    #[test]
    fn per_part_content_length_shorter_than_the_part_is_ignored() {
        let body = "--z\r\nContent-Type:application/rs-metadata+xml\r\nContent-Length:5\r\n\r\n<recording/>\r\n--z--\r\n";
        let parts = split("multipart/mixed;boundary=z", body.as_bytes()).unwrap();
        assert_eq!(parts[0].body, b"<recording/>");
    }

    #[test]
    fn missing_close_delimiter_without_final_line_break_keeps_last_part() {
        let body = format!(
            "--s\r\nContent-Type: application/sdp\r\n\r\n{SDP}\r\n--s\r\nContent-Type: application/rs-metadata+xml\r\n\r\n{XML}"
        );
        let parts = split("multipart/mixed;boundary=s", body.as_bytes()).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].body, XML.as_bytes());
    }

    #[test]
    fn last_part_cut_inside_headers_is_truncated() {
        let body = format!(
            "--m\r\nContent-Type: application/sdp\r\n\r\n{SDP}\r\n--m\r\nContent-Type: appl"
        );
        assert_eq!(
            split("multipart/mixed;boundary=m", body.as_bytes()),
            Err(MultipartError::Truncated)
        );
    }

    #[test]
    fn close_delimiter_with_transport_padding_and_no_final_newline() {
        let body = "--p  \r\nContent-Type: text/plain\r\n\r\nhello\r\n--p-- ";
        let parts = split("multipart/mixed; boundary=p", body.as_bytes()).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].body, b"hello");
    }

    #[test]
    fn line_that_only_starts_with_boundary_is_content() {
        let body = "--ab\r\n\r\n--abc is not a delimiter\r\n--ab--\r\n";
        let parts = split("multipart/mixed;boundary=ab", body.as_bytes()).unwrap();
        assert_eq!(parts.len(), 1);
        assert!(parts[0].headers.is_empty());
        assert_eq!(parts[0].content_type, None);
        assert_eq!(parts[0].body, b"--abc is not a delimiter");
    }

    #[test]
    fn missing_boundary_parameter_or_delimiter_is_an_error() {
        assert_eq!(
            split("multipart/mixed", b"--x\r\n"),
            Err(MultipartError::NoBoundary)
        );
        assert_eq!(
            split("multipart/mixed;boundary=\"\"", b"--x\r\n"),
            Err(MultipartError::NoBoundary)
        );
        assert_eq!(
            split("multipart/mixed;boundary=y", b"--x\r\n\r\nbody"),
            Err(MultipartError::NoDelimiter)
        );
        assert_eq!(
            split("multipart/mixed;boundary=y", b""),
            Err(MultipartError::NoDelimiter)
        );
    }
}

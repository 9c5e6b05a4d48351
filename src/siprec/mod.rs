//! SIPREC offer parsing (RFC 7866 §8–9): turns the body of a recording INVITE into the SDP
//! offer and the recording metadata.
//!
//! Pure and sans-IO: bytes in, values out. It decides which status a broken body deserves (see
//! [`OfferError`]) but sends nothing; building the SDP answer is [`sdp::build_answer`]. Metadata
//! problems never fail an offer: the audio is what must be recorded, and the metadata is
//! reported as [`MetadataOutcome::Invalid`] for the caller to log and keep.

pub mod metadata;
pub mod multipart;
pub mod sdp;

use tracing::debug;

/// Size limits applied while parsing an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfferLimits {
    /// Largest metadata part accepted, in bytes.
    pub max_metadata_bytes: usize,
}

impl Default for OfferLimits {
    fn default() -> Self {
        Self {
            max_metadata_bytes: 64 * 1024,
        }
    }
}

/// A parsed SIPREC offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The SDP offer.
    pub sdp: sdp::SessionDescription,
    /// The recording metadata, if any came with it.
    pub metadata: MetadataOutcome,
}

/// What became of the metadata part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataOutcome {
    /// The body had no metadata part.
    Absent,
    /// The metadata parsed.
    Parsed(Box<metadata::Metadata>),
    /// The metadata part was there but could not be read.
    Invalid {
        /// Why it could not be read.
        error: String,
        /// The part as received (lossily decoded as UTF-8), for the caller to keep.
        raw: String,
    },
}

/// Why an offer body cannot be used; each variant names the SIP response it calls for.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum OfferError {
    /// No application/sdp part (or an empty body): answer 488.
    #[error("no SDP in the offer")]
    NoSdp,
    /// The SDP did not parse: answer 488.
    #[error("SDP did not parse: {0}")]
    BadSdp(String),
    /// The body claims to be multipart but cannot be split: answer 400.
    #[error("multipart body: {0}")]
    Multipart(multipart::MultipartError),
    /// The metadata part is larger than [`OfferLimits::max_metadata_bytes`]: answer 413.
    #[error("metadata is {size} bytes, limit {limit}")]
    MetadataTooLarge {
        /// Size of the metadata part.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The body's Content-Type is neither SDP nor multipart/mixed: answer 415.
    #[error("unsupported Content-Type {0}")]
    UnsupportedContentType(String),
}

/// RFC 7866 §9.1 metadata type, and the `application/rs-metadata` name used by pre-RFC drafts
/// and still sent by some SBCs.
const METADATA_TYPES: [&str; 2] = ["application/rs-metadata+xml", "application/rs-metadata"];

/// content_type: the SIP Content-Type header value as received (None if absent). body: the message body bytes.
///
/// Without a Content-Type the body is read as SDP: RFC 3261 §20.15 requires the header, but
/// the only body a UA plausibly omits it for is a plain SDP offer.
pub fn parse_offer(
    content_type: Option<&str>,
    body: &[u8],
    limits: &OfferLimits,
) -> Result<Offer, OfferError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(OfferError::NoSdp);
    }
    let mime = content_type.map_or_else(|| "application/sdp".to_owned(), multipart::mime_type);
    match mime.as_str() {
        "application/sdp" => Ok(Offer {
            sdp: parse_sdp(body)?,
            metadata: MetadataOutcome::Absent,
        }),
        "multipart/mixed" => {
            // `content_type` is Some here: the None case maps to application/sdp above.
            let parts = multipart::split(content_type.unwrap_or_default(), body)
                .map_err(OfferError::Multipart)?;
            parse_parts(&parts, limits)
        }
        // A bare metadata body (RFC 7866 §9.1 allows one in a re-INVITE or UPDATE) is a
        // type we support, but there is no offer in it.
        t if METADATA_TYPES.contains(&t) => Err(OfferError::NoSdp),
        _ => Err(OfferError::UnsupportedContentType(mime)),
    }
}

/// The metadata an in-dialog request carries (re-INVITE, UPDATE, INFO): a multipart body with
/// a metadata part, or a bare metadata document (RFC 7866 §9.1). Anything else, or a multipart
/// body that cannot be read as an offer, is [`MetadataOutcome::Absent`]. Used by the runtime
/// when such a request arrives and by crash recovery to replay the updates kept in `call.json`.
pub fn metadata_update(content_type: Option<&str>, body: &[u8], limits: &OfferLimits) -> MetadataOutcome {
    let mime = content_type.map(multipart::mime_type);
    match mime.as_deref() {
        Some(t) if METADATA_TYPES.contains(&t) => {
            if body.len() > limits.max_metadata_bytes {
                return MetadataOutcome::Invalid {
                    error: "metadata update over metadata.max_size".into(),
                    raw: String::new(),
                };
            }
            match metadata::parse_metadata(body) {
                Ok(m) => MetadataOutcome::Parsed(Box::new(m)),
                Err(e) => MetadataOutcome::Invalid {
                    error: e.to_string(),
                    raw: String::from_utf8_lossy(body).into(),
                },
            }
        }
        Some("multipart/mixed") => match parse_offer(content_type, body, limits) {
            Ok(o) => o.metadata,
            Err(_) => MetadataOutcome::Absent,
        },
        _ => MetadataOutcome::Absent,
    }
}

fn parse_parts(parts: &[multipart::Part<'_>], limits: &OfferLimits) -> Result<Offer, OfferError> {
    let is_type = |p: &multipart::Part<'_>, types: &[&str]| {
        p.content_type
            .as_deref()
            .is_some_and(|t| types.contains(&t))
    };
    let sdp_part = parts
        .iter()
        .find(|p| is_type(p, &["application/sdp"]))
        .ok_or(OfferError::NoSdp)?;
    // RFC 7866 §9.1 also marks the metadata part with `Content-Disposition: recording-session`;
    // fall back to that when the type is mangled (seen: `application/ +xml`).
    let metadata_part = parts
        .iter()
        .find(|p| is_type(p, &METADATA_TYPES))
        .or_else(|| {
            parts.iter().find(|p| {
                !is_type(p, &["application/sdp"])
                    && p.header("content-disposition")
                        .is_some_and(|d| multipart::mime_type(d) == "recording-session")
            })
        });
    if let Some(part) = metadata_part
        && part.body.len() > limits.max_metadata_bytes
    {
        return Err(OfferError::MetadataTooLarge {
            size: part.body.len(),
            limit: limits.max_metadata_bytes,
        });
    }
    let sdp = parse_sdp(sdp_part.body)?;
    let metadata = match metadata_part {
        None => MetadataOutcome::Absent,
        Some(part) => match metadata::parse_metadata(part.body) {
            Ok(md) => MetadataOutcome::Parsed(Box::new(md)),
            Err(e) => {
                debug!(error = %e, "metadata part could not be read");
                MetadataOutcome::Invalid {
                    error: e.to_string(),
                    raw: String::from_utf8_lossy(part.body).into_owned(),
                }
            }
        },
    };
    Ok(Offer { sdp, metadata })
}

fn parse_sdp(body: &[u8]) -> Result<sdp::SessionDescription, OfferError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(OfferError::NoSdp);
    }
    // SDP is UTF-8 (RFC 8866 §5); a stray byte elsewhere must not cost the call its audio.
    sdp::parse(&String::from_utf8_lossy(body)).map_err(|e| OfferError::BadSdp(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDP: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.4\r\ns=-\r\nc=IN IP4 192.0.2.4\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0\r\na=label:1\r\na=sendonly\r\nm=audio 20002 RTP/AVP 0\r\na=label:2\r\na=sendonly\r\n";
    const MD: &str = "<recording xmlns='urn:ietf:params:xml:ns:recording:1'><session session_id='s'><sipSessionID>abc</sipSessionID></session></recording>";

    fn body(parts: &[(&str, &str)]) -> String {
        let mut b = String::new();
        for (ct, content) in parts {
            b.push_str(&format!("--XyZ\r\nContent-Type: {ct}\r\n\r\n{content}\r\n"));
        }
        b.push_str("--XyZ--\r\n");
        b
    }

    fn offer(body: &str) -> Result<Offer, OfferError> {
        parse_offer(
            Some("multipart/mixed;boundary=XyZ"),
            body.as_bytes(),
            &OfferLimits::default(),
        )
    }

    #[test]
    fn plain_sdp_has_no_metadata() {
        let offer = parse_offer(
            Some("Application/SDP"),
            SDP.as_bytes(),
            &OfferLimits::default(),
        )
        .unwrap();
        assert_eq!(offer.sdp.media.len(), 2);
        assert_eq!(offer.metadata, MetadataOutcome::Absent);
        let offer = parse_offer(None, SDP.as_bytes(), &OfferLimits::default()).unwrap();
        assert_eq!(offer.sdp.media.len(), 2);
    }

    #[test]
    fn metadata_before_sdp_and_extra_part_ignored() {
        let offer = offer(&body(&[
            ("application/rs-metadata+xml", MD),
            ("application/gtd", "IAM,\r\nGCI,1234"),
            ("application/sdp", SDP),
        ]))
        .unwrap();
        assert_eq!(offer.sdp.media.len(), 2);
        let MetadataOutcome::Parsed(md) = offer.metadata else {
            panic!("{:?}", offer.metadata)
        };
        assert_eq!(md.sip_session_id(), Some("abc"));
    }

    #[test]
    fn older_rs_metadata_type_is_accepted() {
        let offer = offer(&body(&[
            ("application/sdp", SDP),
            ("application/rs-metadata", MD),
        ]))
        .unwrap();
        assert!(matches!(offer.metadata, MetadataOutcome::Parsed(_)));
    }

    #[test]
    fn invalid_metadata_keeps_the_sdp() {
        let offer = offer(&body(&[
            ("application/sdp", SDP),
            ("application/rs-metadata+xml", "<recording><oops"),
        ]))
        .unwrap();
        assert_eq!(offer.sdp.media.len(), 2);
        let MetadataOutcome::Invalid { error, raw } = offer.metadata else {
            panic!()
        };
        assert!(error.contains("malformed"), "{error}");
        assert_eq!(raw, "<recording><oops");
    }

    #[test]
    fn mangled_metadata_type_found_by_disposition() {
        let b = format!(
            "--XyZ\r\nContent-Type:application/ +xml\r\nContent-Disposition:recording-session\r\n\r\ncompleteSRC\r\n--XyZ\r\nContent-Type: application/sdp\r\n\r\n{SDP}\r\n--XyZ--\r\n"
        );
        let offer = offer(&b).unwrap();
        assert!(
            matches!(offer.metadata, MetadataOutcome::Invalid { ref raw, .. } if raw == "completeSRC")
        );
    }

    #[test]
    fn metadata_over_the_limit_is_too_large() {
        let b = body(&[
            ("application/sdp", SDP),
            ("application/rs-metadata+xml", MD),
        ]);
        let limits = OfferLimits {
            max_metadata_bytes: MD.len() - 1,
        };
        let err = parse_offer(
            Some("multipart/mixed; boundary=\"XyZ\""),
            b.as_bytes(),
            &limits,
        )
        .unwrap_err();
        assert!(
            matches!(err, OfferError::MetadataTooLarge { size, limit } if size == MD.len() && limit == MD.len() - 1)
        );
        let limits = OfferLimits {
            max_metadata_bytes: MD.len(),
        };
        assert!(
            parse_offer(
                Some("multipart/mixed; boundary=\"XyZ\""),
                b.as_bytes(),
                &limits
            )
            .is_ok()
        );
    }

    #[test]
    fn errors_map_to_their_variants() {
        let limits = OfferLimits::default();
        assert!(matches!(
            parse_offer(Some("application/sdp"), b" \r\n", &limits),
            Err(OfferError::NoSdp)
        ));
        assert!(matches!(
            offer(&body(&[("application/rs-metadata+xml", MD)])),
            Err(OfferError::NoSdp)
        ));
        assert!(matches!(
            offer(&body(&[("application/sdp", "")])),
            Err(OfferError::NoSdp)
        ));
        assert!(matches!(
            offer(&body(&[("application/sdp", "hello")])),
            Err(OfferError::BadSdp(_))
        ));
        assert!(matches!(
            parse_offer(Some("multipart/mixed"), SDP.as_bytes(), &limits),
            Err(OfferError::Multipart(multipart::MultipartError::NoBoundary))
        ));
        assert!(matches!(
            parse_offer(Some("text/plain"), SDP.as_bytes(), &limits),
            Err(OfferError::UnsupportedContentType(t)) if t == "text/plain"
        ));
        assert!(matches!(
            parse_offer(Some("application/rs-metadata+xml"), MD.as_bytes(), &limits),
            Err(OfferError::NoSdp)
        ));
    }
}

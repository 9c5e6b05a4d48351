//! From a finished capture to the recording that is delivered: the capture (`capture.wav`, one
//! channel per recorded stream) is rendered through the layout the mapping chose into the
//! configured format (`audio.wav`, `audio.mp3` or `audio.opus`), `info` is brought in line with
//! what was written, and the recording moves to `pending/` ([`Spool::finish`]).
//!
//! The same steps finish a call that ended and one recovered after a crash, so both give the
//! same file and `info`. Every step can be repeated: a crash during rendering leaves the
//! capture in `active/` (the render writes a `.part` file and renames it), and a crash after
//! the capture was removed leaves the rendered file, which is then taken as it is. Blocking:
//! run it on a blocking thread.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use serde_json::{Value, json};

use super::spool::{CAPTURE_FILE, Spool, SpoolError, audio_in};
use crate::config::Config;
use crate::mapping::{LayoutKind, Mapped, MappingRules};
use crate::media::render::{self, FrameSpan, Format, RenderError};
use crate::media::wav::WavReader;
use crate::siprec::OfferLimits;

/// What turning captures into deliveries needs from the configuration.
#[derive(Debug, Clone, Default)]
pub struct Finishing {
    pub limits: OfferLimits,
    pub layout: LayoutKind,
    pub rules: MappingRules,
    pub format: Format,
}

impl Finishing {
    /// From the configuration (its format was checked against this build when it was loaded).
    pub fn from_config(config: &Config) -> Self {
        Finishing {
            limits: OfferLimits { max_metadata_bytes: config.metadata.max_size },
            layout: config.recording.layout,
            rules: config.mapping.clone(),
            format: Format::from_config(&config.recording.format.0).unwrap_or_default(),
        }
    }
}

/// Why a recording could not be finished; it stays in `active/` (recovered at the next start).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProduceError {
    /// Rendering failed even as PCM WAV (the disk, or an unreadable capture).
    #[error("render: {0}")]
    Render(#[from] RenderError),
    /// The spool could not take the recording.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// `info` could not be serialised (never expected).
    #[error("info: {0}")]
    Info(String),
}

/// What [`produce`] did, for the log and the audit record.
#[derive(Debug, Clone)]
pub struct Produced {
    /// The recording's directory in `pending/`.
    pub pending: PathBuf,
    /// Frames of the delivered audio.
    pub frames: u64,
    /// Its sample rate.
    pub sample_rate: u32,
}

/// Renders `active/<name>/capture.wav` through `mapped.layout` into `format`, writes `info`
/// (with `audio.format` and any fallback note as written) and moves the recording to
/// `pending/`.
pub fn produce(spool: &Spool, name: &str, mut mapped: Mapped, format: Format) -> Result<Produced, ProduceError> {
    let active = spool.active_dir(name);
    let capture = active.join(CAPTURE_FILE);
    let (frames, sample_rate) = if capture.exists() {
        let shape = {
            let file = File::open(&capture).map_err(|e| RenderError::Io { op: "open", path: capture.clone(), source: e })?;
            let reader = WavReader::new(BufReader::new(file))
                .map_err(|source| RenderError::Capture { path: capture.clone(), source })?;
            *reader.shape()
        };
        let spans: Vec<Vec<FrameSpan>> = if mapped.layout.channels.is_empty() {
            // Nothing to route (no usable stream): the capture's channels as they are.
            (0..usize::from(shape.channels)).map(|c| vec![FrameSpan { stream: c, from_frame: 0, to_frame: None }]).collect()
        } else {
            mapped
                .layout
                .channels
                .iter()
                .map(|ch| ch.sources.iter().map(|s| FrameSpan::from_ms(s.stream, s.from_ms, s.to_ms, shape.sample_rate)).collect())
                .collect()
        };
        if format == Format::Wav && render::is_identity(&spans, shape.channels) {
            spool.adopt_capture(name)?;
            (shape.frames, shape.sample_rate)
        } else {
            let out = active.join("audio");
            let rendered = match render::render(&capture, &spans, format, &out) {
                Ok(r) => r,
                Err(e @ (RenderError::Encode(_) | RenderError::Unavailable(_))) if format != Format::Wav => {
                    tracing::error!(error = %e, format = format.config_name(), "cannot encode the recording; delivering it as PCM WAV");
                    let mut r = render::render(&capture, &spans, Format::Wav, &out)?;
                    r.note = Some(format!("written as PCM WAV: {} failed: {e}", format.config_name()));
                    r
                }
                Err(e) => return Err(e.into()),
            };
            if let Some(note) = &rendered.note {
                tracing::warn!(%note, "recording not in the configured format");
                add_note(&mut mapped.info, note);
            }
            mapped.info["audio"] = json!({ "format": rendered.kind.format_name });
            (rendered.frames, rendered.sample_rate)
        }
    } else {
        // Rendered before a crash: what is there is what is delivered.
        let kind = audio_in(&active).map(|(_, k)| k);
        if let Some(kind) = kind {
            mapped.info["audio"] = json!({ "format": kind.format_name });
        }
        (0, 0)
    };
    let bytes = serde_json::to_vec_pretty(&mapped.info).map_err(|e| ProduceError::Info(e.to_string()))?;
    let pending = spool.finish(name, &bytes)?;
    Ok(Produced { pending, frames, sample_rate })
}

/// Appends a note to `metaData.gateway.notes`.
fn add_note(info: &mut Value, note: &str) {
    let gateway = &mut info["metaData"]["gateway"];
    match gateway.get_mut("notes") {
        Some(Value::Array(notes)) => notes.push(json!(note)),
        _ => gateway["notes"] = json!([note]),
    }
}

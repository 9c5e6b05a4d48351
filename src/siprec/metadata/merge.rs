//! Applying a later metadata document to the state built from the earlier ones
//! (RFC 7865 §8.2), for re-INVITE, UPDATE and BYE bodies.
//!
//! The recording structure follows the RFC: a complete document is the new truth for the
//! group, sessions, participants and streams (ones it does not list are gone from the
//! state; the caller's change history still has them); a partial document updates or adds
//! elements by id, field by field, and never removes one (a participant that left carries a
//! `disassociated` time). Vendor data describes the call rather than its current state, so
//! in both modes extensions and warnings accumulate, vendor hints take the update's values
//! where it has them, and vendor call ids seen first stay first (the interaction's id must
//! not change because a transfer brought a new tracking id).

use super::{DataMode, MdParticipant, MdSession, MdStream, Metadata, VendorHints};

impl Metadata {
    /// Applies `update`, a later document of the same recording session, to `self`.
    pub fn merge(&mut self, update: &Metadata) {
        let mut extensions = std::mem::take(&mut self.extensions);
        extensions.extend(update.extensions.iter().cloned());
        let mut warnings = std::mem::take(&mut self.warnings);
        warnings.extend(update.warnings.iter().cloned());
        let mut vendor = std::mem::take(&mut self.vendor);
        hints(&mut vendor, &update.vendor);

        match update.data_mode {
            DataMode::Complete => {
                self.data_mode = DataMode::Complete;
                self.group_id.clone_from(&update.group_id);
                self.sessions.clone_from(&update.sessions);
                self.participants.clone_from(&update.participants);
                self.streams.clone_from(&update.streams);
            }
            // The state stays whatever mode it was: a partial update does not make the
            // merged state partial.
            DataMode::Partial => {
                if update.group_id.is_some() {
                    self.group_id.clone_from(&update.group_id);
                }
                for s in &update.sessions {
                    match self.sessions.iter_mut().find(|x| x.id == s.id) {
                        Some(existing) => session(existing, s),
                        None => self.sessions.push(s.clone()),
                    }
                }
                for p in &update.participants {
                    participant(self.participant_entry(&p.id), p);
                }
                for s in &update.streams {
                    match self.streams.iter_mut().find(|x| x.id == s.id) {
                        Some(existing) => stream(existing, s),
                        None => self.streams.push(s.clone()),
                    }
                }
            }
        }
        self.extensions = extensions;
        self.warnings = warnings;
        self.vendor = vendor;
    }
}

/// Overwrites `slot` with `value` when the update has one.
fn take<T: Clone>(slot: &mut Option<T>, value: &Option<T>) {
    if value.is_some() {
        slot.clone_from(value);
    }
}

pub(super) fn session(existing: &mut MdSession, update: &MdSession) {
    if !update.sip_session_ids.is_empty() {
        existing.sip_session_ids.clone_from(&update.sip_session_ids);
    }
    take(&mut existing.group_ref, &update.group_ref);
    take(&mut existing.start, &update.start);
    take(&mut existing.stop, &update.stop);
}

/// A participant's streams are replaced only when the update says which streams it has: an
/// empty list then means it sends nothing (hold), while a participant named only for its
/// name or a disassociate-time keeps its streams.
pub(super) fn participant(existing: &mut MdParticipant, update: &MdParticipant) {
    take(&mut existing.aor, &update.aor);
    take(&mut existing.name, &update.name);
    take(&mut existing.session_ref, &update.session_ref);
    take(&mut existing.associated, &update.associated);
    take(&mut existing.disassociated, &update.disassociated);
    if update.streams_given {
        existing.sends.clone_from(&update.sends);
        existing.receives.clone_from(&update.receives);
        existing.streams_given = true;
    }
}

pub(super) fn stream(existing: &mut MdStream, update: &MdStream) {
    take(&mut existing.label, &update.label);
    take(&mut existing.session_ref, &update.session_ref);
    take(&mut existing.mode, &update.mode);
    take(&mut existing.associated, &update.associated);
    take(&mut existing.disassociated, &update.disassociated);
}

fn hints(state: &mut VendorHints, update: &VendorHints) {
    for id in &update.call_ids {
        if !state.call_ids.contains(id) {
            state.call_ids.push(id.clone());
        }
    }
    take(&mut state.recorded_user, &update.recorded_user);
    take(
        &mut state.recorded_user_originated,
        &update.recorded_user_originated,
    );
    take(&mut state.calling, &update.calling);
    take(&mut state.called, &update.called);
    take(&mut state.dialed, &update.dialed);
    for header in &update.headers {
        if !state.headers.contains(header) {
            state.headers.push(header.clone());
        }
    }
}

//! Operator and announcement decisions about who is in the cluster: adding,
//! removing, spreading the versioned records with heartbeats, and merging
//! the records peers send (including what they say about this replica).

use super::{
    Admission, AdmissionMerge, Liveness, Member, Membership, ViewChange, MAX_ADMISSION_LEAP,
};

impl Membership {
    /// An operator (or a starting replica announcing itself) adds `address`.
    pub fn admit(&mut self, address: &str, now_ms: u64) -> ViewChange {
        // Present: in the view, or admitted and still awaited (never heard
        // from). A dead member that was heard from is admitted afresh.
        let present = if address == self.me {
            !self.removed()
        } else {
            self.members.get(address).is_some_and(|m| {
                Self::in_view(m) || (m.admission.admitted && m.incarnation.is_none())
            })
        };
        if present {
            return ViewChange::AlreadyPresent;
        }
        if address != self.me && !self.members.contains_key(address) && !self.has_room() {
            return ViewChange::TableFull;
        }
        let Some(version) = self.next_admission_version() else {
            return ViewChange::CounterExhausted;
        };
        // Room was checked above (or the address is known already).
        let _ = self.upsert_admitted(address, version, now_ms);
        ViewChange::Added
    }

    /// An operator removes `address` from the cluster.
    /// Any admitted member can be removed — alive, dead, or never heard from —
    /// and is then no longer probed.
    pub fn remove(&mut self, address: &str) -> ViewChange {
        let present = address == self.me
            || self
                .members
                .get(address)
                .is_some_and(|m| m.admission.admitted);
        if !present {
            return ViewChange::Absent;
        }
        let Some(version) = self.next_admission_version() else {
            return ViewChange::CounterExhausted;
        };
        let record = Admission {
            address: address.to_string(),
            admitted: false,
            version,
        };
        if address == self.me {
            // The replica now knows it was removed (see `removed`); the record
            // spreads so that every other replica drops it.
            let fresh = Member::fresh(record.clone(), 0);
            self.members
                .entry(address.to_string())
                .or_insert(fresh)
                .admission = record;
        } else if let Some(member) = self.members.get_mut(address) {
            member.admission = record;
        }
        ViewChange::Deleted
    }

    /// The version for a new decision, or `None` if the counter is exhausted.
    fn next_admission_version(&mut self) -> Option<u64> {
        self.admission_clock = self.admission_clock.checked_add(1)?;
        Some(self.admission_clock)
    }

    /// Every admission record worth spreading, for heartbeats: decisions
    /// (operator changes, announcements, the start-up view) and this
    /// replica's own standing. Placeholders for senders we merely heard from
    /// (version 0, not admitted) decide nothing and are not spread.
    pub fn admissions(&self) -> Vec<Admission> {
        let mut records: Vec<Admission> = self
            .members
            .values()
            .map(|m| m.admission.clone())
            .filter(|r| !r.is_placeholder())
            .collect();
        if !self.members.contains_key(&self.me) {
            // Unless an operator removed it, a replica vouches for itself, so
            // that a replica added to a running cluster learns of the one
            // that added it.
            records.push(Admission {
                address: self.me.clone(),
                admitted: true,
                version: 0,
            });
        }
        records
    }

    /// Merges admission records heard from a peer. Reports the records that
    /// changed an admission and how many were refused as beyond the bound.
    pub fn merge_admissions(&mut self, records: &[Admission], now_ms: u64) -> AdmissionMerge {
        let mut changed = Vec::new();
        let mut refused = 0;
        for record in records.iter().filter(|r| !r.is_placeholder()) {
            if record.version > self.admission_clock.saturating_add(MAX_ADMISSION_LEAP) {
                refused += 1;
                continue;
            }
            self.admission_clock = self.admission_clock.max(record.version);
            if record.address == self.me {
                // A replica learns of its own removal (and of being added
                // back), so that it stops taking writes and says so; without a
                // removal it holds no record of itself (it vouches for itself).
                let known = self.members.get(&self.me).map(|m| &m.admission);
                let learn = match known {
                    Some(current) => record.beats(current),
                    None => !record.admitted,
                };
                if learn {
                    self.members
                        .entry(self.me.clone())
                        .or_insert_with(|| Member::fresh(record.clone(), now_ms))
                        .admission = record.clone();
                    changed.push(record.clone());
                }
                continue;
            }
            let room = self.has_room();
            match self.members.get_mut(&record.address) {
                Some(member) if !record.beats(&member.admission) => {}
                Some(member) => {
                    let was_admitted = member.admission.admitted;
                    member.admission = record.clone();
                    if record.admitted && !was_admitted {
                        member.liveness = Liveness::Alive;
                        member.last_heard_ms = now_ms;
                    }
                    if was_admitted != record.admitted {
                        changed.push(record.clone());
                    }
                }
                None if !room => refused += 1,
                None => {
                    self.members.insert(
                        record.address.clone(),
                        Member::fresh(record.clone(), now_ms),
                    );
                    if record.admitted && record.address != self.me {
                        changed.push(record.clone());
                    }
                }
            }
        }
        AdmissionMerge { changed, refused }
    }
}

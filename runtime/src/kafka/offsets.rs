//! Which offset may be committed: the lowest one not yet done (DESIGN.md §3).
//!
//! Records of one partition finish out of order (different agents run concurrently),
//! but a committed offset says "everything before this is done", so the commit
//! position never passes an unfinished record.

use std::collections::{BTreeSet, HashMap};

/// Progress of one partition.
#[derive(Debug, Default, Clone)]
pub(crate) struct PartitionProgress {
    /// Dispatched, not yet done.
    pending: BTreeSet<i64>,
    /// One past the highest offset dispatched.
    next: Option<i64>,
    /// Position last committed (or handed to the committer).
    committed: Option<i64>,
}

impl PartitionProgress {
    /// A record was handed to its handler(s).
    pub(crate) fn dispatched(&mut self, offset: i64) {
        self.pending.insert(offset);
        self.next = Some(self.next.map_or(offset + 1, |n| n.max(offset + 1)));
    }

    /// A record's handlers finished and its outputs were acknowledged.
    pub(crate) fn done(&mut self, offset: i64) {
        self.pending.remove(&offset);
    }

    /// Records in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// The position to commit, if it moved since the last commit.
    pub(crate) fn commit_position(&self) -> Option<i64> {
        let pos = self.pending.first().copied().or(self.next)?;
        (self.committed != Some(pos)).then_some(pos)
    }

    /// Records that `pos` was committed.
    pub(crate) fn mark_committed(&mut self, pos: i64) {
        self.committed = Some(pos);
    }
}

/// Progress of every partition a consumer holds.
#[derive(Debug, Default)]
pub(crate) struct OffsetTracker {
    partitions: HashMap<i32, PartitionProgress>,
}

impl OffsetTracker {
    /// Starts tracking `partition` (assigned).
    pub(crate) fn assign(&mut self, partition: i32) {
        self.partitions.entry(partition).or_default();
    }

    /// Stops tracking `partition` (revoked); returns what it had.
    pub(crate) fn revoke(&mut self, partition: i32) -> Option<PartitionProgress> {
        self.partitions.remove(&partition)
    }

    /// Whether `partition` is tracked.
    #[cfg(test)]
    pub(crate) fn holds(&self, partition: i32) -> bool {
        self.partitions.contains_key(&partition)
    }

    /// See [`PartitionProgress::dispatched`].
    pub(crate) fn dispatched(&mut self, partition: i32, offset: i64) {
        self.partitions
            .entry(partition)
            .or_default()
            .dispatched(offset);
    }

    /// See [`PartitionProgress::done`]; completions of revoked partitions are ignored.
    pub(crate) fn done(&mut self, partition: i32, offset: i64) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            p.done(offset);
        }
    }

    /// In-flight records of `partition`.
    pub(crate) fn in_flight(&self, partition: i32) -> usize {
        self.partitions
            .get(&partition)
            .map_or(0, PartitionProgress::in_flight)
    }

    /// Current commit positions of `partitions`, whether or not they moved (for the
    /// synchronous commit before a partition is given up).
    pub(crate) fn positions(&mut self, partitions: &[i32]) -> Vec<(i32, i64)> {
        partitions
            .iter()
            .filter_map(|p| {
                let prog = self.partitions.get_mut(p)?;
                let pos = prog.pending.first().copied().or(prog.next)?;
                prog.mark_committed(pos);
                Some((*p, pos))
            })
            .collect()
    }

    /// A commit of `partition` failed: the next commit must send it again.
    pub(crate) fn commit_failed(&mut self, partition: i32) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            p.committed = None;
        }
    }

    /// Positions to commit now, marking them committed.
    pub(crate) fn take_commits(&mut self) -> Vec<(i32, i64)> {
        self.partitions
            .iter_mut()
            .filter_map(|(p, prog)| {
                let pos = prog.commit_position()?;
                prog.mark_committed(pos);
                Some((*p, pos))
            })
            .collect()
    }

    /// Partitions held.
    pub(crate) fn partitions(&self) -> Vec<i32> {
        self.partitions.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_never_passes_an_unfinished_record() {
        let mut t = OffsetTracker::default();
        for o in 10..15 {
            t.dispatched(0, o);
        }
        t.done(0, 11);
        t.done(0, 12);
        assert_eq!(
            t.take_commits(),
            vec![(0, 10)],
            "10 is unfinished, so commit 10"
        );
        t.done(0, 10);
        assert_eq!(t.take_commits(), vec![(0, 13)]);
        assert_eq!(t.take_commits(), vec![], "nothing moved, nothing to commit");
        t.done(0, 14);
        t.done(0, 13);
        assert_eq!(
            t.take_commits(),
            vec![(0, 15)],
            "all done: commit past the last"
        );
        assert_eq!(t.in_flight(0), 0);
    }

    #[test]
    fn revoked_partitions_forget_late_completions() {
        let mut t = OffsetTracker::default();
        t.dispatched(1, 5);
        assert_eq!(t.in_flight(1), 1);
        let had = t.revoke(1).unwrap();
        assert_eq!(had.in_flight(), 1);
        t.done(1, 5);
        assert!(!t.holds(1));
        assert!(t.take_commits().is_empty());
    }
}

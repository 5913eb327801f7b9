//! A cluster's compactor (the `compactor` role): merges the small files of every node of
//! the cluster, so that ingesters spend their CPU on ingest.
//!
//! Each round reads the catalog of every tenant (one snapshot per tenant), picks each
//! node's groups of small files as a standalone store's flusher does
//! ([`super::compaction_groups`]), reads a group from the bucket, writes the merged file
//! under the owning node's prefix, and swaps it in the owner's catalog rows in one
//! transaction that fails if any of the old files is no longer live (retention, or another
//! compactor, came first; the merged file is then deleted unless the catalog names it). The
//! owner takes the swap in when it next reads its catalog
//! ([`super::StoreConfig::compacted_elsewhere`]) and deletes the old files after the grace
//! period. A store sweeps an uncommitted merged file away only once it is older than
//! [`segment::ORPHAN_MERGE_AGE`]; a merge that took half that long is given up, so one
//! never lands on a file an owner's restart swept away.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;

use super::catalog::{self, Catalog, CatalogFile};
use super::objects::ObjectStorage;
use super::segment::{self, Place};
use super::{StoreError, compaction_groups, read};
use crate::metadata::MetadataDb;

/// What one round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Round {
    /// Groups merged and swapped in.
    pub merged: usize,
    /// Files they replaced.
    pub files: usize,
    /// Groups that failed or lost a race (tried again next round).
    pub failed: usize,
}

pub struct ClusterCompactor {
    db: MetadataDb,
    /// The cluster's bucket (this node's prefix in it; other nodes' are reached with `at`).
    bucket: ObjectStorage,
    /// Where merged files are written before they are uploaded.
    staging: PathBuf,
    /// `--flush-rows`: a merged file holds at most this many rows.
    max_rows: u64,
    /// `--flush-interval`: an hour is merged once it ended two of these ago.
    flush_interval: Duration,
    runtime: Handle,
}

impl ClusterCompactor {
    pub fn new(
        db: MetadataDb,
        bucket: ObjectStorage,
        staging: PathBuf,
        max_rows: u64,
        flush_interval: Duration,
        runtime: Handle,
    ) -> Self {
        Self {
            db,
            bucket,
            staging,
            max_rows: max_rows.max(1),
            flush_interval,
            runtime,
        }
    }

    /// One pass over every tenant and node. Errors reading the catalog end the round;
    /// a failed merge is counted and the round goes on.
    pub fn round(&self) -> Result<Round, StoreError> {
        let tenants = catalog::run_on(&self.runtime, catalog::tenants(&self.db))?;
        let settled_before = flowscope_base::clock::now_ns().saturating_sub(
            i64::try_from((self.flush_interval * 2).as_nanos()).unwrap_or(i64::MAX),
        );
        std::fs::create_dir_all(&self.staging).map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot create the compactor's staging folder {}: {e}",
                self.staging.display()
            ))
        })?;
        let mut round = Round::default();
        for tenant in tenants {
            let nodes = catalog::run_on(&self.runtime, catalog::cluster_files(&self.db, &tenant))?;
            for node in nodes {
                // Files on a node's local disk (a node outside the bucket) are its own.
                let Some(objects) = self.bucket.at(&node.location) else {
                    continue;
                };
                let place = Place::Remote {
                    objects,
                    staging: self.staging.clone(),
                };
                let owner =
                    Catalog::new(self.db.clone(), &node.node, &tenant, self.runtime.clone());
                let groups = compaction_groups(
                    &node.files,
                    |file| (file.rows, file.min_start_ns, file.wal_seq_max),
                    self.max_rows,
                    settled_before,
                );
                for group in groups {
                    let started = Instant::now();
                    match merge(&place, &owner, &group) {
                        Ok(true) => {
                            round.merged += 1;
                            round.files += group.len();
                            tracing::info!(
                                node = %node.node,
                                tenant = %tenant,
                                files = group.len(),
                                rows = group.iter().map(|f| f.rows).sum::<u64>(),
                                took_ms = started.elapsed().as_millis() as u64,
                                "compactor: merged a node's small files of one hour"
                            );
                        }
                        Ok(false) => round.failed += 1,
                        Err(error) => {
                            round.failed += 1;
                            tracing::warn!(%error, node = %node.node, tenant = %tenant, files = group.len(), "compactor: a merge failed; trying again next round");
                        }
                    }
                }
            }
        }
        Ok(round)
    }
}

/// Merges `group` (one node's files of one hour) into one file under `place` and swaps it
/// into `owner`'s catalog rows. `Ok(false)`: it lost a race and changed nothing.
fn merge(place: &Place, owner: &Catalog, group: &[CatalogFile]) -> Result<bool, StoreError> {
    let started = Instant::now();
    let mut batches = Vec::new();
    for file in group {
        read::read_segment(
            &place.segment(file.clone()),
            None,
            i64::MIN,
            i64::MAX,
            &mut |batch| {
                batches.push(batch);
                Ok(true)
            },
        )?;
    }
    let wal_min = group.iter().map(|f| f.wal_seq_min).min().unwrap_or(0);
    let wal_max = group.iter().map(|f| f.wal_seq_max).max().unwrap_or(0);
    let mut written = segment::write_compacted(place, &batches, wal_max, wal_min)?;
    drop(batches);
    let Some(merged) = written.pop().filter(|_| written.is_empty()) else {
        for file in &written {
            let _ = place.delete(file);
        }
        return Err(StoreError::Internal(
            "a merge of one hour wrote files of several hours".into(),
        ));
    };
    let row = place.catalog_file(&merged, wal_min);
    // The owner may have swept it away as an orphan by now, if it restarted.
    if started.elapsed() > segment::ORPHAN_MERGE_AGE / 2 {
        let _ = place.delete(&merged);
        return Err(StoreError::Unavailable(
            "the merge took too long to be swapped in safely; it is given up".into(),
        ));
    }
    let old: Vec<String> = group.iter().map(|file| file.path.clone()).collect();
    if owner.swap(std::slice::from_ref(&row), &old)? {
        return Ok(true);
    }
    // Another compactor (writing the same merge under the same name) or retention came
    // first: the file goes unless the catalog now names it.
    let named = owner.files()?.iter().any(|file| file.path == row.path);
    if !named {
        let _ = place.delete(&merged);
    }
    tracing::info!(
        files = group.len(),
        "compactor: a file to merge was dropped meanwhile; the merge is discarded"
    );
    Ok(false)
}

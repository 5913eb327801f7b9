//! Partitions of the trace space (issue 24): every span belongs to one of [`PARTITIONS`]
//! virtual partitions by its tenant and trace id, and each partition is held by one
//! ingester under a lease in the metadata database's `partition_leases`. Receivers route a
//! span to its partition's holder, so every span of a trace reaches one ingester.
//!
//! Each ingester calls [`balance`] every [`RENEW`]: it renews the leases it holds, gives
//! back what it holds above its fair share (`ceil(PARTITIONS / live ingesters)`) and takes
//! free ones up to it, its own former partitions first (a restarted ingester gets back the
//! partitions its WAL holds). A lease not renewed ends after [`LEASE`]; a partition that
//! changes hands gets a new epoch, which forwarded requests carry, so an ingester refuses
//! a part routed with a map that is out of date.

use std::time::Duration;

use sqlx::Row;

use crate::membership::STALE_AFTER;
use crate::metadata::MetadataDb;

/// The fixed number of partitions (the rows `0008_partition_leases.sql` creates).
pub const PARTITIONS: u32 = 64;
/// How long a lease lasts without renewal: an ingester that stops is replaced after this.
pub const LEASE: Duration = Duration::from_secs(15);
/// How often an ingester renews and balances its leases.
pub const RENEW: Duration = Duration::from_secs(2);

/// The partition of a span of `tenant` with `trace_id`: stable across processes and
/// versions (it decides which ingester keeps a trace).
pub fn partition_of(tenant: &str, trace_id: &[u8]) -> u32 {
    partition_in(tenant_seed(tenant), trace_id)
}

/// The part of [`partition_of`] that depends on the tenant only, for a caller that places
/// many spans of one tenant ([`partition_in`]).
pub fn tenant_seed(tenant: &str) -> u64 {
    // FNV-1a over the tenant and the trace id, then a SplitMix64 finish: trace ids are
    // random in W3C practice, but not every SDK's are.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in tenant.bytes().chain([0xff]) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// [`partition_of`] from the tenant's [`tenant_seed`].
pub fn partition_in(seed: u64, trace_id: &[u8]) -> u32 {
    let mut hash = seed;
    for &byte in trace_id {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^= hash >> 31;
    (hash % u64::from(PARTITIONS)) as u32
}

/// One partition's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub part: u32,
    /// The node that holds it, or last held it when `until_ns` has passed.
    pub owner: Option<String>,
    pub epoch: i64,
    pub until_ns: i64,
}

impl Lease {
    /// Whether `owner` holds it at `now_ns`.
    pub fn held_at(&self, now_ns: i64) -> bool {
        self.owner.is_some() && self.until_ns >= now_ns
    }
}

fn nanos(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

/// Every partition's lease, by partition.
pub async fn list(db: &MetadataDb) -> Result<Vec<Lease>, sqlx::Error> {
    let rows =
        sqlx::query("SELECT part, owner, epoch, until_ns FROM partition_leases ORDER BY part")
            .fetch_all(db.pool())
            .await?;
    Ok(rows
        .into_iter()
        .map(|row| Lease {
            part: u32::try_from(row.get::<i64, _>(0)).unwrap_or(u32::MAX),
            owner: row.get(1),
            epoch: row.get(2),
            until_ns: row.get(3),
        })
        .collect())
}

/// How many ingesters are alive at `now_ns`: registered with the ingester role (an explicit
/// one: `all` is a standalone node), heartbeating, not left.
pub async fn live_ingesters(db: &MetadataDb, now_ns: i64) -> Result<usize, sqlx::Error> {
    let rows =
        sqlx::query("SELECT roles FROM cluster_nodes WHERE left_ns IS NULL AND heartbeat_ns >= $1")
            .bind(now_ns - nanos(STALE_AFTER))
            .fetch_all(db.pool())
            .await?;
    Ok(rows
        .iter()
        .filter(|row| {
            row.get::<String, _>(0)
                .split(',')
                .any(|role| role.trim() == "ingester")
        })
        .count())
}

/// The fair share of partitions per ingester among `live`.
pub fn fair_share(live: usize) -> usize {
    (PARTITIONS as usize).div_ceil(live.max(1))
}

/// Renews `node`'s leases, gives back those above its fair share among `live` ingesters
/// (the highest partitions), takes free ones up to it (its own former partitions first),
/// and returns the leases it holds now, by partition.
pub async fn balance(
    db: &MetadataDb,
    node: &str,
    live: usize,
    now_ns: i64,
) -> Result<Vec<Lease>, sqlx::Error> {
    let until = now_ns.saturating_add(nanos(LEASE));
    // Renew only what has not ended: an ended lease may have been taken meanwhile, and one
    // that was not is taken again below, under a new epoch.
    sqlx::query("UPDATE partition_leases SET until_ns = $1 WHERE owner = $2 AND until_ns >= $3")
        .bind(until)
        .bind(node)
        .bind(now_ns)
        .execute(db.pool())
        .await?;
    let held: Vec<i64> = sqlx::query(
        "SELECT part FROM partition_leases WHERE owner = $1 AND until_ns >= $2 ORDER BY part",
    )
    .bind(node)
    .bind(now_ns)
    .fetch_all(db.pool())
    .await?
    .iter()
    .map(|row| row.get(0))
    .collect();
    let fair = fair_share(live);
    if held.len() > fair {
        for part in &held[fair..] {
            sqlx::query("UPDATE partition_leases SET until_ns = 0 WHERE part = $1 AND owner = $2")
                .bind(part)
                .bind(node)
                .execute(db.pool())
                .await?;
        }
    } else if held.len() < fair {
        let wanted = i64::try_from(fair - held.len()).unwrap_or(i64::MAX);
        // The condition is repeated outside the subquery: PostgreSQL checks it again on a
        // row another node changed meanwhile, so two nodes never take one partition.
        sqlx::query(
            "UPDATE partition_leases SET owner = $1, epoch = epoch + 1, until_ns = $2 \
             WHERE until_ns < $3 AND part IN (SELECT part FROM partition_leases \
             WHERE until_ns < $4 ORDER BY CASE WHEN owner = $5 THEN 0 ELSE 1 END, part LIMIT $6)",
        )
        .bind(node)
        .bind(until)
        .bind(now_ns)
        .bind(now_ns)
        .bind(node)
        .bind(wanted)
        .execute(db.pool())
        .await?;
    }
    Ok(list(db)
        .await?
        .into_iter()
        .filter(|lease| lease.owner.as_deref() == Some(node) && lease.held_at(now_ns))
        .collect())
}

/// Gives back every lease `node` holds (a clean stop): the others take them at once.
pub async fn release_all(db: &MetadataDb, node: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE partition_leases SET until_ns = 0 WHERE owner = $1")
        .bind(node)
        .execute(db.pool())
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_spread_traces_and_are_stable() {
        let mut counts = vec![0u32; PARTITIONS as usize];
        for i in 0u64..64_000 {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&i.to_be_bytes());
            counts[partition_of("default", &id) as usize] += 1;
        }
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(
            *min > 800 && *max < 1200,
            "sequential ids spread: {min}..{max}"
        );
        // A fixed answer: the partition of a trace must never change between versions.
        assert_eq!(
            partition_of("default", &[0u8; 16]),
            partition_of("default", &[0u8; 16])
        );
        assert_ne!(
            (0..16u8)
                .map(|t| partition_of("a", &[t; 16]))
                .collect::<Vec<_>>(),
            (0..16u8)
                .map(|t| partition_of("b", &[t; 16]))
                .collect::<Vec<_>>(),
            "the tenant is part of the hash"
        );
    }

    #[tokio::test]
    async fn two_ingesters_split_the_partitions_and_one_takes_over_when_the_other_stops() {
        let db = MetadataDb::open_for_tests()
            .await
            .expect("metadata database");
        let second = 1_000_000_000i64;
        let mut now = 1_000 * second;
        let a = balance(&db, "a", 1, now).await.unwrap();
        assert_eq!(a.len(), 64, "alone, a takes every partition");
        assert!(a.iter().all(|l| l.epoch == 1));
        // b joins: a gives back half, b takes them.
        now += 2 * second;
        let a = balance(&db, "a", 2, now).await.unwrap();
        assert_eq!(a.len(), 32);
        let b = balance(&db, "b", 2, now).await.unwrap();
        assert_eq!(b.len(), 32);
        assert!(
            b.iter().all(|l| l.epoch == 2),
            "moved partitions get a new epoch"
        );
        // b stops without a word: a takes its partitions when the leases end.
        now += 2 * second;
        assert_eq!(
            balance(&db, "a", 1, now).await.unwrap().len(),
            32,
            "b's leases hold"
        );
        now += nanos(LEASE) + second;
        let a = balance(&db, "a", 1, now).await.unwrap();
        assert_eq!(a.len(), 64);
        // b comes back: a gives back the highest half, and b takes its own former
        // partitions first (the ones its WAL holds).
        now += second;
        let was_b: Vec<u32> = b.iter().map(|l| l.part).collect();
        assert_eq!(balance(&db, "a", 2, now).await.unwrap().len(), 32);
        let b = balance(&db, "b", 2, now).await.unwrap();
        assert_eq!(b.len(), 32);
        assert_eq!(b.iter().map(|l| l.part).collect::<Vec<_>>(), was_b);
        // A clean stop gives everything back at once.
        release_all(&db, "b").await.unwrap();
        assert_eq!(balance(&db, "a", 1, now).await.unwrap().len(), 64);
    }
}

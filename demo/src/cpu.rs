//! CPU time from Linux's /proc: what a process, its waited-for children, or the calling
//! thread has used, for "spans per CPU-second" figures. No unsafe (the workspace forbids it),
//! so no `getrusage`: the same counters are read as text.

use crate::Error;

/// Field numbers in proc(5)'s /proc/PID/stat.
const UTIME: usize = 14;
const STIME: usize = 15;
const CUTIME: usize = 16;
const CSTIME: usize = 17;
/// The auxiliary vector entry holding `sysconf(_SC_CLK_TCK)`, the unit of those fields.
const AT_CLKTCK: usize = 17;

/// User plus system CPU this process has used so far, all threads.
pub fn own_cpu_seconds() -> Result<f64, Error> {
    stat_seconds("/proc/self/stat", UTIME, STIME)
}

/// User plus system CPU process `pid` has used so far, all threads.
pub fn process_cpu_seconds(pid: u32) -> Result<f64, Error> {
    stat_seconds(&format!("/proc/{pid}/stat"), UTIME, STIME)
}

/// CPU of this process's children that have been waited for.
pub fn children_cpu_seconds() -> Result<f64, Error> {
    stat_seconds("/proc/self/stat", CUTIME, CSTIME)
}

/// CPU the calling thread has used, to the nanosecond: the first field of its schedstat is
/// the same counter `CLOCK_THREAD_CPUTIME_ID` reads.
pub fn thread_cpu_seconds() -> Result<f64, Error> {
    let schedstat = read_proc("/proc/thread-self/schedstat")?;
    let nanos: u64 = schedstat
        .split_whitespace()
        .next()
        .and_then(|field| field.parse().ok())
        .ok_or_else(|| Error::System("cannot parse /proc/thread-self/schedstat".into()))?;
    Ok(nanos as f64 / 1e9)
}

fn stat_seconds(path: &str, user: usize, system: usize) -> Result<f64, Error> {
    let stat = read_proc(path)?;
    let ticks = stat_field(&stat, user)
        .zip(stat_field(&stat, system))
        .map(|(user, system)| user + system)
        .ok_or_else(|| Error::System(format!("cannot parse the CPU times in {path}")))?;
    let auxv = std::fs::read("/proc/self/auxv")
        .map_err(|error| Error::System(format!("cannot read /proc/self/auxv: {error}")))?;
    let per_second = auxv_value(&auxv, AT_CLKTCK)
        .filter(|&per_second| per_second > 0)
        .ok_or_else(|| Error::System("no clock tick rate (AT_CLKTCK) in /proc/self/auxv".into()))?;
    Ok(ticks as f64 / per_second as f64)
}

fn read_proc(path: &str) -> Result<String, Error> {
    std::fs::read_to_string(path)
        .map_err(|error| Error::System(format!("cannot read {path}: {error}")))
}

/// The value of entry `key` in an auxiliary vector: native-endian (key, value) word pairs.
fn auxv_value(auxv: &[u8], key: usize) -> Option<usize> {
    const WORD: usize = size_of::<usize>();
    let word = |bytes: &[u8]| bytes.try_into().ok().map(usize::from_ne_bytes);
    auxv.chunks_exact(2 * WORD)
        .map(|pair| (word(&pair[..WORD]), word(&pair[WORD..])))
        .find_map(|(k, v)| (k? == key).then_some(v)?)
}

/// Field `number` (1-based, as proc(5) counts) of a /proc/PID/stat line. The command name in
/// field 2 may hold spaces and parentheses, so counting starts after its last `)`.
fn stat_field(stat: &str, number: usize) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name
        .split_whitespace()
        .nth(number.checked_sub(3)?)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 1200 0 3 0 \
        731 95 12 4 20 0 9 0 1234567 987654321 4567 18446744073709551615";

    #[test]
    fn stat_fields_count_from_one_past_a_name_with_spaces_and_parentheses() {
        let check = |number, expected| assert_eq!(stat_field(STAT, number), expected, "{number}");
        check(UTIME, Some(731));
        check(STIME, Some(95));
        check(CUTIME, Some(12));
        check(CSTIME, Some(4));
        check(4, Some(1));
        check(3, None); // the state letter is not a number
        check(2, None);
        check(99, None);
    }

    #[test]
    fn auxv_entries_are_found_by_key_in_word_pairs() {
        let auxv: Vec<u8> = [33, 7, AT_CLKTCK, 100, 6, 4096, 0, 0]
            .iter()
            .flat_map(|word: &usize| word.to_ne_bytes())
            .collect();
        assert_eq!(auxv_value(&auxv, AT_CLKTCK), Some(100));
        assert_eq!(auxv_value(&auxv, 6), Some(4096));
        assert_eq!(auxv_value(&auxv, 5), None);
        // A trailing half pair is ignored, not misread.
        assert_eq!(auxv_value(&auxv[..3 * size_of::<usize>()], AT_CLKTCK), None);
    }
}

//! Asia/Kolkata (IST) time. IST is a fixed UTC+05:30 with no daylight saving, so plain arithmetic
//! is exact.

/// IST's offset from UTC in milliseconds.
pub const IST_OFFSET_MS: i64 = (5 * 3600 + 30 * 60) * 1000;
const DAY_MS: i64 = 86_400_000;

/// The first instant strictly after `after_ms` (Unix ms) at which IST wall clocks show
/// `hour:minute`.
pub fn next_ist_wall_time(after_ms: i64, hour: u32, minute: u32) -> i64 {
    let local = after_ms + IST_OFFSET_MS;
    let target = (i64::from(hour) * 3600 + i64::from(minute) * 60) * 1000;
    let mut candidate = local.div_euclid(DAY_MS) * DAY_MS + target;
    if candidate <= local {
        candidate += DAY_MS;
    }
    candidate - IST_OFFSET_MS
}

/// The first IST midnight strictly after `after_ms`.
pub fn next_ist_midnight(after_ms: i64) -> i64 {
    next_ist_wall_time(after_ms, 0, 0)
}

/// Parse `YYYY-MM-DD HH:MM:SS` (IST wall time, no zone; a `T` separator is accepted too) into Unix
/// milliseconds.
pub fn parse_ist(text: &str) -> Option<i64> {
    let b = text.trim().as_bytes();
    if b.len() != 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b' ' | b'T')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = &b[range];
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * DAY_MS + (hour * 3600 + minute * 60 + second) * 1000 - IST_OFFSET_MS)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2025-03-10 00:00:00 UTC.
    const DAY0_UTC: i64 = 1_741_564_800_000;

    #[test]
    fn parses_ist_wall_time() {
        assert_eq!(parse_ist("2025-03-10 05:30:00"), Some(DAY0_UTC));
        assert_eq!(parse_ist("2025-03-10T05:30:01"), Some(DAY0_UTC + 1000));
        assert_eq!(parse_ist("1970-01-01 05:30:00"), Some(0));
        for bad in [
            "",
            "2025-03-10",
            "2025-13-10 00:00:00",
            "2025/03/10 00:00:00",
            "2025-03-10 24:00:00",
        ] {
            assert_eq!(parse_ist(bad), None, "{bad}");
        }
    }

    #[test]
    fn six_am_rule() {
        let ist = |s: &str| parse_ist(s).unwrap();
        // 08:00 IST: next morning.
        assert_eq!(
            next_ist_wall_time(ist("2025-03-10 08:00:00"), 6, 0),
            ist("2025-03-11 06:00:00")
        );
        // Between midnight and 06:00: that same morning.
        assert_eq!(
            next_ist_wall_time(ist("2025-03-10 02:30:00"), 6, 0),
            ist("2025-03-10 06:00:00")
        );
        // Exactly 06:00: strictly after, so the next day.
        assert_eq!(
            next_ist_wall_time(ist("2025-03-10 06:00:00"), 6, 0),
            ist("2025-03-11 06:00:00")
        );
        // Year end.
        assert_eq!(
            next_ist_wall_time(ist("2024-12-31 23:59:59"), 6, 0),
            ist("2025-01-01 06:00:00")
        );
    }

    #[test]
    fn midnight_rule() {
        let ist = |s: &str| parse_ist(s).unwrap();
        assert_eq!(
            next_ist_midnight(ist("2025-03-10 03:00:00")),
            ist("2025-03-11 00:00:00")
        );
        assert_eq!(
            next_ist_midnight(ist("2025-03-10 00:00:00")),
            ist("2025-03-11 00:00:00")
        );
        assert_eq!(
            next_ist_midnight(ist("2024-02-28 23:00:00")),
            ist("2024-02-29 00:00:00")
        );
    }
}

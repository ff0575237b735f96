//! ISO-8601 timestamps as JavaScript's `Date.prototype.toISOString` writes them
//! (`2025-06-27T04:20:11.123Z`): every server message carries one. Written by hand because
//! it is on every message's path and needs no time-zone database.

use aimcs_domain::Timestamp;

/// Length of a timestamp for a year between 0 and 9999: `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub(crate) const ISO_LEN: usize = 24;

/// Appends `at` to `out` in UTC with millisecond precision.
pub(crate) fn write_iso(at: Timestamp, out: &mut String) {
    let millis = at.unix_millis();
    let days = millis.div_euclid(86_400_000);
    let ms_of_day = millis.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute) = (ms_of_day / 3_600_000, ms_of_day / 60_000 % 60);
    let (second, milli) = (ms_of_day / 1_000 % 60, ms_of_day % 1_000);

    // Years outside 0..=9999 only come from a broken clock; they still print, just wider.
    if (0..=9999).contains(&year) {
        push_digits(out, year, 4);
    } else {
        out.push(if year < 0 { '-' } else { '+' });
        push_digits(out, year.abs(), 6);
    }
    out.push('-');
    push_digits(out, month, 2);
    out.push('-');
    push_digits(out, day, 2);
    out.push('T');
    push_digits(out, hour, 2);
    out.push(':');
    push_digits(out, minute, 2);
    out.push(':');
    push_digits(out, second, 2);
    out.push('.');
    push_digits(out, milli, 3);
    out.push('Z');
}

/// `at` as an ISO-8601 string.
pub(crate) fn to_iso(at: Timestamp) -> String {
    let mut out = String::with_capacity(ISO_LEN);
    write_iso(at, &mut out);
    out
}

fn push_digits(out: &mut String, value: i64, width: u32) {
    let mut divisor = 10_i64.pow(width - 1);
    while divisor > 0 {
        let digit = u8::try_from(value / divisor % 10).unwrap_or(0);
        out.push(char::from(b'0' + digit));
        divisor /= 10;
    }
}

/// Howard Hinnant's `civil_from_days`: the proleptic Gregorian date of a day count since the
/// epoch, exact for every `i64` millisecond timestamp.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iso(millis: i64) -> String {
        to_iso(Timestamp::from_unix_millis(millis))
    }

    #[test]
    fn timestamps_match_javascript_to_iso_string() {
        // Expected values from `new Date(ms).toISOString()` in Node 20.
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (1_750_998_011_123, "2025-06-27T04:20:11.123Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (4_107_542_399_999, "2100-02-28T23:59:59.999Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
            (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
            (-62_167_219_200_000, "0000-01-01T00:00:00.000Z"),
        ];
        for (millis, expected) in cases {
            assert_eq!(iso(millis), expected, "for {millis} ms");
        }
    }

    #[test]
    fn years_beyond_four_digits_are_written_with_a_sign() {
        assert_eq!(iso(253_402_300_800_000), "+010000-01-01T00:00:00.000Z");
        assert_eq!(iso(-62_198_755_200_000), "-000001-01-01T00:00:00.000Z");
    }

    #[test]
    fn every_day_of_four_centuries_round_trips_through_its_date() {
        // Counting days forward from the epoch must give consecutive calendar dates.
        let mut previous = civil_from_days(-1);
        for days in 0..146_097 {
            let date = civil_from_days(days);
            let next_day = date.2 == previous.2 + 1 && date.1 == previous.1;
            let next_month =
                date.2 == 1 && (date.1 == previous.1 + 1 || (date.1 == 1 && previous.1 == 12));
            assert!(next_day || next_month, "{previous:?} -> {date:?}");
            previous = date;
        }
    }
}

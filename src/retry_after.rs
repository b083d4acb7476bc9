//! Delays that registries ask for: the `Retry-After` header (seconds) and the Go duration that
//! ghcr.io writes into its TOOMANYREQUESTS message (`retry-after: 153.601µs, allowed: ...`).

use std::time::Duration;

/// Every delay these parsers return is shorter than this (about 31 years); a longer one is
/// not a delay anyone means, and is read as none. The retry policy caps waits far lower.
pub const MAX_DELAY: Duration = Duration::from_secs(1_000_000_000);

/// Parses a `Retry-After` header value given in seconds (`120`).
pub fn parse_header_seconds(value: &str) -> Option<Duration> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
        .filter(|d| *d < MAX_DELAY)
}

/// Parses a `Retry-After` header: seconds, or an HTTP date (the wait until then).
pub fn parse_header(value: &str) -> Option<Duration> {
    parse_header_seconds(value).or_else(|| {
        let at = httpdate::parse_http_date(value.trim()).ok()?;
        Some(
            at.duration_since(std::time::SystemTime::now())
                .unwrap_or_default(),
        )
        .filter(|d| *d < MAX_DELAY)
    })
}

/// Finds `retry-after: <go duration>` (case-insensitive) in an error text.
pub fn find_in_message(text: &str) -> Option<Duration> {
    let lower = text.to_ascii_lowercase();
    let at = lower.find("retry-after")?;
    let rest = text[at + "retry-after".len()..].trim_start_matches([':', ' ', '=']);
    let end = rest
        .find(|c: char| c == ',' || c == '"' || c == '\\' || c.is_whitespace())
        .unwrap_or(rest.len());
    let token = &rest[..end];
    parse_go_duration(token).or_else(|| parse_header_seconds(token))
}

/// Parses Go's `time.Duration.String()` form: `1h2m3.5s`, `153.601µs`, `300ms`, `0s`.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let number: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds_per_unit;
    }
    (0.0..MAX_DELAY.as_secs_f64())
        .contains(&total)
        .then(|| Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let cases = [
            ("153.601µs", Duration::from_nanos(153_601)),
            ("153.601us", Duration::from_nanos(153_601)),
            ("300ms", Duration::from_millis(300)),
            ("2s", Duration::from_secs(2)),
            ("1m30s", Duration::from_secs(90)),
            ("1h0m0s", Duration::from_secs(3600)),
            ("0s", Duration::ZERO),
        ];
        for (text, expected) in cases {
            let got = parse_go_duration(text).unwrap();
            let diff = got.abs_diff(expected);
            assert!(diff < Duration::from_nanos(2), "{text}: {got:?}");
        }
        for bad in ["", "s", "5x", "1.2.3s", "-1s", "1e400s"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn finds_ghcr_retry_after_in_trivy_lines() {
        let line = r#"err="OCI repository error: 1 error occurred:\n\t* GET https://ghcr.io/v2/aquasecurity/trivy-db/manifests/2: TOOMANYREQUESTS: retry-after: 153.601µs, allowed: 44000/minute\n\n""#;
        assert_eq!(find_in_message(line), Some(Duration::from_nanos(153_601)));
        assert_eq!(
            find_in_message("Retry-After: 7"),
            Some(Duration::from_secs(7))
        );
        assert_eq!(find_in_message("TOOMANYREQUESTS"), None);
    }

    #[test]
    fn header_seconds() {
        assert_eq!(parse_header_seconds(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(parse_header_seconds("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(
            parse_header("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let soon = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(30));
        let wait = parse_header(&soon).unwrap();
        assert!(
            wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
    }
}

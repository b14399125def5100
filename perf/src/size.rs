//! Object sizes: parsing `4KiB`, `1.5MB`, ranges `4KiB..1MiB` and weighted lists
//! `4KiB:9,1MiB:1`, and sampling from them.

use std::fmt;
use std::str::FromStr;

use crate::rng::Rng;

/// Largest object size accepted on the command line (5 TiB, S3's object limit).
pub const MAX_SIZE_BYTES: u64 = 5 << 40;

/// Why a size or size distribution did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SizeError {
    /// The text is not a number with an optional unit.
    #[error("invalid size {0:?}: expected e.g. 4096, 4KiB, 1MiB, 1.5MB")]
    Invalid(String),
    /// The size exceeds [`MAX_SIZE_BYTES`].
    #[error("size {0:?} exceeds the S3 object limit of 5 TiB")]
    TooLarge(String),
    /// A range whose start is above its end.
    #[error("empty size range {0:?}: the start must not exceed the end")]
    EmptyRange(String),
    /// A weighted list entry with a zero or unparsable weight.
    #[error("invalid weight in {0:?}: expected SIZE:WEIGHT with WEIGHT a positive integer")]
    Weight(String),
}

/// Parses one size: a number (possibly fractional) and an optional unit: `B`, `KiB`, `MiB`,
/// `GiB`, `TiB` (powers of 1024) or `K`/`KB`, `M`/`MB`, `G`/`GB`, `T`/`TB` (powers of 1000).
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        _ => return Err(SizeError::Invalid(text.to_owned())),
    };
    let bytes = if let Ok(whole) = number.parse::<u64>() {
        whole
            .checked_mul(multiplier)
            .ok_or_else(|| SizeError::TooLarge(text.to_owned()))?
    } else {
        let value: f64 = number
            .parse()
            .map_err(|_| SizeError::Invalid(text.to_owned()))?;
        let bytes = (value * multiplier as f64).round();
        if !bytes.is_finite() || bytes < 0.0 || bytes > MAX_SIZE_BYTES as f64 {
            return Err(SizeError::TooLarge(text.to_owned()));
        }
        bytes as u64
    };
    if bytes > MAX_SIZE_BYTES {
        return Err(SizeError::TooLarge(text.to_owned()));
    }
    Ok(bytes)
}

/// Formats a byte count with the largest binary unit that divides it (`4KiB`, `1536B`).
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (unit, scale) in UNITS {
        if bytes >= scale && bytes.is_multiple_of(scale) {
            return format!("{}{unit}", bytes / scale);
        }
    }
    format!("{bytes}B")
}

/// How object sizes are chosen for new objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SizeDist {
    /// Every object has this size.
    Fixed(u64),
    /// Uniform over `min..=max` bytes.
    Uniform {
        /// Smallest size, bytes.
        min_bytes: u64,
        /// Largest size, bytes.
        max_bytes: u64,
    },
    /// Each size with a probability proportional to its weight.
    Weighted(Vec<(u64, u64)>),
}

impl SizeDist {
    /// Draws one size.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        match self {
            Self::Fixed(bytes) => *bytes,
            Self::Uniform {
                min_bytes,
                max_bytes,
            } => min_bytes + rng.below(max_bytes - min_bytes + 1),
            Self::Weighted(entries) => {
                let total: u64 = entries.iter().map(|(_, w)| w).sum();
                let mut pick = rng.below(total);
                for (size, weight) in entries {
                    if pick < *weight {
                        return *size;
                    }
                    pick -= weight;
                }
                entries.last().map_or(0, |(size, _)| *size)
            }
        }
    }

    /// The largest size this distribution can produce.
    pub fn max_bytes(&self) -> u64 {
        match self {
            Self::Fixed(bytes) => *bytes,
            Self::Uniform { max_bytes, .. } => *max_bytes,
            Self::Weighted(entries) => entries.iter().map(|(s, _)| *s).max().unwrap_or(0),
        }
    }
}

impl FromStr for SizeDist {
    type Err = SizeError;

    fn from_str(text: &str) -> Result<Self, SizeError> {
        let text = text.trim();
        if let Some((low, high)) = text.split_once("..") {
            let min_bytes = parse_size(low)?;
            let max_bytes = parse_size(high.trim_start_matches('='))?;
            if min_bytes > max_bytes {
                return Err(SizeError::EmptyRange(text.to_owned()));
            }
            return Ok(Self::Uniform {
                min_bytes,
                max_bytes,
            });
        }
        if text.contains(',') || text.contains(':') {
            let mut entries = Vec::new();
            for item in text.split(',') {
                let (size, weight) = match item.split_once(':') {
                    Some((size, weight)) => {
                        let weight: u64 = weight
                            .trim()
                            .parse()
                            .map_err(|_| SizeError::Weight(item.to_owned()))?;
                        (size, weight)
                    }
                    None => (item, 1),
                };
                if weight == 0 {
                    return Err(SizeError::Weight(item.to_owned()));
                }
                entries.push((parse_size(size)?, weight));
            }
            return Ok(Self::Weighted(entries));
        }
        Ok(Self::Fixed(parse_size(text)?))
    }
}

impl fmt::Display for SizeDist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(bytes) => f.write_str(&format_size(*bytes)),
            Self::Uniform {
                min_bytes,
                max_bytes,
            } => write!(
                f,
                "{}..{}",
                format_size(*min_bytes),
                format_size(*max_bytes)
            ),
            Self::Weighted(entries) => {
                let parts: Vec<String> = entries
                    .iter()
                    .map(|(s, w)| format!("{}:{w}", format_size(*s)))
                    .collect();
                f.write_str(&parts.join(","))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_binary_and_decimal() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("4KiB").unwrap(), 4096);
        assert_eq!(parse_size("4kib").unwrap(), 4096);
        assert_eq!(parse_size("4KB").unwrap(), 4000);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("1.5MiB").unwrap(), 3 << 19);
        assert_eq!(parse_size("2 GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("5TiB").unwrap(), MAX_SIZE_BYTES);
    }

    #[test]
    fn bad_sizes_are_rejected() {
        assert!(matches!(parse_size("4XB"), Err(SizeError::Invalid(_))));
        assert!(matches!(parse_size("KiB"), Err(SizeError::Invalid(_))));
        assert!(matches!(parse_size(""), Err(SizeError::Invalid(_))));
        assert!(matches!(parse_size("6TiB"), Err(SizeError::TooLarge(_))));
        assert!(matches!(
            "1MiB..4KiB".parse::<SizeDist>(),
            Err(SizeError::EmptyRange(_))
        ));
        assert!(matches!(
            "4KiB:0,1MiB:1".parse::<SizeDist>(),
            Err(SizeError::Weight(_))
        ));
        assert!(matches!(
            "4KiB:x".parse::<SizeDist>(),
            Err(SizeError::Weight(_))
        ));
    }

    #[test]
    fn distributions_parse_and_display() {
        assert_eq!("4KiB".parse::<SizeDist>().unwrap(), SizeDist::Fixed(4096));
        let range: SizeDist = "4KiB..1MiB".parse().unwrap();
        assert_eq!(
            range,
            SizeDist::Uniform {
                min_bytes: 4096,
                max_bytes: 1 << 20
            }
        );
        assert_eq!(range.to_string(), "4KiB..1MiB");
        let weighted: SizeDist = "4KiB:9,1MiB:1".parse().unwrap();
        assert_eq!(weighted, SizeDist::Weighted(vec![(4096, 9), (1 << 20, 1)]));
        assert_eq!(weighted.to_string(), "4KiB:9,1MiB:1");
        assert_eq!(weighted.max_bytes(), 1 << 20);
    }

    #[test]
    fn sampling_respects_bounds_and_weights() {
        let mut rng = Rng::new(42);
        let range: SizeDist = "10..20".parse().unwrap();
        let mut seen_low = false;
        let mut seen_high = false;
        for _ in 0..10_000 {
            let s = range.sample(&mut rng);
            assert!((10..=20).contains(&s));
            seen_low |= s == 10;
            seen_high |= s == 20;
        }
        assert!(seen_low && seen_high, "both ends are reachable");

        let weighted: SizeDist = "1:9,2:1".parse().unwrap();
        let small = (0..10_000)
            .filter(|_| weighted.sample(&mut rng) == 1)
            .count();
        assert!(
            (8_600..9_400).contains(&small),
            "about 90% small, got {small}"
        );
    }
}

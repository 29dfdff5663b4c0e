//! `Amount`: an aggregate's money or quantity exactly as Postgres `numeric` holds it.
//!
//! Sums grow past what `rust_decimal` can hold (28–29 significant digits) and its conversion from
//! `numeric` would round them silently. So the aggregates are decoded from `numeric`'s own wire
//! form (base-10000 digit groups) straight into their decimal digits, and written to JSON as
//! those digits: exact at any size, never through a float. Inputs are still checked with
//! `rust_decimal` at ingest, where every value is small.

use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::pg::data_types::PgNumeric;
use diesel::pg::{Pg, PgValue};
use diesel::sql_types::Numeric;

/// A decimal number as plain digits: `-?\d+(\.\d*[1-9])?`, no exponent, no trailing zeros.
#[derive(Debug, Clone, PartialEq, Eq, Hash, FromSqlRow)]
pub struct Amount(String);

impl Amount {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Nothing: what a period without usage sums to.
    pub fn zero() -> Self {
        Amount("0".to_owned())
    }
}

impl std::fmt::Display for Amount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromSql<Numeric, Pg> for Amount {
    fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
        match PgNumeric::from_sql(value)? {
            PgNumeric::Positive {
                weight,
                scale,
                digits,
            } => Ok(Amount(format(false, weight, scale, &digits))),
            PgNumeric::Negative {
                weight,
                scale,
                digits,
            } => Ok(Amount(format(true, weight, scale, &digits))),
            PgNumeric::NaN => Err("NaN is not an amount".into()),
        }
    }
}

/// Writes `Σ digits[i] × 10000^(weight − i)` with `scale` decimal places, then drops trailing
/// zeros.
fn format(negative: bool, weight: i16, scale: u16, digits: &[i16]) -> String {
    let weight = i32::from(weight);
    let group = |index: i32| -> i16 {
        usize::try_from(index)
            .ok()
            .and_then(|i| digits.get(i))
            .copied()
            .unwrap_or(0)
    };
    let mut text = String::with_capacity(8 + 4 * digits.len());
    if weight < 0 {
        text.push('0');
    } else {
        let mut first = String::with_capacity(4);
        push_group(&mut first, group(0));
        let significant = first.trim_start_matches('0');
        text.push_str(if significant.is_empty() {
            "0"
        } else {
            significant
        });
        for index in 1..=weight {
            push_group(&mut text, group(index));
        }
    }
    let groups = (i32::from(scale) + 3) / 4;
    let mut fraction = String::with_capacity(4 * groups as usize);
    for k in 1..=groups {
        push_group(&mut fraction, group(weight + k));
    }
    fraction.truncate(usize::from(scale));
    let fraction = fraction.trim_end_matches('0');
    if !fraction.is_empty() {
        text.push('.');
        text.push_str(fraction);
    }
    if negative && text != "0" {
        text.insert(0, '-');
    }
    text
}

/// Appends a base-10000 digit group as exactly four decimal digits (on the hot path of every
/// page: no formatting machinery).
fn push_group(text: &mut String, group: i16) {
    let group = group.clamp(0, 9999) as u16;
    for divisor in [1000, 100, 10, 1] {
        text.push(char::from(b'0' + (group / divisor % 10) as u8));
    }
}

#[cfg(test)]
mod tests {
    use super::format;

    #[test]
    fn base_10000_groups_become_plain_digits() {
        // 19990000 = 1999·10000 + 0
        assert_eq!(format(false, 1, 0, &[1999]), "19990000");
        // 0.0000000001: the first group is at 10000^-3 (weight −3), 0001 → digit 10 of the fraction
        assert_eq!(format(false, -3, 10, &[100]), "0.0000000001");
        // 12.5 with scale 2 (12.50)
        assert_eq!(format(false, 0, 2, &[12, 5000]), "12.5");
        // 89992.111111191100111111101108 — past what rust_decimal can hold
        assert_eq!(
            format(false, 1, 24, &[8, 9992, 1111, 1119, 1100, 1111, 1110, 1108]),
            "89992.111111191100111111101108"
        );
        assert_eq!(format(true, 0, 2, &[3, 2500]), "-3.25");
        assert_eq!(format(true, 0, 1, &[3, 2500]), "-3.2");
        assert_eq!(format(false, 0, 0, &[]), "0");
        assert_eq!(format(true, 0, 0, &[]), "0");
    }
}

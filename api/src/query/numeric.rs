//! `numeric` values read from PostgreSQL's binary form as the `f64` its `::float8` cast gives:
//! the cards' ratings, decoded in the API rather than cast in the SQL (see `query`'s doc).

use std::fmt::Write;

use tokio_postgres::types::{FromSql, Type};

/// A `numeric` as the `f64` that PostgreSQL's `::float8` cast makes of it: the double nearest
/// its decimal value (the cast goes through the number's text and `strtod`, sixteen times per
/// lookup, which is why it is done here; see the `query` module's doc).
pub(super) struct Rating(pub(super) f64);

impl<'a> FromSql<'a> for Rating {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        numeric_to_f64(raw).map(Rating)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

/// The powers of ten that a double holds exactly.
const EXACT_POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// A `numeric`'s binary form (`numeric_send`: the count of base-10,000 digits, the weight of
/// the first, the sign, the display scale, then the digits) as the nearest double.
fn numeric_to_f64(raw: &[u8]) -> Result<f64, Box<dyn std::error::Error + Sync + Send>> {
    let word = |i: usize| {
        raw.get(2 * i..2 * i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or("a numeric shorter than its header says")
    };
    let count = usize::from(word(0)?);
    let weight = i32::from(word(1)? as i16);
    let negative = match word(2)? {
        0x0000 => false,
        0x4000 => true,
        0xC000 => return Ok(f64::NAN),
        0xD000 => return Ok(f64::INFINITY),
        0xF000 => return Ok(f64::NEG_INFINITY),
        _ => return Err("a numeric with an unknown sign".into()),
    };
    if raw.len() != 8 + 2 * count {
        return Err("a numeric whose length does not match its digit count".into());
    }
    let mut mantissa = Some(0u64);
    for i in 0..count {
        let digit = word(4 + i)?;
        if digit >= 10_000 {
            return Err("a numeric digit above 9999".into());
        }
        mantissa = mantissa
            .and_then(|m| m.checked_mul(10_000))
            .and_then(|m| m.checked_add(u64::from(digit)));
    }
    // The value is the digits as one integer times 10,000 ^ (weight + 1 - count).
    let exponent = 4 * (weight + 1 - count as i32);
    let magnitude = match mantissa {
        Some(0) => 0.0,
        // Both operands exact, so the one rounding of * or / gives the nearest double, as
        // strtod does (a rating, 0.0 to 5.0 with one decimal, always takes this way).
        Some(m) if m < 1 << 53 && exponent.unsigned_abs() < 23 => {
            let power = EXACT_POWERS_OF_TEN[exponent.unsigned_abs() as usize];
            if exponent >= 0 {
                m as f64 * power
            } else {
                m as f64 / power
            }
        }
        // Anything wider: the decimal's text, which Rust's parser rounds to the nearest double.
        _ => {
            let mut text = String::with_capacity(4 * count + 8);
            for i in 0..count {
                write!(text, "{:04}", word(4 + i)?)?;
            }
            write!(text, "e{exponent}")?;
            text.parse::<f64>()?
        }
    };
    Ok(if negative { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::numeric_to_f64;

    /// Numerics in binary form, as PostgreSQL's `::float8` makes them: the double nearest the
    /// decimal (Rust's parser of the decimal's text is correctly rounded, as strtod is).
    #[test]
    fn numerics_decode_to_the_nearest_double() {
        // numeric_send: digit count, weight, sign, display scale, then base-10,000 digits.
        let numeric = |weight: i16, sign: u16, scale: u16, digits: &[u16]| {
            let mut raw = Vec::new();
            for word in [digits.len() as u16, weight as u16, sign, scale]
                .into_iter()
                .chain(digits.iter().copied())
            {
                raw.extend_from_slice(&word.to_be_bytes());
            }
            raw
        };
        let cases: &[(&str, Vec<u8>)] = &[
            ("0", numeric(0, 0, 1, &[])),
            ("3.7", numeric(0, 0, 1, &[3, 7000])),
            ("4.5", numeric(0, 0, 1, &[4, 5000])),
            ("0.1", numeric(-1, 0, 1, &[1000])),
            ("5", numeric(0, 0, 1, &[5])),
            ("-2.25", numeric(0, 0x4000, 2, &[2, 2500])),
            ("123456789.0123", numeric(2, 0, 4, &[1, 2345, 6789, 123])),
            // Wider than a double's 53 bits: through the text.
            (
                "12345678901234567890.5",
                numeric(4, 0, 1, &[1234, 5678, 9012, 3456, 7890, 5000]),
            ),
            ("1e30", numeric(7, 0, 0, &[100])),
            ("0.000000000000000000000000001", numeric(-7, 0, 27, &[10])),
        ];
        for (text, raw) in cases {
            assert_eq!(
                numeric_to_f64(raw).unwrap(),
                text.parse::<f64>().unwrap(),
                "{text}"
            );
        }
        assert!(numeric_to_f64(&numeric(0, 0xC000, 0, &[]))
            .unwrap()
            .is_nan());
        assert_eq!(
            numeric_to_f64(&numeric(0, 0xD000, 0, &[])).unwrap(),
            f64::INFINITY
        );
        assert!(numeric_to_f64(&[0, 1, 0, 0]).is_err(), "short header");
        assert!(
            numeric_to_f64(&numeric(0, 0, 0, &[10_000])).is_err(),
            "digit over 9999"
        );
        assert!(
            numeric_to_f64(&numeric(0, 0x1234, 0, &[1])).is_err(),
            "unknown sign"
        );
        let mut long = numeric(0, 0, 0, &[1]);
        long.push(0);
        assert!(
            numeric_to_f64(&long).is_err(),
            "length not the digit count's"
        );
    }
}

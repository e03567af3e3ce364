//! A rating with one decimal (`numeric(2,1)`) in PostgreSQL's binary numeric format, so that
//! `COPY ... BINARY` can write the column without going through text or a decimal crate.

use std::error::Error;

use bytes::{BufMut, BytesMut};
use tokio_postgres::types::{IsNull, ToSql, Type, WrongType};

/// A rating from 0.0 to 5.0 held as tenths (0..=50).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rating(pub u8);

impl Rating {
    pub const MAX_TENTHS: u8 = 50;

    /// Parse "4.5", "4", "0.0"; at most one significant decimal, within 0.0..=5.0.
    pub fn parse(text: &str) -> Option<Rating> {
        let (whole, frac) = match text.split_once('.') {
            Some((w, f)) => (w, f),
            None => (text, ""),
        };
        if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if !frac.bytes().all(|b| b.is_ascii_digit()) || frac.bytes().skip(1).any(|b| b != b'0') {
            return None;
        }
        let whole: u32 = whole.parse().ok()?;
        let tenth = frac.bytes().next().map_or(0, |b| (b - b'0') as u32);
        let tenths = whole.checked_mul(10)? + tenth;
        (tenths <= Self::MAX_TENTHS as u32).then_some(Rating(tenths as u8))
    }
}

impl std::fmt::Display for Rating {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0 / 10, self.0 % 10)
    }
}

impl ToSql for Rating {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        // numeric binary: ndigits, weight (of the first base-10000 digit), sign, dscale, digits.
        let whole = (self.0 / 10) as i16;
        let frac = (self.0 % 10) as i16 * 1000;
        let (digits, count, weight) = match (whole, frac) {
            (0, 0) => ([0, 0], 0, 0),
            (0, f) => ([f, 0], 1, -1),
            (w, 0) => ([w, 0], 1, 0),
            (w, f) => ([w, f], 2, 0),
        };
        let digits = &digits[..count];
        out.put_i16(digits.len() as i16);
        out.put_i16(weight);
        out.put_u16(0); // positive
        out.put_u16(1); // one decimal shown
        for d in digits {
            out.put_i16(*d);
        }
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }

    fn to_sql_checked(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        if !Self::accepts(ty) {
            return Err(Box::new(WrongType::new::<Self>(ty.clone())));
        }
        self.to_sql(ty, out)
    }
}

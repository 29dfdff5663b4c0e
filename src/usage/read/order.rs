//! Paging and ordering requests: `page`, `per_page` and `order_by`, parsed and bounded.

use super::column::SortField;

/// Most records in one page.
pub const MAX_PER_PAGE: u32 = 250;
pub const DEFAULT_PER_PAGE: u32 = 50;
/// Highest page number accepted (the offset stays far inside `i64`).
pub const MAX_PAGE: u32 = i32::MAX as u32;
/// Longest accepted `order_by`, in characters.
pub const MAX_ORDER_BY_CHARS: usize = 40;

/// Pages of `per_page` rows that `total` rows fill (0 for none).
pub fn total_pages(total: i64, per_page: u32) -> i64 {
    let per_page = i64::from(per_page.max(1));
    (total + per_page - 1) / per_page
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortKey {
    pub field: SortField,
    pub descending: bool,
}

/// The ordering of a list: the caller's keys, then `id` so that ties never reorder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order(Vec<SortKey>);

impl Default for Order {
    fn default() -> Self {
        Order(vec![SortKey {
            field: SortField::Id,
            descending: true,
        }])
    }
}

impl Order {
    /// Parses `field:asc,field:desc` (a bare field is ascending). Empty means the default.
    pub fn parse(text: &str) -> Result<Order, String> {
        let chars = text.chars().count();
        if chars > MAX_ORDER_BY_CHARS {
            return Err(format!(
                "order_by is {chars} characters long; the limit is {MAX_ORDER_BY_CHARS}"
            ));
        }
        if text.trim().is_empty() {
            return Ok(Order::default());
        }
        let mut keys: Vec<SortKey> = Vec::new();
        for part in text.split(',') {
            let part = part.trim();
            let (name, direction) = part.split_once(':').unwrap_or((part, "asc"));
            let field = SortField::parse(name.trim()).ok_or_else(|| {
                format!(
                    "unknown field '{}'; expected one of {}",
                    name.trim(),
                    SortField::names()
                )
            })?;
            let descending = match direction.trim().to_ascii_lowercase().as_str() {
                "asc" => false,
                "desc" => true,
                other => return Err(format!("unknown direction '{other}'; expected asc or desc")),
            };
            if keys.iter().any(|k| k.field == field) {
                return Err(format!("field '{}' appears twice", name.trim()));
            }
            keys.push(SortKey { field, descending });
        }
        if !keys.iter().any(|k| k.field == SortField::Id) {
            keys.push(SortKey {
                field: SortField::Id,
                descending: false,
            });
        }
        Ok(Order(keys))
    }

    pub fn keys(&self) -> &[SortKey] {
        &self.0
    }
}

/// Parses a page number or page size: plain decimal digits within `min..=max`.
pub fn parse_bounded(text: &str, min: u32, max: u32) -> Result<u32, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'{text}' is not a whole number"));
    }
    match text.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("must be between {min} and {max}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_by_parses_and_breaks_ties_by_id() {
        let order = Order::parse("month:desc, Total_Amount").unwrap();
        let fields: Vec<_> = order
            .keys()
            .iter()
            .map(|k| (k.field, k.descending))
            .collect();
        assert_eq!(
            fields,
            vec![
                (SortField::Month, true),
                (SortField::TotalAmount, false),
                (SortField::Id, false)
            ]
        );
        assert_eq!(Order::parse("").unwrap(), Order::default());
        assert!(Order::parse("colour:asc")
            .unwrap_err()
            .starts_with("unknown field 'colour'"));
        assert!(Order::parse("month:up")
            .unwrap_err()
            .starts_with("unknown direction"));
        assert!(Order::parse("month,month:desc")
            .unwrap_err()
            .contains("twice"));
        assert!(Order::parse(&"a".repeat(41))
            .unwrap_err()
            .contains("limit is 40"));
    }

    #[test]
    fn numbers_are_plain_and_bounded() {
        assert_eq!(parse_bounded("250", 1, 250), Ok(250));
        for bad in [
            "0",
            "251",
            "-1",
            "+1",
            "1.0",
            "abc",
            "",
            " 1",
            "99999999999",
        ] {
            assert!(parse_bounded(bad, 1, 250).is_err(), "{bad}");
        }
    }
}

//! The filter language of `GET /express/usage/month` (openapi.yaml's `filter` parameter):
//!
//! ```text
//! expr       := or
//! or         := and ( "or" and )*
//! and        := unary ( "and" unary )*
//! unary      := "not" unary | "(" expr ")" | comparison
//! comparison := field op literal | field "in" "(" literal ( "," literal )* ")"
//! op         := eq | ne | gt | ge | lt | le
//! literal    := 'single-quoted, '' escapes a quote' | null
//! ```
//!
//! `parse` turns the text into a checked `Filter` (every literal already parsed for its field),
//! with errors that name the column; `Filter::to_sql` compiles it to a diesel expression whose
//! literals are all bind parameters. `Filter::account_ids` feeds the ownership rule (403).
//!
//! Semantics are two-valued: `direction ne 'INBOUND'` includes rows whose direction is null,
//! `eq null` / `ne null` test for null, and an ordering comparison with a null column is false.

use chrono::NaiveDate;
use diesel::dsl::not;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Nullable};
use uuid::Uuid;

use crate::db::schema::usage_monthly::dsl as um;
use crate::usage::model::{
    is_currency, AccountId, Direction, Month, Resolution, Unit, UsageType, MAX_ID_CHARS,
    MAX_TEXT_CHARS,
};

/// Longest accepted filter, in characters.
pub const MAX_CHARS: usize = 1600;
/// Deepest nesting of parentheses and `not`.
pub const MAX_DEPTH: usize = 32;
/// Most comparisons plus `in` items in one filter.
pub const MAX_TERMS: usize = 200;

#[diesel::declare_sql_function]
extern "SQL" {
    /// `coalesce(x, y)`: turns SQL's unknown into a definite answer.
    fn coalesce(x: Nullable<Bool>, y: Bool) -> Bool;
}

/// A filterable field of a monthly usage record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Id,
    AccountId,
    Month,
    ProductId,
    AggrProductId,
    Type,
    Currency,
    Direction,
    Resolution,
    Unit,
    WalletName,
}

impl Field {
    const ALL: [(&'static str, Field); 11] = [
        ("id", Field::Id),
        ("account_id", Field::AccountId),
        ("month", Field::Month),
        ("product_id", Field::ProductId),
        ("aggr_product_id", Field::AggrProductId),
        ("type", Field::Type),
        ("currency", Field::Currency),
        ("direction", Field::Direction),
        ("resolution", Field::Resolution),
        ("unit", Field::Unit),
        ("wallet_name", Field::WalletName),
    ];

    fn parse(name: &str) -> Option<Field> {
        Self::ALL
            .iter()
            .find(|(text, _)| text.eq_ignore_ascii_case(name))
            .map(|(_, field)| *field)
    }

    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, field)| *field == self)
            .map_or("?", |(text, _)| text)
    }

    fn nullable(self) -> bool {
        matches!(self, Field::Direction | Field::Resolution)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    fn parse(word: &str) -> Option<Op> {
        match word.to_ascii_lowercase().as_str() {
            "eq" => Some(Op::Eq),
            "ne" => Some(Op::Ne),
            "gt" => Some(Op::Gt),
            "ge" => Some(Op::Ge),
            "lt" => Some(Op::Lt),
            "le" => Some(Op::Le),
            _ => None,
        }
    }
}

/// A literal already checked against its field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Id(Uuid),
    Month(NaiveDate),
    Account(AccountId),
    Type(UsageType),
    Direction(Direction),
    Resolution(Resolution),
    Unit(Unit),
    /// A currency, product, aggregated product or wallet name.
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Or(Vec<Expr>),
    And(Vec<Expr>),
    Not(Box<Expr>),
    Compare(Field, Op, Value),
    In(Field, Vec<Value>),
}

/// A parsed, checked filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    expr: Expr,
    /// The filter's meaning, independent of its spelling (keyword case, spaces, parentheses):
    /// a digest of the checked syntax tree, computed once at parse. Totals are cached by it.
    meaning: [u8; 32],
    /// The account ids it names, sorted, once each (the ownership rule reads them).
    accounts: Vec<AccountId>,
}

/// Why a filter was refused, with the 1-based character column where it went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for FilterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.column == 0 {
            f.write_str(&self.message)
        } else {
            write!(f, "{} at column {}", self.message, self.column)
        }
    }
}

/// Parses a filter. `Ok(None)` for an empty (or blank) filter: no condition.
pub fn parse(text: &str) -> Result<Option<Filter>, FilterError> {
    let chars = text.chars().count();
    if chars > MAX_CHARS {
        return Err(FilterError {
            column: 0,
            message: format!("filter is {chars} characters long; the limit is {MAX_CHARS}"),
        });
    }
    let tokens = tokenize(text)?;
    if tokens.len() == 1 {
        return Ok(None);
    }
    let mut parser = Parser {
        tokens,
        at: 0,
        depth: 0,
        terms: 0,
    };
    let expr = parser.expr()?;
    let end = parser.peek();
    if end.kind != Kind::End {
        return Err(parser.unexpected(end));
    }
    let meaning = crate::usage::digest::sha256(&[format!("{expr:?}").as_bytes()]);
    let accounts = named_accounts(&expr);
    Ok(Some(Filter {
        expr,
        meaning,
        accounts,
    }))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Word(String),
    Str(String),
    Open,
    Close,
    Comma,
    End,
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    column: usize,
}

impl Token {
    fn describe(&self) -> String {
        match &self.kind {
            Kind::Word(word) => format!("'{word}'"),
            Kind::Str(text) => format!("string '{}'", text.replace('\'', "''")),
            Kind::Open => "'('".to_owned(),
            Kind::Close => "')'".to_owned(),
            Kind::Comma => "','".to_owned(),
            Kind::End => "end of filter".to_owned(),
        }
    }

    fn is_keyword(&self, keyword: &str) -> bool {
        matches!(&self.kind, Kind::Word(word) if word.eq_ignore_ascii_case(keyword))
    }
}

fn tokenize(text: &str) -> Result<Vec<Token>, FilterError> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().enumerate().peekable();
    while let Some((index, c)) = chars.next() {
        let column = index + 1;
        let kind = match c {
            c if c.is_whitespace() => continue,
            '(' => Kind::Open,
            ')' => Kind::Close,
            ',' => Kind::Comma,
            '\'' => {
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some((_, '\'')) => {
                            if chars.peek().map(|(_, c)| *c) == Some('\'') {
                                chars.next();
                                value.push('\'');
                            } else {
                                break;
                            }
                        }
                        Some((_, c)) => value.push(c),
                        None => {
                            return Err(FilterError {
                                column,
                                message: "unterminated string".to_owned(),
                            })
                        }
                    }
                }
                Kind::Str(value)
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut word = String::from(c);
                while let Some((_, c)) = chars.peek() {
                    if c.is_ascii_alphanumeric() || *c == '_' {
                        word.push(*c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                Kind::Word(word)
            }
            other => {
                return Err(FilterError {
                    column,
                    message: format!("unexpected character '{other}'"),
                })
            }
        };
        tokens.push(Token { kind, column });
    }
    tokens.push(Token {
        kind: Kind::End,
        column: text.chars().count() + 1,
    });
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    depth: usize,
    terms: usize,
}

impl Parser {
    fn peek(&self) -> Token {
        self.tokens[self.at.min(self.tokens.len() - 1)].clone()
    }

    fn next(&mut self) -> Token {
        let token = self.peek();
        if self.at < self.tokens.len() - 1 {
            self.at += 1;
        }
        token
    }

    fn unexpected(&self, token: Token) -> FilterError {
        FilterError {
            column: token.column,
            message: format!("unexpected {}", token.describe()),
        }
    }

    fn expect(&mut self, kind: Kind, what: &str) -> Result<Token, FilterError> {
        let token = self.next();
        if token.kind == kind {
            Ok(token)
        } else {
            Err(FilterError {
                column: token.column,
                message: format!("expected {what}, found {}", token.describe()),
            })
        }
    }

    fn expr(&mut self) -> Result<Expr, FilterError> {
        let mut terms = vec![self.and()?];
        while self.peek().is_keyword("or") {
            self.next();
            terms.push(self.and()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::Or(terms)
        })
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut terms = vec![self.unary()?];
        while self.peek().is_keyword("and") {
            self.next();
            terms.push(self.unary()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::And(terms)
        })
    }

    fn nest(&mut self, token: &Token) -> Result<(), FilterError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(FilterError {
                column: token.column,
                message: format!("filter nests deeper than {MAX_DEPTH} levels"),
            });
        }
        Ok(())
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        let token = self.peek();
        if token.is_keyword("not") {
            self.next();
            self.nest(&token)?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        if token.kind == Kind::Open {
            self.next();
            self.nest(&token)?;
            let inner = self.expr()?;
            self.expect(Kind::Close, "')'")?;
            self.depth -= 1;
            return Ok(inner);
        }
        self.comparison()
    }

    fn count_term(&mut self, token: &Token) -> Result<(), FilterError> {
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err(FilterError {
                column: token.column,
                message: format!("filter has more than {MAX_TERMS} comparisons and list items"),
            });
        }
        Ok(())
    }

    fn comparison(&mut self) -> Result<Expr, FilterError> {
        let token = self.next();
        let field = match &token.kind {
            Kind::Word(word) if !is_reserved(word) => {
                Field::parse(word).ok_or_else(|| FilterError {
                    column: token.column,
                    message: format!(
                        "unknown field '{word}'; expected one of {}",
                        Field::ALL.map(|(name, _)| name).join(", ")
                    ),
                })?
            }
            _ => {
                return Err(FilterError {
                    column: token.column,
                    message: format!("expected a field name, found {}", token.describe()),
                })
            }
        };
        let op_token = self.next();
        if op_token.is_keyword("in") {
            self.expect(Kind::Open, "'(' after 'in'")?;
            let mut values = Vec::new();
            loop {
                let literal = self.next();
                self.count_term(&literal)?;
                values.push(check_literal(field, Op::Eq, &literal)?);
                let separator = self.next();
                match separator.kind {
                    Kind::Comma => continue,
                    Kind::Close => break,
                    _ => {
                        return Err(FilterError {
                            column: separator.column,
                            message: format!("expected ',' or ')', found {}", separator.describe()),
                        })
                    }
                }
            }
            return Ok(Expr::In(field, values));
        }
        let op = match &op_token.kind {
            Kind::Word(word) => Op::parse(word),
            _ => None,
        }
        .ok_or_else(|| FilterError {
            column: op_token.column,
            message: format!(
                "expected an operator (eq, ne, gt, ge, lt, le, in) after '{}', found {}",
                field.name(),
                op_token.describe()
            ),
        })?;
        let literal = self.next();
        self.count_term(&literal)?;
        let value = check_literal(field, op, &literal)?;
        Ok(Expr::Compare(field, op, value))
    }
}

fn is_reserved(word: &str) -> bool {
    ["and", "or", "not", "in", "null"]
        .iter()
        .any(|k| k.eq_ignore_ascii_case(word))
}

/// Checks a literal against its field: a month is `YYYY-MM`, an enum a known value, and so on.
/// Long on purpose: one arm per field, read as a table of the language's literal rules.
fn check_literal(field: Field, op: Op, token: &Token) -> Result<Value, FilterError> {
    let fail = |message: String| FilterError {
        column: token.column,
        message,
    };
    let text = match &token.kind {
        Kind::Str(text) if text.contains('\0') => {
            return Err(fail("a value contains a NUL character".to_owned()))
        }
        Kind::Str(text) => text,
        Kind::Word(word) if word.eq_ignore_ascii_case("null") => {
            if !field.nullable() {
                return Err(fail(format!("'{}' is never null", field.name())));
            }
            if !matches!(op, Op::Eq | Op::Ne) {
                return Err(fail(
                    "null can only be compared with eq, ne or in".to_owned(),
                ));
            }
            return Ok(Value::Null);
        }
        _ => {
            return Err(fail(format!(
                "expected a quoted value or null, found {}",
                token.describe()
            )))
        }
    };
    let one_of = |name: &str, expected: String| {
        fail(format!(
            "unknown {name} '{text}'; expected one of {expected}"
        ))
    };
    match field {
        Field::Id => {
            if text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
                Uuid::parse_str(text)
                    .map(Value::Id)
                    .map_err(|_| fail(format!("invalid id '{text}'")))
            } else {
                Err(fail(format!(
                    "invalid id '{text}': expected 32 hexadecimal characters"
                )))
            }
        }
        Field::Month => Month::parse(text)
            .map(|m| Value::Month(m.first_day()))
            .ok_or_else(|| fail(format!("invalid month '{text}': expected YYYY-MM"))),
        Field::Type => UsageType::parse(text)
            .map(Value::Type)
            .ok_or_else(|| one_of("type", UsageType::expected())),
        Field::Direction => Direction::parse(text)
            .map(Value::Direction)
            .ok_or_else(|| one_of("direction", Direction::expected())),
        Field::Resolution => Resolution::parse(text)
            .map(Value::Resolution)
            .ok_or_else(|| one_of("resolution", Resolution::expected())),
        Field::Unit => Unit::parse(text)
            .map(Value::Unit)
            .ok_or_else(|| one_of("unit", Unit::expected())),
        Field::Currency => {
            if is_currency(text) {
                Ok(Value::Text(text.clone()))
            } else {
                Err(fail(format!(
                    "invalid currency '{text}': expected an ISO 4217 code"
                )))
            }
        }
        Field::AccountId | Field::ProductId | Field::AggrProductId | Field::WalletName => {
            let limit = if field == Field::WalletName {
                MAX_TEXT_CHARS
            } else {
                MAX_ID_CHARS
            };
            if text.chars().count() > limit {
                Err(fail(format!(
                    "'{}' value is longer than {limit} characters",
                    field.name()
                )))
            } else if field == Field::AccountId {
                Ok(Value::Account(AccountId::new(text.clone())))
            } else {
                Ok(Value::Text(text.clone()))
            }
        }
    }
}

type Predicate =
    Box<dyn BoxableExpression<crate::db::schema::usage_monthly::table, Pg, SqlType = Bool>>;

/// Builds the predicate for a non-null column and a non-null value.
macro_rules! compare {
    ($column:expr, $op:expr, $value:expr) => {{
        let value = $value;
        match $op {
            Op::Eq => Box::new($column.eq(value)) as Predicate,
            Op::Ne => Box::new($column.ne(value)),
            Op::Gt => Box::new($column.gt(value)),
            Op::Ge => Box::new($column.ge(value)),
            Op::Lt => Box::new($column.lt(value)),
            Op::Le => Box::new($column.le(value)),
        }
    }};
}

/// Builds the predicate for a nullable column, two-valued (see the module docs).
macro_rules! compare_nullable {
    ($column:expr, $op:expr, $value:expr) => {{
        match ($op, $value) {
            (Op::Eq, None) => Box::new($column.is_null()) as Predicate,
            (Op::Ne, None) => Box::new($column.is_not_null()),
            (Op::Eq, Some(value)) => Box::new($column.is_not_distinct_from(value)),
            (Op::Ne, Some(value)) => Box::new($column.is_distinct_from(value)),
            (Op::Gt, Some(value)) => Box::new(coalesce($column.gt(value), false)),
            (Op::Ge, Some(value)) => Box::new(coalesce($column.ge(value), false)),
            (Op::Lt, Some(value)) => Box::new(coalesce($column.lt(value), false)),
            (Op::Le, Some(value)) => Box::new(coalesce($column.le(value), false)),
            // check_literal admits null only with eq and ne.
            (_, None) => Box::new(diesel::dsl::sql::<Bool>("false")),
        }
    }};
}

fn compile_compare(field: Field, op: Op, value: &Value) -> Predicate {
    match (field, value) {
        (Field::Id, Value::Id(id)) => compare!(um::id, op, *id),
        (Field::Month, Value::Month(date)) => compare!(um::month, op, *date),
        (Field::AccountId, Value::Account(id)) => compare!(um::account_id, op, id.clone()),
        (Field::ProductId, Value::Text(t)) => compare!(um::product_id, op, t.clone()),
        (Field::AggrProductId, Value::Text(t)) => compare!(um::aggr_product_id, op, t.clone()),
        (Field::Type, Value::Type(t)) => compare!(um::usage_type, op, *t),
        (Field::Currency, Value::Text(t)) => compare!(um::currency, op, t.clone()),
        (Field::Unit, Value::Unit(u)) => compare!(um::unit, op, *u),
        (Field::WalletName, Value::Text(t)) => compare!(um::wallet_name, op, t.clone()),
        (Field::Direction, Value::Direction(d)) => compare_nullable!(um::direction, op, Some(*d)),
        (Field::Direction, _) => compare_nullable!(um::direction, op, None::<Direction>),
        (Field::Resolution, Value::Resolution(r)) => {
            compare_nullable!(um::resolution, op, Some(*r))
        }
        (Field::Resolution, _) => compare_nullable!(um::resolution, op, None::<Resolution>),
        // check_literal guarantees the value's kind matches the field.
        _ => Box::new(diesel::dsl::sql::<Bool>("false")),
    }
}

fn compile_in(field: Field, values: &[Value]) -> Predicate {
    values
        .iter()
        .map(|value| compile_compare(field, Op::Eq, value))
        .reduce(|a, b| Box::new(a.or(b)))
        .unwrap_or_else(|| Box::new(diesel::dsl::sql::<Bool>("false")))
}

fn compile(expr: &Expr) -> Predicate {
    match expr {
        Expr::Or(terms) => terms
            .iter()
            .map(compile)
            .reduce(|a, b| Box::new(a.or(b)))
            .unwrap_or_else(|| Box::new(diesel::dsl::sql::<Bool>("false"))),
        Expr::And(terms) => terms
            .iter()
            .map(compile)
            .reduce(|a, b| Box::new(a.and(b)))
            .unwrap_or_else(|| Box::new(diesel::dsl::sql::<Bool>("true"))),
        Expr::Not(inner) => Box::new(not(compile(inner))),
        Expr::Compare(field, op, value) => compile_compare(*field, *op, value),
        Expr::In(field, values) => compile_in(*field, values),
    }
}

impl Filter {
    /// The digest of what the filter means (see the field).
    pub fn meaning(&self) -> &[u8; 32] {
        &self.meaning
    }

    /// The filter as a diesel predicate over `usage_monthly`; every literal is a bind parameter.
    pub fn to_sql(&self) -> Predicate {
        compile(&self.expr)
    }

    /// Every account id the filter names, in any position (under `not`, in `in` lists, with any
    /// operator): the ownership rule refuses the request if one is not the caller's.
    pub fn account_ids(&self) -> &[AccountId] {
        &self.accounts
    }

    /// The checked expression tree.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }
}

/// The account ids an expression names, sorted, once each.
fn named_accounts(expr: &Expr) -> Vec<AccountId> {
    fn walk(expr: &Expr, out: &mut Vec<AccountId>) {
        match expr {
            Expr::Or(terms) | Expr::And(terms) => terms.iter().for_each(|t| walk(t, out)),
            Expr::Not(inner) => walk(inner, out),
            Expr::Compare(_, _, Value::Account(id)) => out.push(id.clone()),
            Expr::In(_, values) => values.iter().for_each(|v| {
                if let Value::Account(id) = v {
                    out.push(id.clone());
                }
            }),
            Expr::Compare(..) => {}
        }
    }
    let mut ids = Vec::new();
    walk(expr, &mut ids);
    ids.sort();
    ids.dedup();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text).expect_err(text).to_string()
    }

    #[test]
    fn empty_filter_is_no_condition() {
        assert_eq!(parse(""), Ok(None));
        assert_eq!(parse("   "), Ok(None));
    }

    #[test]
    fn precedence_and_binds_tighter_than_or() {
        let f = parse("month eq '2023-01' or month eq '2023-02' and type eq 'CALL'")
            .unwrap()
            .unwrap();
        assert!(
            matches!(f.expr(), Expr::Or(terms) if terms.len() == 2 && matches!(terms[1], Expr::And(_)))
        );
    }

    #[test]
    fn keywords_are_case_insensitive_and_quotes_escape() {
        let f = parse("NOT (wallet_name EQ 'it''s' OR direction In ('INBOUND', NULL))")
            .unwrap()
            .unwrap();
        let Expr::Not(inner) = f.expr() else { panic!() };
        let Expr::Or(terms) = inner.as_ref() else {
            panic!()
        };
        assert_eq!(
            terms[0],
            Expr::Compare(Field::WalletName, Op::Eq, Value::Text("it's".into()))
        );
        assert_eq!(
            terms[1],
            Expr::In(
                Field::Direction,
                vec![Value::Direction(Direction::Inbound), Value::Null]
            )
        );
    }

    #[test]
    fn errors_name_the_column() {
        assert_eq!(
            err("month eq '2023-01' and and"),
            "expected a field name, found 'and' at column 24"
        );
        assert_eq!(
            err("month eq '2023-13'"),
            "invalid month '2023-13': expected YYYY-MM at column 10"
        );
        assert_eq!(err("month eq '2023-01')"), "unexpected ')' at column 19");
        assert_eq!(
            err("type eq 'call'"),
            format!(
                "unknown type 'call'; expected one of {} at column 9",
                UsageType::expected()
            )
        );
        assert_eq!(err("month eq '2023"), "unterminated string at column 10");
        assert_eq!(
            err("month = '2023-01'"),
            "unexpected character '=' at column 7"
        );
        assert_eq!(
            err("colour eq 'red'").split(';').next().unwrap(),
            "unknown field 'colour'"
        );
        assert_eq!(
            err("account_id eq null"),
            "'account_id' is never null at column 15"
        );
        assert_eq!(
            err("direction gt null"),
            "null can only be compared with eq, ne or in at column 14"
        );
        assert_eq!(err("month like '2023-01'"), "expected an operator (eq, ne, gt, ge, lt, le, in) after 'month', found 'like' at column 7");
        assert_eq!(
            err("(month eq '2023-01'"),
            "expected ')', found end of filter at column 20"
        );
        assert_eq!(
            err("month in ()"),
            "expected a quoted value or null, found ')' at column 11"
        );
    }

    #[test]
    fn bounds_are_enforced() {
        let deep = format!("{}month eq '2023-01'{}", "(".repeat(33), ")".repeat(33));
        assert!(err(&deep).contains("deeper than 32"));
        let ok = format!("{}month eq '2023-01'{}", "(".repeat(32), ")".repeat(32));
        assert!(parse(&ok).is_ok());
        let nots = format!("{}month eq '2023-01'", "not ".repeat(33));
        assert!(err(&nots).contains("deeper than 32"));
        let many = vec!["product_id eq 'p'"; 201].join(" or ");
        assert!(many.len() <= MAX_CHARS * 3);
        let list = format!("product_id in ({})", vec!["'p'"; 201].join(","));
        assert!(err(&list).contains("more than 200"));
        let long = format!("product_id eq '{}'", "x".repeat(1600));
        assert!(err(&long).contains("limit is 1600"));
    }

    #[test]
    fn account_ids_are_collected_everywhere() {
        let f = parse("not (account_id eq 'a' or (month eq '2023-01' and account_id in ('b', 'a'))) or account_id ne 'c'")
            .unwrap()
            .unwrap();
        assert_eq!(f.account_ids(), vec!["a", "b", "c"]);
    }
}

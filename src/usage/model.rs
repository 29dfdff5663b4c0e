//! The domain's vocabulary: usage enumerations (exact spellings of the contract), `Month`, and
//! the checks that parse raw strings into them once, at the boundary.

use chrono::{Datelike, NaiveDate};
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::Text;

/// Declares a closed set of values (spelled as the contract spells them) with `ALL`, `as_str`
/// and `parse`. Each is stored
/// as its exact spelling (`text` columns, `ToSql`/`FromSql`) and serialized as it, so the type
/// goes from the parser to the database and back to JSON without turning into a loose string.
macro_rules! vocabulary {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash,
            diesel::expression::AsExpression, diesel::deserialize::FromSqlRow,
        )]
        #[diesel(sql_type = diesel::sql_types::Text)]
        pub enum $name { $($variant),+ }

        impl diesel::serialize::ToSql<diesel::sql_types::Text, diesel::pg::Pg> for $name {
            fn to_sql<'b>(
                &'b self,
                out: &mut diesel::serialize::Output<'b, '_, diesel::pg::Pg>,
            ) -> diesel::serialize::Result {
                <str as diesel::serialize::ToSql<diesel::sql_types::Text, diesel::pg::Pg>>::to_sql(
                    self.as_str(),
                    &mut out.reborrow(),
                )
            }
        }

        impl diesel::deserialize::FromSql<diesel::sql_types::Text, diesel::pg::Pg> for $name {
            fn from_sql(value: diesel::pg::PgValue<'_>) -> diesel::deserialize::Result<Self> {
                let text = <String as diesel::deserialize::FromSql<
                    diesel::sql_types::Text,
                    diesel::pg::Pg,
                >>::from_sql(value)?;
                Self::parse(&text)
                    .ok_or_else(|| format!("'{text}' is not a {}", stringify!($name)).into())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses the exact spelling of the contract.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }

            /// "A, B or C", for error messages.
            pub fn expected() -> String {
                let names: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                names.join(", ")
            }
        }
    };
}
pub(crate) use vocabulary;

vocabulary!(
    /// What kind of usage an aggregate counts.
    UsageType {
        Amd => "AMD", ApiRequest => "API_REQUEST", Call => "CALL", CallService => "CALL_SERVICE",
        CreditCommit => "CREDIT_COMMIT", Dialer => "DIALER", Message => "MESSAGE",
        Number => "NUMBER", ProductService => "PRODUCT_SERVICE", Recharge => "RECHARGE",
        SpeechTranscription => "SPEECH_TRANSCRIPTION",
        VoicemailTranscription => "VOICEMAIL_TRANSCRIPTION", Other => "OTHER",
    }
);

vocabulary!(
    /// The direction of an interaction, when it has one.
    Direction { Inbound => "INBOUND", Outbound => "OUTBOUND", Other => "OTHER" }
);

vocabulary!(
    /// How an interaction ended, when that applies.
    Resolution {
        Abandoned => "ABANDONED", Answered => "ANSWERED", Machine => "MACHINE",
        Missed => "MISSED", Voicemail => "VOICEMAIL", Other => "OTHER",
    }
);

vocabulary!(
    /// The unit of measure of `number_of_units`.
    Unit {
        Chars => "CHARS", Conversations => "CONVERSATIONS", Gb => "GB", Minutes => "MINUTES",
        Numbers => "NUMBERS", Pages => "PAGES", Requests => "REQUESTS", Seconds => "SECONDS",
        Segments => "SEGMENTS", Sessions => "SESSIONS", Other => "OTHER",
    }
);

/// A calendar month in UTC, stored as its first day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month(NaiveDate);

impl Month {
    /// Parses exactly `YYYY-MM` (four-digit year, month 01–12).
    pub fn parse(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() != 7 || bytes[4] != b'-' {
            return None;
        }
        let digits = |range: std::ops::Range<usize>| {
            bytes[range.clone()]
                .iter()
                .all(u8::is_ascii_digit)
                .then(|| text[range].parse::<u32>().ok())
                .flatten()
        };
        let year = digits(0..4)?;
        let month = digits(5..7)?;
        NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, 1)
            .filter(|_| year >= 1)
            .map(Month)
    }

    /// The UTC month of an instant.
    pub fn of(at: chrono::DateTime<chrono::Utc>) -> Self {
        Month::from_date(at.date_naive())
    }

    pub fn from_date(date: NaiveDate) -> Self {
        Month(date.with_day(1).unwrap_or(date))
    }

    pub fn first_day(self) -> NaiveDate {
        self.0
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.0.year(), self.0.month())
    }
}

/// Longest organization id (the database's limit).
pub const MAX_ORGANIZATION_CHARS: usize = 128;

vocabulary!(
    /// A category of the catalogue (DESIGN §2b), as an event may name it: every slug of
    /// migration 5's `usage_categories` but `totalprice`, which is every event's. The table holds
    /// the rest (parent, description, count unit); a test keeps the two lists equal.
    Category {
        Calls => "calls", CallsInbound => "calls-inbound",
        CallsInboundLocal => "calls-inbound-local",
        CallsInboundTollfree => "calls-inbound-tollfree", CallsOutbound => "calls-outbound",
        CallsClient => "calls-client", CallsSip => "calls-sip",
        Sms => "sms", SmsInbound => "sms-inbound",
        SmsInboundShortcode => "sms-inbound-shortcode",
        SmsInboundLongcode => "sms-inbound-longcode", SmsOutbound => "sms-outbound",
        SmsOutboundShortcode => "sms-outbound-shortcode",
        SmsOutboundLongcode => "sms-outbound-longcode",
        Phonenumbers => "phonenumbers", PhonenumbersTollfree => "phonenumbers-tollfree",
        PhonenumbersLocal => "phonenumbers-local",
        PhonenumbersPurchase => "phonenumbers-purchase",
        Shortcodes => "shortcodes", ShortcodesVanity => "shortcodes-vanity",
        ShortcodesRandom => "shortcodes-random",
        ShortcodesCustomerowned => "shortcodes-customerowned",
        Subscriptions => "subscriptions",
        SubscriptionsPhonenumbers => "subscriptions-phonenumbers",
        SubscriptionsPremium => "subscriptions-premium",
        Calleridlookups => "calleridlookups", Recordings => "recordings",
        Recordingstorage => "recordingstorage", Transcriptions => "transcriptions",
        Voicemail => "voicemail", VoicemailCompany => "voicemail-company",
        VoicemailUser => "voicemail-user", FaxInbound => "fax-inbound", Ivr => "ivr",
        Conference => "conference", Overuse => "overuse", Amd => "amd",
        ApiRequests => "api-requests", CallServices => "call-services",
        CreditCommits => "credit-commits", Dialer => "dialer",
        ProductServices => "product-services", Recharges => "recharges", Other => "other",
    }
);

/// Declares an identifier: a string that means one thing, stored as `text` (`ToSql`/`FromSql`),
/// serialized as the string, and compared with `&str` where a caller holds one.
macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, AsExpression, FromSqlRow)]
        #[diesel(sql_type = Text)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl ToSql<Text, Pg> for $name {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
                <str as ToSql<Text, Pg>>::to_sql(&self.0, &mut out.reborrow())
            }
        }

        impl FromSql<Text, Pg> for $name {
            fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
                Ok($name(<String as FromSql<Text, Pg>>::from_sql(value)?))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

identifier! {
    /// An organization's id, checked once where it enters (a token's claim, a file): 1 to 128
    /// characters, none of them a control character, so that the database can store and compare
    /// it. Every query the caller's request makes is scoped by one of these.
    OrganizationId
}

impl OrganizationId {
    pub fn parse(text: &str) -> Option<Self> {
        let fits = !text.is_empty()
            && text.chars().count() <= MAX_ORGANIZATION_CHARS
            && !text.chars().any(char::is_control);
        fits.then(|| OrganizationId(text.to_owned()))
    }
}

identifier! {
    /// An account's id as the caller or the database spells it. Where one enters (an event, a
    /// filter, a file) its parser bounds it to `MAX_ID_CHARS`; whether it is one of the caller's
    /// organization's accounts is the ownership rule's question, not the type's.
    AccountId
}

impl AccountId {
    pub fn new(text: impl Into<String>) -> Self {
        AccountId(text.into())
    }
}

impl From<&str> for AccountId {
    fn from(text: &str) -> Self {
        AccountId::new(text)
    }
}

/// Active ISO 4217 currency codes (plus the precious metals and XXX/XTS are left out: they are
/// never billed).
const ISO_4217: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD",
    "CAD", "CDF", "CHE", "CHF", "CHW", "CLF", "CLP", "CNY", "COP", "COU", "CRC", "CUC", "CUP",
    "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP",
    "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS",
    "INR", "IQD", "IRR", "ISK", "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW",
    "KWD", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD",
    "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MXV", "MYR", "MZN", "NAD", "NGN",
    "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "PYG", "QAR",
    "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SLL",
    "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY",
    "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "USN", "UYI", "UYU", "UYW", "UZS", "VED", "VES",
    "VND", "VUV", "WST", "XAF", "XCD", "XCG", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG", "ZWL",
];

/// Is `code` an active ISO 4217 currency code (upper case)?
pub fn is_currency(code: &str) -> bool {
    ISO_4217.binary_search(&code).is_ok()
}

/// Longest accepted identifier (account, product, event id, …), in characters.
pub const MAX_ID_CHARS: usize = 128;
/// Longest accepted free text (description, wallet name), in characters.
pub const MAX_TEXT_CHARS: usize = 512;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn month_parses_only_yyyy_mm() {
        assert_eq!(
            Month::parse("2023-08").map(|m| m.to_string()).as_deref(),
            Some("2023-08")
        );
        for bad in [
            "2023-13",
            "2023-00",
            "2023-8",
            "23-08",
            "2023/08",
            "2023-08-01",
            "0000-01",
            "+023-08",
            "2023-0a",
        ] {
            assert_eq!(Month::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn currency_list_is_sorted_and_checked() {
        assert!(ISO_4217.windows(2).all(|w| w[0] < w[1]));
        assert!(is_currency("USD") && is_currency("EUR"));
        assert!(!is_currency("usd") && !is_currency("XYZ") && !is_currency("US"));
    }

    #[test]
    fn vocabularies_round_trip() {
        for t in UsageType::ALL {
            assert_eq!(UsageType::parse(t.as_str()), Some(*t));
        }
        assert_eq!(UsageType::ALL.len(), 13);
        assert_eq!(Unit::ALL.len(), 11);
        assert_eq!(UsageType::parse("call"), None);
    }
}

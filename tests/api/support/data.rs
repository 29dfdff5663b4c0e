//! Small builders for test data.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use usage_api::usage::model::{Direction, Resolution, Unit, UsageType};
use usage_api::usage::write::event::NewEvent;

/// A direction by its contract spelling (None for none).
pub fn direction(text: Option<&str>) -> Option<Direction> {
    text.map(|t| Direction::parse(t).unwrap())
}

/// A resolution by its contract spelling (None for none).
pub fn resolution(text: Option<&str>) -> Option<Resolution> {
    text.map(|t| Resolution::parse(t).unwrap())
}

pub fn dec(text: &str) -> Decimal {
    text.parse().unwrap()
}

pub fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .with_timezone(&Utc)
}

/// An event with sensible defaults: one CALL minute at 1 USD on 2023-08-15.
pub fn event(event_id: &str, account_id: &str) -> NewEvent {
    NewEvent {
        event_id: event_id.to_owned(),
        account_id: account_id.into(),
        product_id: "TD-USG-TEL-IN-100100".to_owned(),
        aggr_product_id: "TD-USG-TEL-UG-102213".to_owned(),
        usage_type: UsageType::Call,
        description: "Inbound call".to_owned(),
        currency: "USD".to_owned(),
        direction: Some(Direction::Inbound),
        resolution: Some(Resolution::Answered),
        unit: Unit::Minutes,
        unit_price: dec("1"),
        wallet_name: "contact center".to_owned(),
        quantity: dec("1"),
        occurred_at: at("2023-08-15T12:00:00Z"),
        category: None,
    }
}

/// The catalogue's default category of an event (DESIGN §2b), written out independently of
/// the SQL function the product uses; the event's own category wins.
pub fn category_of(e: &NewEvent) -> &'static str {
    if let Some(category) = e.category {
        return category.as_str();
    }
    match (e.usage_type, e.direction) {
        (UsageType::Call, Some(Direction::Inbound)) => "calls-inbound",
        (UsageType::Call, Some(Direction::Outbound)) => "calls-outbound",
        (UsageType::Call, _) => "calls",
        (UsageType::Message, Some(Direction::Inbound)) => "sms-inbound",
        (UsageType::Message, Some(Direction::Outbound)) => "sms-outbound",
        (UsageType::Message, _) => "sms",
        (UsageType::Number, _) => "phonenumbers",
        (UsageType::SpeechTranscription | UsageType::VoicemailTranscription, _) => "transcriptions",
        (UsageType::Amd, _) => "amd",
        (UsageType::ApiRequest, _) => "api-requests",
        (UsageType::CallService, _) => "call-services",
        (UsageType::CreditCommit, _) => "credit-commits",
        (UsageType::Dialer, _) => "dialer",
        (UsageType::ProductService, _) => "product-services",
        (UsageType::Recharge, _) => "recharges",
        (UsageType::Other, _) => "other",
    }
}

/// A CSV body read with a real CSV parser: its header row and every record, as text.
pub fn csv_table(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    let rows = reader
        .records()
        .map(|row| row.unwrap().iter().map(str::to_owned).collect())
        .collect();
    (header, rows)
}

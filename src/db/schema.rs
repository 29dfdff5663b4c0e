// @generated automatically by Diesel CLI.

diesel::table! {
    accounts (id) {
        id -> Text,
        organization_id -> Text,
        name -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    idempotency_keys (organization_id, key) {
        organization_id -> Text,
        key -> Text,
        request_hash -> Text,
        response -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    organizations (id) {
        id -> Text,
        name -> Text,
        created_at -> Timestamptz,
        data_version -> Int8,
        rolled_up_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    rollup_dirty (organization_id, account_id, month) {
        account_id -> Text,
        month -> Date,
        organization_id -> Text,
        marked_at -> Timestamptz,
        version -> Int8,
        lease_owner -> Nullable<Uuid>,
        leased_until -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    signing_keys (name) {
        name -> Text,
        secret -> Bytea,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    usage_event_ids (organization_id, event_id) {
        event_id -> Text,
        account_id -> Text,
        occurred_at -> Timestamptz,
        organization_id -> Text,
    }
}

diesel::table! {
    usage_categories (slug) {
        slug -> Text,
        parent -> Nullable<Text>,
        position -> Int4,
        description -> Text,
        count_unit -> Text,
    }
}

diesel::table! {
    usage_category_tree (ancestor, descendant) {
        ancestor -> Text,
        descendant -> Text,
    }
}

diesel::table! {
    usage_daily (organization_id, account_id, day, category, currency, unit) {
        organization_id -> Text,
        account_id -> Text,
        day -> Date,
        category -> Text,
        currency -> Text,
        unit -> Text,
        event_count -> Int8,
        quantity -> Numeric,
        amount -> Numeric,
    }
}

diesel::table! {
    usage_daily_totals (organization_id, day, category, currency, unit) {
        organization_id -> Text,
        day -> Date,
        category -> Text,
        currency -> Text,
        unit -> Text,
        event_count -> Int8,
        quantity -> Numeric,
        amount -> Numeric,
    }
}

diesel::table! {
    usage_events (organization_id, occurred_at, seq) {
        seq -> Int8,
        event_id -> Text,
        account_id -> Text,
        product_id -> Text,
        aggr_product_id -> Text,
        usage_type -> Text,
        description -> Text,
        currency -> Text,
        direction -> Nullable<Text>,
        resolution -> Nullable<Text>,
        unit -> Text,
        unit_price -> Numeric,
        wallet_name -> Text,
        quantity -> Numeric,
        occurred_at -> Timestamptz,
        ingested_at -> Timestamptz,
        organization_id -> Text,
        category -> Nullable<Text>,
    }
}

diesel::table! {
    usage_monthly (organization_id, id) {
        id -> Uuid,
        organization_id -> Text,
        account_id -> Text,
        product_id -> Text,
        aggr_product_id -> Text,
        month -> Date,
        usage_type -> Text,
        description -> Text,
        currency -> Text,
        direction -> Nullable<Text>,
        resolution -> Nullable<Text>,
        unit -> Text,
        price -> Numeric,
        wallet_name -> Text,
        number_of_units -> Numeric,
        total_amount -> Numeric,
        event_count -> Int8,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    usage_monthly_totals (organization_id, month, category, currency, unit) {
        organization_id -> Text,
        month -> Date,
        category -> Text,
        currency -> Text,
        unit -> Text,
        event_count -> Int8,
        quantity -> Numeric,
        amount -> Numeric,
    }
}

diesel::table! {
    usage_trigger_attempts (organization_id, trigger_sid, period_start, attempt) {
        organization_id -> Text,
        trigger_sid -> Text,
        period_start -> Date,
        attempt -> Int4,
        started_at -> Timestamptz,
        duration_ms -> Int4,
        outcome -> Text,
        response_status -> Nullable<Int4>,
    }
}

diesel::table! {
    usage_trigger_firings (organization_id, trigger_sid, period_start) {
        organization_id -> Text,
        trigger_sid -> Text,
        period_start -> Date,
        fired_at -> Timestamptz,
        current_value -> Numeric,
        state -> Text,
        attempts -> Int4,
        next_attempt_at -> Timestamptz,
        finished_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    usage_triggers (organization_id, sid) {
        organization_id -> Text,
        sid -> Text,
        account_sid -> Text,
        account_id -> Nullable<Text>,
        api_version -> Text,
        friendly_name -> Nullable<Text>,
        callback_url -> Text,
        callback_method -> Text,
        recurring -> Nullable<Text>,
        trigger_by -> Text,
        price_unit -> Text,
        usage_category -> Text,
        trigger_value -> Numeric,
        secret -> Bytea,
        date_created -> Timestamptz,
        date_updated -> Timestamptz,
        date_fired -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    usage_voids (organization_id, event_id) {
        event_id -> Text,
        voided_event_id -> Text,
        account_id -> Text,
        month -> Date,
        created_at -> Timestamptz,
        organization_id -> Text,
    }
}

diesel::joinable!(accounts -> organizations (organization_id));
diesel::joinable!(usage_triggers -> usage_categories (usage_category));

diesel::allow_tables_to_appear_in_same_query!(
    accounts,
    idempotency_keys,
    organizations,
    rollup_dirty,
    signing_keys,
    usage_categories,
    usage_category_tree,
    usage_daily,
    usage_daily_totals,
    usage_event_ids,
    usage_events,
    usage_monthly,
    usage_monthly_totals,
    usage_trigger_attempts,
    usage_trigger_firings,
    usage_triggers,
    usage_voids,
);

//! The category catalogue (migration 5's `usage_categories`, in its documented order) and each
//! category's descendants. It is data the migrations own; a server reads it once.

use std::collections::HashMap;

use diesel::pg::Pg;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;

use crate::db::schema::{usage_categories, usage_category_tree};

/// The slug of the category every event belongs to (one record per currency: the total price).
pub const TOTAL_PRICE: &str = "totalprice";

/// One category, as `GET /express/usage/categories` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Serialize)]
#[diesel(table_name = usage_categories, check_for_backend(Pg))]
pub struct CategoryInfo {
    pub slug: String,
    pub parent: Option<String>,
    pub description: String,
    pub count_unit: String,
}

/// The whole catalogue: the categories in order, and the descendants of each (itself included).
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    pub categories: Vec<CategoryInfo>,
    descendants: HashMap<String, Vec<String>>,
}

impl Catalogue {
    /// Reads the catalogue.
    pub async fn load(conn: &mut AsyncPgConnection) -> QueryResult<Catalogue> {
        let categories: Vec<CategoryInfo> = usage_categories::table
            .order(usage_categories::position)
            .select(CategoryInfo::as_select())
            .load(conn)
            .await?;
        let pairs: Vec<(String, String)> = usage_category_tree::table
            .select((
                usage_category_tree::ancestor,
                usage_category_tree::descendant,
            ))
            .load(conn)
            .await?;
        let mut descendants: HashMap<String, Vec<String>> = HashMap::new();
        for (ancestor, descendant) in pairs {
            descendants.entry(ancestor).or_default().push(descendant);
        }
        for list in descendants.values_mut() {
            list.sort();
        }
        Ok(Catalogue {
            categories,
            descendants,
        })
    }

    /// The category called `slug`, if the catalogue has one.
    pub fn get(&self, slug: &str) -> Option<&CategoryInfo> {
        self.categories.iter().find(|c| c.slug == slug)
    }

    /// The categories whose events count towards `slug` (itself and all below it).
    pub fn descendants(&self, slug: &str) -> &[String] {
        self.descendants.get(slug).map_or(&[], Vec::as_slice)
    }
}

//! Common's read models (`kollus_common::model`) against the schema the migrations build: each
//! names every column of its table, with the type PostgreSQL stores it as, so a column added,
//! dropped or retyped by a migration fails here, not in a reader at run time.

use kollus_common::model::{SessionRow, UploadRow};
use tokio_postgres::types::Type;

use crate::helpers::*;

async fn columns_of(app: &TestApp, table: &str) -> Vec<(String, String)> {
    let mut columns: Vec<(String, String)> = app
        .db
        .client()
        .await
        .query(
            "SELECT column_name::text, udt_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1",
            &[&table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    columns.sort();
    columns
}

fn model(columns: &[&str], types: &[Type]) -> Vec<(String, String)> {
    assert_eq!(columns.len(), types.len(), "one type per column");
    let mut named: Vec<(String, String)> = columns
        .iter()
        .zip(types)
        .map(|(c, t)| (c.to_string(), t.name().to_owned()))
        .collect();
    named.sort();
    named
}

#[tokio::test]
async fn each_read_model_names_every_column_of_its_table_with_its_type() {
    let app = spawn_app().await;
    for (table, columns, types) in [
        (SessionRow::TABLE, SessionRow::COLUMNS, SessionRow::TYPES),
        (UploadRow::TABLE, UploadRow::COLUMNS, UploadRow::TYPES),
    ] {
        assert_eq!(
            model(columns, types),
            columns_of(&app, table).await,
            "{table}"
        );
    }
}

/// A statement may select a model's columns in another order, or after others: each is still
/// read from its own column (by name when not where `COLUMNS` puts it).
#[tokio::test]
async fn a_row_reads_each_column_by_its_name_in_any_order() {
    let app = spawn_app().await;
    let db = app.db.client().await;
    db.execute(
        "INSERT INTO uploads (upload_file_key, filename, title, duration_seconds, \
             transcoding_stage, first_event_at, last_event_at) \
         VALUES ('u-1', 'intro.mp4', 'Intro', 600, 21, now(), now())",
        &[],
    )
    .await
    .unwrap();
    let mut reversed: Vec<&str> = UploadRow::COLUMNS.to_vec();
    reversed.reverse();
    let in_order = db
        .query_one(
            &format!("SELECT {} FROM uploads", UploadRow::COLUMNS.join(", ")),
            &[],
        )
        .await
        .unwrap();
    let shuffled = db
        .query_one(
            &format!("SELECT 1 AS one, {} FROM uploads", reversed.join(", ")),
            &[],
        )
        .await
        .unwrap();
    let (a, b) = (
        UploadRow::from_row(&in_order).unwrap(),
        UploadRow::from_row(&shuffled).unwrap(),
    );
    assert_eq!(a, b);
    assert_eq!(
        (
            a.filename.as_deref(),
            a.title.as_deref(),
            a.duration_seconds
        ),
        (Some("intro.mp4"), Some("Intro"), Some(600))
    );
}

//! What every read model is made of: the row macro and the column readers.

use tokio_postgres::types::FromSql;
use tokio_postgres::{Error, Row};

/// Column `name`, expected at index `at` (where a statement built from `COLUMNS` puts it): read
/// there when it is, else found by name, so a statement that selects the columns in another order
/// or beside others still reads each from its own column, and one that lacks it is an error
/// naming it.
pub fn column<'a, T: FromSql<'a>>(row: &'a Row, at: usize, name: &str) -> Result<T, Error> {
    match row.columns().get(at) {
        Some(c) if c.name() == name => row.try_get(at),
        _ => row.try_get(name),
    }
}

/// `a.c1, a.c2, ...`: the columns qualified with a table alias, for a statement that joins.
pub fn qualified(alias: &str, columns: &[&str]) -> String {
    columns
        .iter()
        .map(|c| format!("{alias}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Declares a table's row struct: one field per column, in the order every statement built from
/// `COLUMNS` lists them, with the type COPY sends it as.
macro_rules! table_row {
    ($(#[$doc:meta])* $name:ident in $table:literal keyed by $keys:literal {
        $($(#[$fdoc:meta])* $col:ident: $ty:ty => $pg:ident,)*
    }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name {
            $($(#[$fdoc])* pub $col: $ty,)*
        }

        impl $name {
            pub const TABLE: &'static str = $table;
            pub const COLUMNS: &'static [&'static str] = &[$(stringify!($col),)*];
            /// The columns that identify a row: `COLUMNS` comes first with them.
            pub const KEYS: usize = $keys;
            /// Each column's type, as COPY sends it.
            pub const TYPES: &'static [tokio_postgres::types::Type] =
                &[$(tokio_postgres::types::Type::$pg,)*];

            /// Reads a row that selected `COLUMNS` (fastest first and in that order; by name
            /// otherwise, see [`column`](crate::model::table::column)).
            pub fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
                let mut at = 0..;
                Ok(Self {
                    $($col: crate::model::table::column(
                        row,
                        at.next().unwrap_or_default(),
                        stringify!($col),
                    )?,)*
                })
            }

            /// The values in `COLUMNS`'s order, for COPY.
            pub fn values(&self) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
                vec![$(&self.$col,)*]
            }
        }
    };
}
pub(super) use table_row;

//! One read model per table: a struct whose fields are named as the table's columns, the one
//! column list every statement that reads or writes the table is built from (`COLUMNS`), and a
//! reader ([`SessionRow::from_row`]) the workers, the read API, the console and the catalog
//! share. A column is named once, here; a service's own answer (JSON, a page) is built from the
//! row, not read again.

mod table;
mod uploads;
mod watch_sessions;

pub use table::{column, qualified};
pub use uploads::UploadRow;
pub use watch_sessions::SessionRow;

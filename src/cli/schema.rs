//! `schema`: the JSON Schema of the state files, for editors.

use super::Status;

/// Prints the schema; `schema/valhalla-ops.schema.json` is a committed copy.
pub fn run() -> anyhow::Result<Status> {
    super::print_out(&crate::desired::raw::json_schema())?;
    Ok(Status::Ok)
}

//! Request parameters several routes take: `?broker=` and the parsers of ids from paths, queries
//! and claims (an invalid id is 400 `invalid_id`).

use serde::Deserialize;
use utoipa::IntoParams;

use super::error::ApiError;
use crate::vault::{BrokerId, UserId};

/// `?broker=`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BrokerQuery {
    /// Only this broker.
    pub broker: Option<String>,
}

/// Parse a user id from a path or claim (400 when invalid).
pub fn user_id(id: String) -> Result<UserId, ApiError> {
    Ok(UserId::new(id)?)
}

/// Parse an optional broker id from a query.
pub fn broker_id(id: Option<String>) -> Result<Option<BrokerId>, ApiError> {
    Ok(id
        .filter(|b| !b.is_empty())
        .map(BrokerId::new)
        .transpose()?)
}

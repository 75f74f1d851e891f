use apothic_types::ErrorCode;

/// Why a filter or an offer was refused. Every variant names what was wrong so a decorator can
/// fail with one line that points at the user's own field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlacementError {
    /// The filter spec names an unknown field, uses an operator the field's type does not
    /// support, or gives a value of the wrong type.
    #[error("{field}: {message}")]
    InvalidFilter { field: String, message: String },
    /// An offer row (or a provider's JSON) could not be read.
    #[error("offer {index}: {message}")]
    InvalidOffer { index: usize, message: String },
}

impl PlacementError {
    pub fn code(&self) -> ErrorCode {
        match self {
            PlacementError::InvalidFilter { .. } => ErrorCode::PlacementInvalidFilter,
            PlacementError::InvalidOffer { .. } => ErrorCode::InvalidArgument,
        }
    }

    pub(crate) fn filter(field: impl Into<String>, message: impl Into<String>) -> Self {
        PlacementError::InvalidFilter {
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn offer(index: usize, message: impl Into<String>) -> Self {
        PlacementError::InvalidOffer {
            index,
            message: message.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, PlacementError>;

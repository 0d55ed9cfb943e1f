//! Model math for fedprofile: feature specification, models, local training,
//! aggregation and evaluation metrics, on `ndarray`. No transport types here.

pub mod features;

pub use features::{FeatureColumn, FeatureSpec};

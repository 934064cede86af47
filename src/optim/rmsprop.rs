//! PLACEHOLDER
/// p
pub struct RmsProp;

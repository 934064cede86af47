//! PLACEHOLDER
/// p
pub struct LrSchedule;

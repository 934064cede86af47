//! PLACEHOLDER (being written)
/// placeholder
pub struct Dropout;

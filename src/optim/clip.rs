//! PLACEHOLDER
/// p
pub fn clip_grad_norm() {}
/// p
pub fn clip_grad_value() {}

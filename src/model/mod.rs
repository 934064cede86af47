//! Models built from layers, and the losses they train on.

mod loss;
mod sequential;

pub use loss::Loss;
pub use sequential::Sequential;

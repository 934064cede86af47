//! Models built from layers, the losses and metrics they train on, and the Keras-style
//! training loop (`compile`, `fit`, `evaluate`, `predict`, callbacks).

mod callbacks;
mod checkpoint;
mod compile;
mod evaluate;
mod fit;
mod fit_distributed;
mod fit_options;
mod freeze;
mod history;
mod loss;
mod metrics;
mod sequential;
mod weights;
mod zoo;

pub use callbacks::{
    Callback, Control, EarlyStopping, LambdaCallback, MonitorMode, ReduceLROnPlateau,
};
pub use checkpoint::ModelCheckpoint;
pub use fit_options::{FitOptions, Verbose};
pub use history::{History, Logs};
pub use loss::{Loss, Targets};
pub use metrics::{argmax, confusion_matrix, Metric};
pub use sequential::Sequential;
pub use zoo::small_cnn;

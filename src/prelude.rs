//! The names a user needs: `use handgrad::prelude::*;`.

pub use crate::data::{Augment, Dataset, Split};
pub use crate::data::{BatchSource, ImageFolder};
pub use crate::error::{Error, Result};
pub use crate::init::{rng, Rng};
pub use crate::layers::{
    Activate, Dense, Dropout, Gelu, Layer, Mode, Relu, Sigmoid, Softmax, Tanh,
};
pub use crate::layers::{BatchNorm2d, Conv2d, GlobalAvgPool2d, MbConv, Padding, Relu6, Residual};
pub use crate::model::{
    Callback, Control, EarlyStopping, FitOptions, History, LambdaCallback, Loss, Metric,
    ReduceLROnPlateau, Sequential, Targets, Verbose,
};
pub use crate::optim::{
    clip_grad_norm, clip_grad_value, Adam, AdamW, LrSchedule, Optimizer, RmsProp, Sgd,
};
pub use crate::param::Param;
pub use crate::tensor::Tensor;
pub use crate::tokenizer::{
    BpeTokenizer, ChatTemplate, EncodeOptions, Gpt2Tokenizer, Message, StreamDecoder, Tokenizer,
};
pub use crate::vision::{EfficientNetConfig, EfficientNetLite};
pub use rand::SeedableRng;

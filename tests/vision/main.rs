//! Vision and model-import integration tests in one binary: photos and preprocessing, image
//! folders, frozen parameters, the PyTorch checkpoint reader.

#[path = "../core/common.rs"]
#[allow(dead_code)]
mod common;
mod freeze;
mod image_folder;
mod photos;
mod torch_pickle;

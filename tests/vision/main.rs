//! Integration tests of the vision and model-import work in one binary (one link): one module
//! per file.

#[path = "../core/common.rs"]
#[allow(dead_code)]
mod common;
mod torch_mutations;
mod torch_pickle;
mod torch_save;

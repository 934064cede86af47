//! The crate's integration tests in one binary (one link instead of one per file): the
//! original CNN, GPT, data, I/O and tokenizer suites, one module per file.

mod api_hardening;
mod batch_norm;
mod checkpoint_gpt;
mod checkpoint_sequential;
mod cnn_golden;
mod cnn_train;
#[allow(dead_code)]
mod common;
mod conv2d;
mod data_cifar;
mod data_idx;
mod data_image;
mod dense;
mod describe;
mod describe_page;
mod describe_parts;
mod determinism;
mod distributed;
mod dropout;
mod examples_cli;
mod fit;
mod flatten;
mod gemv;
mod generate;
mod golden_activations;
mod gpt_golden;
mod gpt_model;
mod gpt_pretrained;
mod gpt_quantized;
mod gradcheck_activations;
mod gradcheck_matmul;
mod hostile_inputs;
mod lm_extend;
mod losses;
mod optim_errors;
mod optim_golden;
mod optim_schedule;
mod pool;
mod relu_owned;
mod safetensors_mmap;
mod sequential;
mod tokenizer_gpt2;
mod transformer_golden;
mod transformer_gradcheck;
mod viz;
